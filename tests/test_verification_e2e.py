"""Verification after apply, end to end through the HTTP app against the API
emulator (whose default controller hook completes rollouts and replaces
evicted pods, as a cluster's controllers would), plus the pure checks."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from remediation.actions.verify import check, rollout_status
from remediation.cli import demo_dir
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import to_binary
from remediation.facts import SnapshotFacts
from remediation.model import ObjectRef, Plan, Step
from remediation.settings import VerifySettings

from tests.test_gpu_e2e import policy_with

NS, DEPLOY = "llm-serving", "vllm-llama-7b"


def alert(name: str = "01-vllm-hung") -> Any:
    body = json.loads((demo_dir() / "events" / f"{name}.json").read_text())
    (event,) = alertmanager_to_events(body, routes=lambda n, _l: "")
    return event


def post(app: Any, event: Any) -> Any:
    headers, body = to_binary(event)
    resp = app.post("/", headers=headers, content=body)
    assert resp.status_code == 200, resp.text
    return resp


def fast(settings: Any, deadline: float = 3.0) -> Any:
    return replace(settings, verify=VerifySettings(deadline=deadline, interval=0.05))


def test_a_completed_rollout_is_reported_succeeded(fleet, make_settings, serve_app):
    app = serve_app(fast(make_settings()))
    resp = post(app, alert())
    data = resp.json()
    assert data["status"] == "applied"
    assert data["verification"]["result"] == "succeeded"
    assert "rollout complete" in data["verification"]["detail"]
    dep = fleet.get("deployments", NS, DEPLOY)
    assert dep["status"]["observedGeneration"] == dep["metadata"]["generation"]


def test_a_stalled_rollout_fails_verification_and_climbs_the_ladder(fleet, make_settings,
                                                                    serve_app):
    fleet.stall_rollouts()  # the new pods never become ready
    app = serve_app(fast(make_settings(), deadline=0.5))
    resp = post(app, alert())
    data = resp.json()
    assert data["status"] == "applied"  # the restart itself was done ...
    assert data["verification"]["result"] == "failed"  # ... but did not take
    assert "not done within 0.5s" in data["verification"]["detail"]
    assert resp.headers["ce-remediationverification"] == "failed"
    (rec,) = app.pipeline.ledger.history(target=f"Deployment/{NS}/{DEPLOY}")
    assert rec.verification == "failed"

    # The next incident on the same engine: one earlier incident whose fix
    # failed verification counts twice, so the ladder skips the plain restart
    # (reschedule after 2 by default) and moves the pod off its node.
    body = json.loads((demo_dir() / "events" / "01-vllm-hung.json").read_text())
    for a in body["alerts"]:
        a["startsAt"] = "2026-11-23T04:30:00Z"
        a["fingerprint"] = "0fedcba987654321"
    (event,) = alertmanager_to_events(body, routes=lambda n, _l: "")
    second = post(app, event).json()
    assert second["plan"]["action"] == "reschedule-pod", second


def test_a_drain_is_verified_node_cordoned_and_empty(fleet, make_settings, serve_app, tmp_path):
    app = serve_app(fast(make_settings(policy=policy_with(tmp_path,
                                                          max_cordoned_gpu_nodes_percent=100))))
    body = json.loads((demo_dir() / "events" / "10-dcgm-xid79-fell-off-bus.json").read_text())
    (event,) = alertmanager_to_events(body, routes=lambda n, _l: "")
    data = post(app, event).json()
    assert data["status"] == "applied", data
    assert data["verification"]["result"] == "succeeded", data["verification"]
    assert "cordoned and drained" in data["verification"]["detail"]


def test_the_applied_outcome_goes_to_the_outcome_sink_before_verification(
        fleet, make_settings, serve_app, broker):
    settings = fast(make_settings())
    app = serve_app(replace(settings, http=replace(settings.http, outcome_sink=broker.url)))
    reply = post(app, alert())
    (early,) = broker.received
    assert early["ce-remediationstatus"] == "applied"
    assert "ce-remediationverification" not in early
    assert "verification" not in json.loads(early["body"])
    assert reply.headers["ce-remediationverification"] == "succeeded"
    assert early["ce-id"] != reply.headers["ce-id"]  # two events: applied, then verified


# -- the pure checks ------------------------------------------------------------

def deployment(**status: Any) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"name": "d", "namespace": "ns", "generation": 3},
            "spec": {"replicas": 2}, "status": status}


def test_rollout_status_follows_kubectl():
    done = dict(observedGeneration=3, replicas=2, updatedReplicas=2, availableReplicas=2)
    assert rollout_status(deployment(**done)).done
    assert not rollout_status(deployment(**{**done, "observedGeneration": 2})).done
    assert not rollout_status(deployment(**{**done, "updatedReplicas": 1})).done
    assert not rollout_status(deployment(**{**done, "replicas": 3})).done  # old pod left
    assert not rollout_status(deployment(**{**done, "availableReplicas": 1})).done
    stuck = deployment(**{**done, "updatedReplicas": 1, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]})
    assert rollout_status(stuck).failed
    paused = deployment(**done)
    paused["spec"]["paused"] = True
    assert rollout_status(paused).failed


def test_a_drain_undone_by_someone_else_fails_at_once():
    node = {"kind": "Node", "metadata": {"name": "gpu-1"}, "spec": {}}
    plan = Plan("drain-gpu-node", "cordon-drain", ObjectRef("Node", "", "gpu-1"),
                (Step("patch", "Node", "", "gpu-1", "cordon"),), key="k")
    verdict = check(plan, SnapshotFacts([node]))
    assert verdict.failed and "uncordoned" in verdict.detail
    gone = check(plan, SnapshotFacts([]))
    assert gone.failed and "no longer exists" in gone.detail


def test_an_evicted_pod_must_be_replaced_off_the_node():
    rs_ref = {"kind": "ReplicaSet", "name": "rs", "controller": True}
    old = {"kind": "Pod", "metadata": {"name": "p1", "namespace": "ns", "uid": "u1",
                                       "ownerReferences": [rs_ref]},
           "spec": {"nodeName": "hot"}}
    rs = {"kind": "ReplicaSet", "metadata": {"name": "rs", "namespace": "ns"},
          "spec": {"replicas": 1}}
    plan = Plan("rebalance-gpu-pods", "evict-pods", ObjectRef("Node", "", "hot"),
                (Step("evict", "Pod", "ns", "p1", "move", {"preconditions": {"uid": "u1"}}),),
                key="k", params={"node": "hot"})
    owners = {"ns/p1": rs_ref}
    assert not check(plan, SnapshotFacts([old, rs]), owners=owners).done  # still there
    pending = {"kind": "Pod", "metadata": {"name": "p2", "namespace": "ns", "uid": "u2",
                                           "ownerReferences": [rs_ref]},
               "spec": {}, "status": {"phase": "Pending"}}
    v = check(plan, SnapshotFacts([rs, pending]), owners=owners)
    assert not v.done and "0 of 1 replicas ready" in v.detail
    ready = {**pending, "spec": {"nodeName": "cool"},
             "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    assert check(plan, SnapshotFacts([rs, ready]), owners=owners).done
    back_on_hot = {**ready, "spec": {"nodeName": "hot"}}
    assert not check(plan, SnapshotFacts([rs, back_on_hot]), owners=owners).done
