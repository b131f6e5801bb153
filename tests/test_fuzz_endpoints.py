"""Property-based fuzzing of every inbound endpoint (hypothesis, bounded).

Properties: never a 5xx, every 4xx has a JSON body with `error` and `message`,
and nothing is ever applied (the app runs against a live API emulator with
dry run off, and the emulator must record no successful write)."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from remediation.app import create_app
from remediation.cli import demo_dir
from remediation.runtime import build_pipeline, close_pipeline
from remediation.settings import HTTPSettings, KubeSettings, Secret, Settings

from tests.kube_emulator import KubeEmulator
from tests.plugins.app import write_kubeconfig

# header values a client can send at all (no CR, LF, VT, FF)
HEADER_CHARS = string.ascii_letters + string.digits + string.punctuation + " %\t"
TOKEN = "fuzz-bearer"
SPLUNK = "fuzz-splunk"
HOSTILE = st.sampled_from(["../kube-system", "kube-system/x", "a/b", "", " ", "\x00", "é",
                           "A" * 300, "vllm\nx", "${jndi:ldap://x}", "..", "-x-", "x" * 64])
TEXT = st.one_of(st.text(max_size=40), HOSTILE)
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                       | TEXT, lambda c: st.lists(c, max_size=4)
                       | st.dictionaries(TEXT, c, max_size=4), max_leaves=12)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    emu = KubeEmulator().start()
    emu.load(demo_dir() / "cluster.yaml")
    kc = write_kubeconfig(tmp_path_factory.mktemp("kc") / "kubeconfig", emu.url)
    s = Settings(dry_run=False, http=HTTPSettings(alertmanager_bearer=Secret(TOKEN),
                                                  splunk_token=Secret(SPLUNK),
                                                  max_body_bytes=64 * 1024),
                 kube=KubeSettings(kubeconfig=str(kc), timeout=2))
    pipeline = build_pipeline(s)
    app = create_app(s, pipeline)
    yield app.test_client(), emu
    close_pipeline(pipeline)
    emu.close()


def check(resp: Any, emu: KubeEmulator) -> None:
    assert resp.status_code < 500, resp.get_data(as_text=True)[:500]
    if 400 <= resp.status_code < 500:
        body = resp.get_json()
        assert body["error"] and body["message"]
    applied = [r for r in emu.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")
               and r.status < 300 and r.resource != "events"]
    assert applied == []


def alert(labels: dict, **over: Any) -> dict:
    a = {"status": "firing", "labels": labels, "annotations": {}, "startsAt":
         "2026-11-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "f"}
    a.update(over)
    return a


FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(body=st.one_of(st.binary(max_size=300), JSONISH.map(lambda v: json.dumps(v).encode())),
       ctype=st.sampled_from(["application/cloudevents+json", "application/json",
                              "application/cloudevents-batch+json", "text/plain", "",
                              "application/cloudevents+json; charset=latin-1"]),
       ce=st.dictionaries(st.sampled_from(["ce-id", "ce-source", "ce-type", "ce-specversion",
                                           "ce-namespace", "ce-remediation", "ce-Bad_Name"]),
                          st.text(alphabet=HEADER_CHARS, max_size=30), max_size=5))
def test_cloudevents_endpoint_never_fails_or_acts(client, body, ctype, ce):
    c, emu = client
    check(c.post("/", data=body, headers={"Content-Type": ctype, **ce}), emu)


@FUZZ
@given(ns=TEXT, pod=TEXT, status=st.sampled_from(["firing", "resolved", "weird", 3]),
       version=st.sampled_from(["4", "3", 4, None]), extra=JSONISH)
def test_alertmanager_webhook_never_fails_or_acts(client, ns, pod, status, version, extra):
    c, emu = client
    doc = {"version": version, "status": "firing", "receiver": "r", "groupKey": "g",
           "alerts": [alert({"alertname": "VLLMEngineHung", "namespace": ns, "pod": pod},
                            status=status), extra]}
    check(c.post("/webhooks/alertmanager", json=doc,
                 headers={"Authorization": f"Bearer {TOKEN}"}), emu)


@FUZZ
@given(result=st.dictionaries(TEXT, st.one_of(TEXT, st.lists(TEXT, max_size=3), JSONISH),
                              max_size=5),
       sid=st.one_of(TEXT, st.integers(), st.none()), name=st.one_of(TEXT, st.none()))
def test_splunk_webhook_never_fails_or_acts(client, result, sid, name):
    c, emu = client
    doc = {"result": result, "sid": sid, "search_name": name, "app": "search"}
    check(c.post(f"/webhooks/splunk/{SPLUNK}", json=doc), emu)
