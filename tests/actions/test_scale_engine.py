"""scale-engine, pure: KV-cache saturation -> scale out by a step, bounded by a
maximum and by free GPUs; never scale in."""

from __future__ import annotations

import pytest

from remediation.actions.base import remediation_key
from remediation.actions.catalogue import CATALOGUE
from remediation.actions.scale_engine import MAX_REPLICAS_ANNOTATION, plan_scale
from remediation.model import NoPlan, Plan, thaw

from .gpu_fleet import NS, alert, ctx, deployment, fleet, node, pod

MAX4 = {MAX_REPLICAS_ANNOTATION: "4"}


def saturated(annotations=None, **labels):
    labels = {"namespace": NS, "deployment": "chat"} | labels
    return alert("VLLMKVCacheSaturated", annotations=annotations if annotations is not None
                 else {"kv_cache_usage": "0.97", "waiting": "42"}, **labels)


def chat_fleet(*extra, replicas=2, gpus=1, annotations=MAX4, free_nodes=1, **dep_kw):
    return fleet(*[node(f"gpu-{i}", gpus=8) for i in range(free_nodes)],
                 deployment("chat", replicas, gpus, annotations=annotations, **dep_kw),
                 *[pod(f"chat-{i}", "gpu-0", gpus) for i in range(replicas)], *extra)


def test_scales_out_by_one_step_with_the_scale_verb():
    sig = saturated()
    p = plan_scale(ctx(sig, chat_fleet()))
    assert isinstance(p, Plan)
    assert (p.function, p.action, str(p.target)) == ("scale-engine", "scale-out",
                                                     "Deployment/llm-serving/chat")
    (step,) = p.steps
    assert (step.verb, step.kind, step.namespace, step.name) == (
        "scale", "Deployment", NS, "chat")
    assert thaw(step.body) == {"spec": {"replicas": 3}}
    assert p.key == remediation_key("scale-engine", sig, p.target)
    params = thaw(p.params)
    assert (params["from_replicas"], params["to_replicas"], params["max_replicas"]) == (2, 3, 4)
    assert params["max_source"] == f"annotation {MAX_REPLICAS_ANNOTATION}"
    assert (params["gpus_per_replica"], params["gpus_needed"], params["free_gpus"]) == (1, 1, 6)
    assert (params["kv_cache_usage"], params["waiting"]) == (0.97, 42)


def test_the_step_is_capped_by_the_maximum():
    p = plan_scale(ctx(saturated(), chat_fleet(), step=5))
    assert isinstance(p, Plan) and thaw(p.steps[0].body) == {"spec": {"replicas": 4}}


def test_options_max_and_annotation_both_set_take_the_smaller():
    p = plan_scale(ctx(saturated(), chat_fleet(), max_replicas=3, step=5))
    assert isinstance(p, Plan)
    assert thaw(p.params)["max_replicas"] == 3
    assert thaw(p.params)["max_source"] == "options.max_replicas"
    p = plan_scale(ctx(saturated(), chat_fleet(annotations={}), max_replicas=6))
    assert isinstance(p, Plan) and thaw(p.params)["max_replicas"] == 6


def test_no_maximum_means_no_scaling():
    p = plan_scale(ctx(saturated(), chat_fleet(annotations={})))
    assert isinstance(p, NoPlan) and "no maximum set" in p.reasons[0]


def test_at_the_maximum_already():
    p = plan_scale(ctx(saturated(), chat_fleet(replicas=4)))
    assert isinstance(p, NoPlan) and "already at its maximum of 4" in p.reasons[0]


@pytest.mark.parametrize("annotations, ok, reason", [
    ({"kv_cache_usage": "0.42", "waiting": "42"}, False, "KV-cache usage 0.42 < 0.90"),
    ({"kv_cache_usage_perc": "95"}, True, ""),                 # a percentage
    ({"gpu_cache_usage_perc": "0.93"}, True, ""),              # older vLLM name
    ({"kv_cache_usage": "0.99", "waiting": "0"}, False, "0 requests waiting"),
    ({}, True, "trusting the alert rule"),
])
def test_it_refuses_when_the_alert_values_show_no_saturation(annotations, ok, reason):
    p = plan_scale(ctx(saturated(annotations), chat_fleet()))
    assert isinstance(p, Plan) is ok
    if reason:
        assert any(reason in r for r in p.reasons), p.reasons


def test_values_in_labels_count_too_and_thresholds_are_options():
    sig = saturated({}, kv_cache_usage="0.8")
    assert isinstance(plan_scale(ctx(sig, chat_fleet())), NoPlan)
    assert isinstance(plan_scale(ctx(sig, chat_fleet(), min_kv_cache_usage=0.75)), Plan)


def test_no_gpu_capacity_for_a_new_replica():
    # 4 GPUs per replica; gpu-0 holds two replicas (8 of 8 used)
    p = plan_scale(ctx(saturated(), chat_fleet(gpus=4)))
    assert isinstance(p, NoPlan) and "no GPU capacity" in p.reasons[0]


def test_only_as_many_replicas_as_fit_and_pending_pods_count_first():
    # gpu-0: 8 - 2*2 = 4 free; a pending 2-GPU pod will take 2 -> one 2-GPU replica fits
    f = chat_fleet(pod("pending-x", None, 2, phase="Pending"), gpus=2)
    p = plan_scale(ctx(saturated(), f, step=2))
    assert isinstance(p, Plan)
    assert thaw(p.steps[0].body) == {"spec": {"replicas": 3}}
    assert any("only 1 of 2 new replicas fit" in r for r in p.reasons)


def test_cordoned_nodes_offer_no_capacity():
    f = fleet(node("gpu-0", gpus=2), node("gpu-1", unschedulable=True),
              deployment("chat", 2, 1, annotations=MAX4),
              pod("chat-0", "gpu-0", 1), pod("chat-1", "gpu-0", 1))
    assert isinstance(plan_scale(ctx(saturated(), f)), NoPlan)


def test_a_pod_label_resolves_to_its_deployment():
    sig = saturated(deployment="", pod="chat-0")
    p = plan_scale(ctx(sig, chat_fleet()))
    assert isinstance(p, Plan) and str(p.target) == "Deployment/llm-serving/chat"


@pytest.mark.parametrize("fleet_kw, reason", [
    ({"ready": 1}, "only 1 of 2 replicas ready"),
    ({"labels": {"serving.kserve.io/inferenceservice": "chat"}}, "managed by KServe"),
])
def test_refusals(fleet_kw, reason):
    p = plan_scale(ctx(saturated(), chat_fleet(**fleet_kw)))
    assert isinstance(p, NoPlan) and reason in p.reasons[0]


@pytest.mark.parametrize("sig, reason", [
    (alert("VLLMKVCacheSaturated", "resolved", namespace=NS, deployment="chat"), "scale-in"),
    (alert("VLLMKVCacheSaturated", deployment="chat"), "no namespace"),
    (saturated(deployment="nope"), "not found"),
    (saturated(deployment="", statefulset="chat"), "only Deployments"),
])
def test_no_plan_with_a_reason(sig, reason):
    p = plan_scale(ctx(sig, chat_fleet()))
    assert isinstance(p, NoPlan) and reason in p.reasons[0], p.reasons


def test_registered_and_never_handles_resolved():
    r = CATALOGUE["scale-engine"]
    assert r.planner is plan_scale and not r.handles_resolved


def _attempt(sig, *, to: int, status: str = "claimed", key: str | None = None):
    """The ledger record a worker left when it died after claiming."""
    from remediation.model import ObjectRef
    from remediation.records import LedgerRecord

    target = ObjectRef("Deployment", NS, "chat")
    return LedgerRecord.from_document({
        "key": key or remediation_key("scale-engine", sig, target), "status": status,
        "target": str(target), "plan": {"params": {"from_replicas": to - 1,
                                                   "to_replicas": to}}})


def test_an_attempt_that_scaled_then_died_unrecorded_is_not_repeated():
    sig = saturated()
    history = lambda target, window: [_attempt(sig, to=3)]  # noqa: E731
    p = plan_scale(ctx(sig, chat_fleet(replicas=3), history=history))
    assert isinstance(p, NoPlan) and p.already_done
    assert "earlier attempt for this incident scaled it to 3" in p.reasons[0]


@pytest.mark.parametrize("record", [
    {"to": 4},                               # died before its scale landed (3 < 4)
    {"to": 3, "status": "denied"},           # a finished record is the ledger's business
    {"to": 3, "key": "another-incident"},    # another incident's attempt
])
def test_other_records_do_not_count_as_done(record):
    sig = saturated()
    history = lambda target, window: [_attempt(sig, **record)]  # noqa: E731
    p = plan_scale(ctx(sig, chat_fleet(replicas=3), history=history))
    assert isinstance(p, Plan), p
