"""The webhook adapter forwarding to the Broker (K_SINK), and dead letters:
store, list, replay. Real HTTP both ways."""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from remediation.cli import demo_dir
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import event_dict
from remediation.settings import HTTPSettings, KubeSettings, Secret, SenderAuthSettings, Settings

from tests.plugins.app import BEARER

AUTH = {"Authorization": f"Bearer {BEARER}"}
EVENTS = demo_dir() / "events"
SNAPSHOT = demo_dir() / "cluster.yaml"


def group(n: int) -> dict[str, Any]:
    doc = json.loads((EVENTS / "01-vllm-hung.json").read_text())
    one = doc["alerts"][0]
    doc["alerts"] = []
    for i in range(n):
        a = copy.deepcopy(one)
        a["fingerprint"] = f"{i:016x}"
        doc["alerts"].append(a)
    return doc


def adapter(serve_app: Any, broker: Any, timeout: float = 1.0) -> Any:
    settings = Settings(http=HTTPSettings(alertmanager_bearer=Secret(BEARER), sink=broker.url,
                                          sink_timeout=timeout),
                        kube=KubeSettings(snapshot=str(SNAPSHOT)))
    return serve_app(settings)


def test_adapter_forwards_binary_cloudevents_to_the_broker(serve_app, broker):
    app = adapter(serve_app, broker)
    resp = app.post("/webhooks/alertmanager", json=group(3), headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json()["forwarded"] == 3
    assert len(broker.received) == 3
    for ev in broker.received:
        assert ev["ce-type"] == "io.inferenceremediation.alert.firing.v1"
        assert ev["ce-remediation"] == "restart-engine"
        assert json.loads(ev["body"])["alert"]["labels"]["alertname"] == "VLLMEngineHung"
    assert len({ev["ce-id"] for ev in broker.received}) == 3


def test_broker_refusing_or_failing_makes_alertmanager_retry(serve_app, broker):
    app = adapter(serve_app, broker)
    broker.mode = "refuse"
    resp = app.post("/webhooks/alertmanager", json=group(2), headers=AUTH)
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert broker.attempts == 2  # a 400 is not retried by us
    broker.mode, broker.attempts = "fail", 0
    resp = app.post("/webhooks/alertmanager", json=group(1), headers=AUTH)
    assert resp.status_code == 503
    assert broker.attempts == 3  # 5xx retried with backoff, then given up
    assert broker.received == []


def test_broker_hanging_times_out_into_a_503(serve_app, broker):
    app = adapter(serve_app, broker, timeout=0.3)
    broker.mode, broker.hang_seconds = "hang", 2.0
    resp = app.post("/webhooks/alertmanager", json=group(1), headers=AUTH)
    assert resp.status_code == 503
    assert resp.json()["failed"][0]["status"] == 0  # no answer


def test_a_large_group_is_forwarded_whole(serve_app, broker):
    app = adapter(serve_app, broker)
    resp = app.post("/webhooks/alertmanager", json=group(2000), headers=AUTH)
    assert resp.status_code == 200, resp.json().get("failed")
    assert resp.json()["forwarded"] == 2000
    assert len({ev["ce-id"] for ev in broker.received}) == 2000


def dead_letter(reason: str = "upstream failed") -> dict[str, Any]:
    doc = json.loads((EVENTS / "01-vllm-hung.json").read_text())
    (event,) = alertmanager_to_events(doc, routes=lambda n, _l: "restart-engine")
    d = event_dict(event)
    d["knativeerrordest"] = "http://restart-engine.remediation.svc.cluster.local"
    d["knativeerrorcode"] = "503"
    d["knativeerrordata"] = base64.b64encode(
        json.dumps({"error": "temporarily-unavailable", "message": reason}).encode()).decode()
    return d


def test_dead_letters_are_stored_listed_and_replayed(serve_app, broker, tmp_path: Path):
    store = tmp_path / "dead-letters.sqlite"
    settings = Settings(functions=("dead-letter",),
                        http=HTTPSettings(dead_letter_store=str(store)),
                        sender_auth=SenderAuthSettings(allow_unauthenticated=True),
                        kube=KubeSettings(snapshot=str(SNAPSHOT)))
    app = serve_app(settings)
    letter = dead_letter("policy unavailable: OPA timed out")
    resp = app.post("/", content=json.dumps(letter),
                    headers={"Content-Type": "application/cloudevents+json"})
    assert resp.status_code == 202, resp.text
    assert "ce-type" not in resp.headers  # not a reply: nothing goes back to the broker
    # the same dead letter again counts a second delivery, not a second row
    app.post("/", content=json.dumps(letter),
             headers={"Content-Type": "application/cloudevents+json"})

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VAULT_", "OPA_", "REMEDIATION_", "KUBECONFIG"))}
    run = lambda *a: subprocess.run([sys.executable, "-m", "remediation.cli", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=120, env=env)
    listed = run("dlq", "list", "--store", str(store), "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["error_code"] == "503" and row["deliveries"] == 2
    assert "OPA timed out" in row["error_data"]  # base64 decoded
    assert row["id"] == letter["id"]

    resent = run("replay", "--from-dlq", "--store", str(store), "--sink", broker.url)
    assert resent.returncode == 0, resent.stderr
    (ev,) = broker.received
    assert ev["ce-id"] == letter["id"]
    assert not any(k.startswith("ce-knativeerror") for k in ev)

    local = run("replay", "--from-dlq", str(row["seq"]), "--store", str(store),
                "--cluster", str(SNAPSHOT), "--json")
    assert local.returncode == 0, local.stderr
    assert json.loads(local.stdout)["status"] == "planned"


def test_dlq_without_a_store_is_a_clear_error(tmp_path: Path):
    r = subprocess.run([sys.executable, "-m", "remediation.cli", "dlq", "list", "--store",
                        str(tmp_path / "missing.sqlite")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "no dead-letter store" in r.stderr


def test_the_adapter_forwards_the_good_alerts_of_a_group_and_reports_the_bad_one(serve_app,
                                                                                 broker):
    app = adapter(serve_app, broker)
    doc = group(3)
    doc["alerts"][1]["labels"]["namespace"] = "../kube-system"
    doc["alerts"][2]["labels"]["alertname"] = "TeamXWedged"  # routed by its label alone
    doc["alerts"][2]["labels"]["remediation"] = "restart-engine"
    resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["received"], body["forwarded"]) == (3, 2)
    (rejected,) = body["rejected"]
    assert "alerts[1].labels.namespace" in rejected["reasons"][0]
    assert [ev["ce-remediation"] for ev in broker.received] == ["restart-engine"] * 2
    assert "../kube-system" not in json.dumps(broker.received)
