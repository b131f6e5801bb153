"""The escalation ladder inside restart-engine, pure: restart, then reschedule
the pod off its node, then drain the node; driven by the ledger history."""

from __future__ import annotations

import dataclasses

import pytest

from remediation.actions.base import INCIDENT_ANNOTATION, remediation_key
from remediation.actions.drain_gpu_node import CORDONED_BY, DRAINED_FOR
from remediation.actions.escalation import AVOID_NODES_ANNOTATION, choose_rung
from remediation.actions.restart_engine import LADDER_ACTIONS, plan_restart
from remediation.model import NoPlan, ObjectRef, Plan, thaw
from remediation.records import LedgerRecord

from .gpu_fleet import NS, alert, ctx, deployment, fleet, node, pod

TARGET = "Deployment/llm-serving/vllm"


def hung(fingerprint: str = "now", **labels):
    labels = {"namespace": NS, "pod": "vllm-1"} | labels
    return alert("VLLMEngineHung", fingerprint=fingerprint, **labels)


def record(incident: str, action: str = "rollout-restart", status: str = "applied",
           target: str = TARGET, key: str = "") -> LedgerRecord:
    return LedgerRecord.from_document({
        "key": key or f"key-{incident}", "status": status, "action": action,
        "target": target, "updated_at": 0.0, "plan": {"params": {"incident": incident}}})


def history_of(*records, seen: list | None = None):
    def history(target: str, window: float):
        if seen is not None:
            seen.append((target, window))
        return [r for r in records if r.target == target]
    return history


def vllm_fleet(*extra, template_spec=None, gpu_nodes=("gpu-1", "gpu-2")):
    return fleet(*[node(n) for n in gpu_nodes],
                 deployment("vllm", 2, 1, template_spec=template_spec),
                 pod("vllm-1", "gpu-1", 1), pod("vllm-2", "gpu-2", 1),
                 pod("other-1", "gpu-1", 2, app="other"), deployment("other", 1, 2), *extra)


def test_without_history_it_is_the_plain_restart():
    seen: list = []
    p = plan_restart(ctx(hung(), vllm_fleet(), history=history_of(seen=seen)))
    assert isinstance(p, Plan) and p.action == "rollout-restart"
    assert seen == [(TARGET, 3600.0)]


def test_two_earlier_incidents_reschedule_the_pod_off_its_node():
    sig = hung()
    hist = history_of(record("a"), record("b"))
    p = plan_restart(ctx(sig, vllm_fleet(), history=hist))
    assert isinstance(p, Plan)
    assert (p.function, p.action, str(p.target)) == ("restart-engine", "reschedule-pod", TARGET)
    assert p.key == remediation_key("restart-engine", sig, ObjectRef("Deployment", NS, "vllm"))
    patch, evict = p.steps
    assert (patch.verb, patch.kind, patch.name, patch.patch_type) == (
        "patch", "Deployment", "vllm", "strategic")
    tmpl = thaw(patch.body)["spec"]["template"]
    assert tmpl["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"] == {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn",
                                   "values": ["gpu-1"]}]}]}
    assert tmpl["metadata"]["annotations"] == {AVOID_NODES_ANNOTATION: "gpu-1",
                                               INCIDENT_ANNOTATION: sig.incident}
    assert (evict.verb, evict.name) == ("evict", "vllm-1")  # only vllm's pod on gpu-1
    params = thaw(p.params)
    assert (params["rung"], params["earlier_failures"], params["node"]) == (
        "reschedule", 2, "gpu-1")
    assert params["fits_on"] == "gpu-2" and params["evict_pods"] == ["llm-serving/vllm-1"]


def test_existing_affinity_terms_keep_their_expressions_and_gain_ours():
    spec = {"containers": [{"name": "e", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]},
                                          {"key": "kubernetes.io/hostname",
                                           "operator": "NotIn", "values": ["gpu-0"]}]},
                    {"matchExpressions": [{"key": "gpu", "operator": "In",
                                           "values": ["a100"]}]}]}}}}
    f = fleet(node("gpu-1", labels={"gpu": "h100"}), node("gpu-2", labels={"gpu": "a100"}),
              deployment("vllm", 2, 1, template_spec=spec), pod("vllm-1", "gpu-1", 1))
    p = plan_restart(ctx(hung(), f, history=history_of(record("a"), record("b"))))
    assert isinstance(p, Plan) and p.action == "reschedule-pod"
    terms = thaw(p.steps[0].body)["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]},
                              {"key": "kubernetes.io/hostname", "operator": "NotIn",
                               "values": ["gpu-0", "gpu-1"]}]},
        {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100"]},
                              {"key": "kubernetes.io/hostname", "operator": "NotIn",
                               "values": ["gpu-1"]}]}]
    assert thaw(p.params)["fits_on"] == "gpu-2"


def test_no_room_elsewhere_falls_back_to_the_restart():
    f = vllm_fleet(gpu_nodes=("gpu-1",))
    p = plan_restart(ctx(hung(), f, history=history_of(record("a"), record("b"))))
    assert isinstance(p, Plan) and p.action == "rollout-restart"


def test_three_earlier_incidents_drain_the_pods_node():
    sig = hung()
    hist = history_of(record("a"), record("b"), record("c", "reschedule-pod"))
    p = plan_restart(ctx(sig, vllm_fleet(), history=hist))
    assert isinstance(p, Plan)
    assert (p.function, p.action, str(p.target)) == ("restart-engine", "cordon-drain",
                                                     "Node/gpu-1")
    assert p.key == remediation_key("restart-engine", sig, ObjectRef("Node", "", "gpu-1"))
    cordon, *evictions = p.steps
    body = thaw(cordon.body)
    assert body["spec"] == {"unschedulable": True}  # cordon, no Xid taint
    assert body["metadata"]["annotations"][CORDONED_BY] == sig.incident
    assert body["metadata"]["annotations"][DRAINED_FOR] == TARGET
    assert sorted(s.name for s in evictions) == ["other-1", "vllm-1"]  # the node's GPU pods
    params = thaw(p.params)
    assert (params["rung"], params["earlier_failures"]) == ("drain", 3)
    assert (params["gpu_nodes"], params["cordoned_gpu_nodes_after"]) == (2, 1)


def test_the_ladder_stops_when_the_fault_follows_the_workload():
    drained = node("gpu-9", unschedulable=True,
                   annotations={CORDONED_BY: "x", DRAINED_FOR: TARGET})
    hist = history_of(*[record(i) for i in "abcd"])
    p = plan_restart(ctx(hung(), vllm_fleet(drained), history=hist))
    assert isinstance(p, NoPlan) and "escalation exhausted" in p.reasons[0]
    assert "gpu-9" in p.reasons[0]


def test_the_drain_rung_never_takes_over_someone_elses_cordon():
    f = fleet(node("gpu-1", unschedulable=True), deployment("vllm", 1, 1),
              pod("vllm-1", "gpu-1", 1))
    p = plan_restart(ctx(hung(), f, history=history_of(*[record(i) for i in "abc"])))
    assert isinstance(p, NoPlan) and "someone else" in p.reasons[0]


@pytest.mark.parametrize("records, rung", [
    ([record("a", status="denied"), record("b", status="failed"),
      record("c", status="planned")], "restart"),                       # nothing was done
    ([record("a", action="scale-out"), record("b", action="scale-out")], "restart"),
    ([record("now-incident"), record("a", key="this-key")], "restart"),  # this incident
    ([record("a"), record("a"), record("b", status="claimed")], "reschedule"),  # distinct
    ([record("a"), record("b"), record("c", action="delete-pod")], "drain"),
])
def test_what_counts_as_an_earlier_failure(records, rung):
    sig = hung()
    # the current incident is recognised by key or by the incident in the plan params
    records_fixed = [dataclasses.replace(r, plan={"params": {"incident": sig.incident}})
                     if r.key == "key-now-incident" else r for r in records]
    c = ctx(sig, vllm_fleet(), history=history_of(*records_fixed))
    assert choose_rung(c, ObjectRef("Deployment", NS, "vllm"), "this-key",
                       ladder=LADDER_ACTIONS).name == rung


def test_thresholds_window_and_switch_are_options():
    seen: list = []
    hist = history_of(record("a"), seen=seen)
    p = plan_restart(ctx(hung(), vllm_fleet(), history=hist, escalation_reschedule_after=1,
                         escalation_drain_after=5, escalation_window_seconds=600))
    assert isinstance(p, Plan) and p.action == "reschedule-pod"
    assert seen == [(TARGET, 600.0)]
    p = plan_restart(ctx(hung(), vllm_fleet(), history=history_of(*[record(i) for i in "abc"]),
                         escalation=False))
    assert isinstance(p, Plan) and p.action == "rollout-restart"


def test_without_a_pod_or_node_it_cannot_climb_and_restarts():
    sig = hung(pod="", deployment="vllm")
    p = plan_restart(ctx(sig, vllm_fleet(), history=history_of(record("a"), record("b"))))
    assert isinstance(p, Plan) and p.action == "rollout-restart"
    sig = hung(pod="", deployment="vllm", node="gpu-2")  # the alert names the node
    p = plan_restart(ctx(sig, vllm_fleet(), history=history_of(record("a"), record("b"))))
    assert isinstance(p, Plan) and p.action == "reschedule-pod"
    assert [s.name for s in p.steps[1:]] == ["vllm-2"]


def test_a_redelivery_after_the_reschedule_was_applied_is_recognised():
    sig = hung()
    spec_ann = {INCIDENT_ANNOTATION: sig.incident}
    objs = vllm_fleet()
    dep = objs.get("Deployment", NS, "vllm")
    dep["spec"]["template"]["metadata"]["annotations"] = spec_ann
    f = fleet(dep, *[o for o in objs.objects() if o["kind"] != "Deployment"
                     or o["metadata"]["name"] != "vllm"])
    p = plan_restart(ctx(sig, f, history=history_of(record("a"), record("b"))))
    assert isinstance(p, NoPlan) and p.already_done
