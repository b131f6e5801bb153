"""End to end: Alertmanager payloads and CloudEvents over real HTTP to the
app, the real kubernetes client to the API emulator, the embedded Rego
policy. Assertions are on the emulator's objects and the reply events."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import time
from typing import Any

import pytest

from remediation.actions.base import INCIDENT_ANNOTATION, RESTARTED_AT_ANNOTATION
from remediation.cli import demo_dir
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import to_batch, to_binary, to_structured
from remediation.model import TYPE_OUTCOME
from remediation.settings import LedgerSettings, PolicySettings

from tests.plugins.app import BEARER, SPLUNK_TOKEN

EVENTS = demo_dir() / "events"
NS, DEPLOY = "llm-serving", "vllm-llama-7b"
AUTH = {"Authorization": f"Bearer {BEARER}"}


def payload(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def restarted_at(emu: Any, name: str = DEPLOY, kind: str = "deployments") -> str | None:
    obj = emu.get(kind, NS, name)
    ann = obj["spec"]["template"].get("metadata", {}).get("annotations") or {}
    return ann.get(RESTARTED_AT_ANNOTATION)


def writes(emu: Any) -> list[Any]:
    return [r for r in emu.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")
            and r.resource != "events"]


def reply_data(resp: Any) -> dict[str, Any]:
    assert resp.headers["ce-type"] == TYPE_OUTCOME
    return resp.json()


def test_alertmanager_alert_restarts_the_engine_and_records_an_event(fleet, make_settings,
                                                                     serve_app):
    app = serve_app(make_settings())
    resp = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=AUTH)
    assert resp.status_code == 200, resp.text
    (outcome,) = resp.json()["outcomes"]
    assert outcome["status"] == "applied"
    assert outcome["target"] == {"kind": "Deployment", "namespace": NS, "name": DEPLOY}
    assert restarted_at(fleet) is not None
    ann = fleet.get("deployments", NS, DEPLOY)["spec"]["template"]["metadata"]["annotations"]
    assert ann[INCIDENT_ANNOTATION]
    events = fleet.list("events", NS)
    assert any(e["involvedObject"]["name"] == DEPLOY and e["reason"] == "RemediationApplied"
               for e in events)


def test_binary_cloudevent_gets_an_outcome_reply_with_correlation(fleet, make_settings,
                                                                  serve_app):
    app = serve_app(make_settings())
    (event,) = alertmanager_to_events(payload("01-vllm-hung"),
                                      routes=lambda n, _l: "restart-engine")
    headers, body = to_binary(event)
    headers["ce-traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    resp = app.post("/", headers=headers, content=body)
    assert resp.status_code == 200, resp.text
    data = reply_data(resp)
    assert data["status"] == "applied"
    assert data["event_id"] == event.get_id()
    assert resp.headers["ce-traceparent"] == headers["ce-traceparent"]
    assert resp.headers["ce-remediationstatus"] == "applied"
    assert data["actions"] == [{"verb": "patch", "kind": "Deployment", "namespace": NS,
                                "name": DEPLOY}]
    assert restarted_at(fleet) is not None


def test_structured_cloudevent(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    doc = payload("06-cloudevent-kserve-hung")
    resp = app.post("/", content=json.dumps(doc),
                    headers={"Content-Type": "application/cloudevents+json"})
    assert resp.status_code == 200, resp.text
    assert reply_data(resp)["status"] == "applied"
    assert restarted_at(fleet, "llama-70b-predictor") is not None


def test_batched_cloudevents_each_get_an_outcome(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    events = (alertmanager_to_events(payload("01-vllm-hung"))
              + alertmanager_to_events(payload("04-vllm-hung-protected-namespace")))
    headers, body = to_batch(events)
    resp = app.post("/", headers=headers, content=body)
    assert resp.status_code == 200, resp.text
    statuses = [e["data"]["status"] for e in resp.json()]
    assert statuses == ["applied", "denied"]
    assert restarted_at(fleet) is not None
    shared = fleet.get("deployments", "openshift-ai-platform", "vllm-shared")
    assert RESTARTED_AT_ANNOTATION not in (
        shared["spec"]["template"].get("metadata", {}).get("annotations") or {})


def test_same_alert_twice_acts_once(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    first = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=AUTH)
    stamp = restarted_at(fleet)
    second = app.post("/webhooks/alertmanager", json=payload("02-vllm-hung-resent"),
                      headers=AUTH)
    assert first.json()["outcomes"][0]["status"] == "applied"
    assert second.json()["outcomes"][0]["status"] == "duplicate"
    assert restarted_at(fleet) == stamp
    assert len([w for w in writes(fleet) if w.resource == "deployments"]) == 1


def test_denied_by_policy_changes_nothing(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    before = fleet.get("deployments", "openshift-ai-platform", "vllm-shared")
    resp = app.post("/webhooks/alertmanager", json=payload("04-vllm-hung-protected-namespace"),
                    headers=AUTH)
    (outcome,) = resp.json()["outcomes"]
    assert outcome["status"] == "denied"
    assert any("protected" in r for r in outcome["reasons"]), outcome["reasons"]
    assert fleet.get("deployments", "openshift-ai-platform", "vllm-shared") == before
    assert writes(fleet) == []


def test_server_side_dry_run_plans_without_changing(fleet, make_settings, serve_app):
    app = serve_app(make_settings(dry_run=True))
    resp = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=AUTH)
    (outcome,) = resp.json()["outcomes"]
    assert outcome["status"] == "planned"
    assert restarted_at(fleet) is None
    patches = [w for w in writes(fleet) if w.resource == "deployments"]
    assert patches and all(w.query.get("dryRun") == "All" for w in patches)


@pytest.mark.parametrize("headers, content", [
    ({"Content-Type": "application/cloudevents+json"}, b"{not json"),
    ({"Content-Type": "application/cloudevents+json"}, b'{"specversion":"1.0","id":"x"}'),
    ({"Content-Type": "application/json", "ce-specversion": "0.3", "ce-id": "1",
      "ce-source": "/x", "ce-type": "io.inferenceremediation.alert.firing.v1"}, b"{}"),
    ({"Content-Type": "application/cloudevents-batch+json"}, b"[]"),
    ({"Content-Type": "application/json"}, b'{"hello": "world"}'),
])
def test_malformed_cloudevents_get_400_and_no_action(fleet, make_settings, serve_app, headers,
                                                     content):
    app = serve_app(make_settings())
    resp = app.post("/", headers=headers, content=content)
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"] and body["message"]
    assert writes(fleet) == []


def test_hostile_labels_are_rejected_without_action(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    doc = payload("01-vllm-hung")
    doc["alerts"][0]["labels"]["namespace"] = "../kube-system"
    resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    # judged alert by alert: the hostile one is rejected with its reason; the
    # group is answered 200 (a 4xx would only make Alertmanager re-send it)
    assert resp.status_code == 200
    [outcome] = resp.json()["outcomes"]
    assert outcome["status"] == "rejected"
    assert "alerts[0].labels.namespace" in outcome["reasons"][0]
    event = payload("06-cloudevent-kserve-hung")
    event["data"]["alert"]["labels"]["inferenceservice"] = "a/b"
    resp = app.post("/", content=json.dumps(event),
                    headers={"Content-Type": "application/cloudevents+json"})
    assert resp.status_code == 400
    assert writes(fleet) == []


def test_oversized_body_gets_413(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    big = json.dumps({"pad": "x" * 300_000}).encode()
    resp = app.post("/webhooks/alertmanager", content=big,
                    headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 413
    resp = app.post("/", content=big, headers={"Content-Type": "application/cloudevents+json"})
    assert resp.status_code == 413
    assert writes(fleet) == []


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic !!!"},
    {"Authorization": "Basic " + base64.b64encode(b"alertmanager:wrong").decode()},
])
def test_alertmanager_webhook_needs_credentials(fleet, make_settings, serve_app, headers):
    app = serve_app(make_settings())
    resp = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=headers)
    assert resp.status_code == 401
    assert writes(fleet) == []


def test_alertmanager_basic_auth_works(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    basic = "Basic " + base64.b64encode(b"alertmanager:basic-pw").decode()
    resp = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"),
                    headers={"Authorization": basic})
    assert resp.status_code == 200
    assert resp.json()["outcomes"][0]["status"] == "applied"


def test_splunk_webhook_token_in_url(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    doc = payload("05-splunk-nccl-watchdog")
    assert app.post("/webhooks/splunk/wrong", json=doc).status_code == 401
    assert app.post("/webhooks/splunk", json=doc).status_code == 401
    resp = app.post(f"/webhooks/splunk/{SPLUNK_TOKEN}", json=doc)
    assert resp.status_code == 200, resp.text
    (outcome,) = resp.json()["outcomes"]
    assert outcome["status"] == "applied"
    assert outcome["target"]["kind"] == "StatefulSet"
    assert restarted_at(fleet, "vllm-llama-405b-tp", "statefulsets") is not None


def test_api_failure_answers_retry_and_redelivery_acts_once(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    fleet.fail(status=500, times=None, method="PATCH")
    resp = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=AUTH)
    assert resp.status_code == 503
    assert resp.headers.get("Retry-After")
    assert restarted_at(fleet) is None
    fleet.clear_faults()
    again = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=AUTH)
    assert again.status_code == 200
    assert again.json()["outcomes"][0]["status"] == "applied"
    third = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=AUTH)
    assert third.json()["outcomes"][0]["status"] == "duplicate"
    ok_patches = [w for w in writes(fleet) if w.resource == "deployments" and w.status < 300]
    assert len(ok_patches) == 1


def test_api_slow_past_timeout_answers_retry_and_never_restarts_twice(fleet, make_settings,
                                                                       serve_app):
    app = serve_app(make_settings())
    fleet.delay(3.0, times=1, method="PATCH")  # the client gives up at 2 s; the write lands
    resp = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=AUTH)
    assert resp.status_code == 503
    import time

    deadline = time.monotonic() + 5
    while restarted_at(fleet) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    stamp = restarted_at(fleet)
    assert stamp is not None  # timed out for us, applied for the API server
    again = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=AUTH)
    assert again.status_code == 200
    (outcome,) = again.json()["outcomes"]
    assert outcome["status"] == "duplicate"
    assert "already restarted" in " ".join(outcome["reasons"])
    assert restarted_at(fleet) == stamp


def test_api_down_answers_retry(kube_emulator, make_settings, serve_app):
    kube_emulator.load(demo_dir() / "cluster.yaml")
    app = serve_app(make_settings())
    kube_emulator.close()
    (event,) = alertmanager_to_events(payload("01-vllm-hung"))
    headers, body = to_structured(event)
    resp = app.post("/", headers=headers, content=body)
    assert resp.status_code == 503
    assert resp.json()["error"] == "temporarily-unavailable"


def test_skipped_and_resolved_get_200_replies(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    for name, status in [("03-tgi-hung-paused", "skipped"), ("07-vllm-hung-resolved", "skipped"),
                         ("08-unrouted-alert", "skipped")]:
        resp = app.post("/webhooks/alertmanager", json=payload(name), headers=AUTH)
        assert resp.status_code == 200
        assert resp.json()["outcomes"][0]["status"] == status, name
    assert writes(fleet) == []


def test_health_endpoints(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    assert app.client.get(app.url + "/health/liveness").status_code == 200
    assert app.client.get(app.url + "/health/readiness").status_code == 200
    assert app.client.get(app.url + "/nope").status_code == 404
    assert app.client.get(app.url + "/").status_code == 405


def test_a_storm_that_outlasts_the_target_window_still_acts_once_per_target(
        fleet, make_settings, serve_app, tmp_path):
    """One notification, one action per target, however long it takes to
    answer: here every read of the clock is 100 s later, so the batch lasts
    far past the 300 s target window (the 1,000-node bench's 20,000-alert
    storm took 714 s and restarted its targets 2.6 times each). No policy
    limit stands in for the batch: the per-target ones are lifted."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"remediation_config": {
        "limits": {"cluster_max_per_window": 10**6},
        "actions": {"rollout-restart": {"max_per_window": 10**6,
                                        "max_per_target_in_window": 10**6}}}}))
    ticks = itertools.count(time.time(), 100.0)
    app = serve_app(make_settings(policy=PolicySettings(data_file=str(policy))),
                    clock=lambda: next(ticks))
    doc = payload("01-vllm-hung")
    one = doc["alerts"][0]
    doc["alerts"] = []
    for i in range(30):
        a = copy.deepcopy(one)
        a["labels"] = {"alertname": "VLLMEngineHung", "namespace": NS,
                       "deployment": "vllm-llama-7b", "replica": str(i)}
        a["fingerprint"] = f"{i:016x}"
        doc["alerts"].append(a)
    resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    assert resp.status_code == 200
    statuses = [o["status"] for o in resp.json()["outcomes"]]
    assert statuses.count("applied") == 1 and statuses.count("duplicate") == 29, statuses
    patched = [w for w in writes(fleet) if w.method == "PATCH" and w.status < 300]
    assert [w.name for w in patched] == ["vllm-llama-7b"]


def test_denials_in_a_storm_do_not_read_every_targets_history_again(
        fleet, make_settings, serve_app):
    """A denial writes nothing the planners' history holds: the batch keeps
    each target's history (the 1,000-node storm listed every target's again
    after each of its 200 denials). 90 alerts over three engines, every third
    about the protected namespace's engine: three restarts, thirty denials,
    and the Lease ledger listed about twice per decision."""
    app = serve_app(make_settings(ledger=LedgerSettings(path="kubernetes")))
    doc = payload("01-vllm-hung")
    one = doc["alerts"][0]
    protected = payload("04-vllm-hung-protected-namespace")["alerts"][0]["labels"]
    targets = [("deployment", "vllm-llama-7b"), ("statefulset", "vllm-llama-405b-tp"),
               ("inferenceservice", "llama-70b")]
    doc["alerts"] = []
    for i in range(90):
        a = copy.deepcopy(one)
        key, name = targets[(i // 3) % 3]
        a["labels"] = ({**protected, "replica": str(i)} if i % 3 == 2 else
                       {"alertname": "VLLMEngineHung", "namespace": NS, key: name,
                        "replica": str(i)})
        a["fingerprint"] = f"{i:016x}"
        doc["alerts"].append(a)
    mark = len(fleet.requests)
    resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    statuses = [o["status"] for o in resp.json()["outcomes"]]
    assert statuses.count("applied") == 3 and statuses.count("denied") == 30, statuses
    lists = sum(1 for r in fleet.requests[mark:]
                if r.method == "GET" and r.resource == "leases" and not r.name)
    # two per decision (the claim's list, the policy's stats), each target's
    # history once, the prune's: 79 here; 131 when every denial dropped the
    # batch's history
    assert lists <= 2 * 33 + 3 + 15, lists


def test_a_storm_of_per_pod_alerts_acts_once_per_target(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    doc = payload("01-vllm-hung")
    one = doc["alerts"][0]
    doc["alerts"] = []
    targets = [("deployment", "vllm-llama-7b"), ("statefulset", "vllm-llama-405b-tp"),
               ("inferenceservice", "llama-70b")]
    for i in range(150):  # distinct fingerprints: 150 different alerts, 3 workloads
        a = copy.deepcopy(one)
        key, name = targets[i % 3]
        a["labels"] = {"alertname": "VLLMEngineHung", "namespace": NS, key: name,
                       "replica": str(i)}
        a["fingerprint"] = f"{i:016x}"
        doc["alerts"].append(a)
    resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    assert resp.status_code == 200
    statuses = [o["status"] for o in resp.json()["outcomes"]]
    assert statuses.count("applied") == 3 and statuses.count("duplicate") == 147
    patched = [w for w in writes(fleet) if w.method == "PATCH" and w.status < 300]
    assert sorted(w.name for w in patched) == ["llama-70b-predictor", "vllm-llama-405b-tp",
                                               "vllm-llama-7b"]
