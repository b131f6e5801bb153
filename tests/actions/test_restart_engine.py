"""The restart planner, pure: signal + snapshot facts -> Plan or NoPlan."""

from __future__ import annotations

from datetime import datetime, UTC
from types import MappingProxyType

import pytest

from remediation.actions.base import INCIDENT_ANNOTATION, RESTARTED_AT_ANNOTATION, PlanContext
from remediation.actions.restart_engine import plan_restart
from remediation.cli import demo_dir
from remediation.errors import InvalidInput
from remediation.facts import SnapshotFacts
from remediation.model import NoPlan, Plan, Signal, TYPE_ALERT_FIRING, thaw

NOW = datetime(2026, 11, 1, 10, 7, 3, tzinfo=UTC)


@pytest.fixture(scope="module")
def fleet() -> SnapshotFacts:
    return SnapshotFacts.load(demo_dir() / "cluster.yaml")


def signal(status: str = "firing", **labels: str) -> Signal:
    return Signal(event_id="e1", source="/alertmanager/remediation", type=TYPE_ALERT_FIRING,
                  status=status, name="VLLMEngineHung", labels=MappingProxyType(labels),
                  starts_at="2026-11-01T10:00:00Z", fingerprint="c6a2f2b4e0a1d3f9",
                  origin="alertmanager")


def plan(fleet: SnapshotFacts, sig: Signal, **options: str) -> Plan | NoPlan:
    return plan_restart(PlanContext(sig, fleet, NOW, MappingProxyType(options)))


def test_pod_resolves_through_replicaset_to_deployment_and_patches_like_kubectl(fleet):
    p = plan(fleet, signal(namespace="llm-serving", pod="vllm-llama-7b-6d4f8b9c7-x2x9k"))
    assert isinstance(p, Plan)
    assert (p.target.kind, p.target.namespace, p.target.name) == (
        "Deployment", "llm-serving", "vllm-llama-7b")
    assert p.action == "rollout-restart"
    (step,) = p.steps
    assert (step.verb, step.kind, step.patch_type) == ("patch", "Deployment", "strategic")
    annotations = thaw(step.body)["spec"]["template"]["metadata"]["annotations"]
    assert annotations[RESTARTED_AT_ANNOTATION] == "2026-11-01T10:07:03Z"
    assert annotations[INCIDENT_ANNOTATION] == signal().incident


def test_statefulset_pod_restarts_the_whole_statefulset(fleet):
    p = plan(fleet, signal(namespace="llm-serving", pod="vllm-llama-405b-tp-1"))
    assert isinstance(p, Plan)
    assert (p.target.kind, p.target.name) == ("StatefulSet", "vllm-llama-405b-tp")


def test_kserve_inferenceservice_resolves_to_its_predictor(fleet):
    p = plan(fleet, signal(namespace="llm-serving", inferenceservice="llama-70b"))
    assert isinstance(p, Plan) and p.target.name == "llama-70b-predictor"


def test_delete_pod_mode_deletes_only_that_pod_with_uid_precondition(fleet):
    pod = fleet.get("Pod", "llm-serving", "vllm-llama-7b-6d4f8b9c7-x2x9k")
    p = plan(fleet, signal(namespace="llm-serving", pod=pod["metadata"]["name"]), mode="delete-pod")
    assert isinstance(p, Plan) and p.action == "delete-pod"
    (step,) = p.steps
    assert (step.verb, step.kind, step.name) == ("delete", "Pod", pod["metadata"]["name"])
    assert thaw(step.body)["preconditions"] == {"uid": pod["metadata"]["uid"]}


@pytest.mark.parametrize("labels, reason", [
    ({"namespace": "llm-serving", "deployment": "tgi-mistral-7b"}, "paused"),
    ({"namespace": "llm-serving", "pod": "vllm-llama-7b-gone-abcde"}, "not found"),
    ({"namespace": "llm-serving", "deployment": "nope"}, "not found"),
    ({"pod": "vllm-llama-7b-6d4f8b9c7-x2x9k"}, "no namespace"),
    ({"namespace": "llm-serving"}, "names no pod"),
    ({"namespace": "gpu-operator", "pod": "nvidia-device-plugin-daemonset-00001"}, "DaemonSet"),
])
def test_no_plan_with_a_reason(fleet, labels, reason):
    p = plan(fleet, signal(**labels))
    assert isinstance(p, NoPlan)
    assert any(reason in r for r in p.reasons), p.reasons


def test_resolved_alert_plans_nothing(fleet):
    p = plan(fleet, signal("resolved", namespace="llm-serving", pod="vllm-llama-7b-6d4f8b9c7-x2x9k"))
    assert isinstance(p, NoPlan)


@pytest.mark.parametrize("labels", [
    {"namespace": "../kube-system", "pod": "x"},
    {"namespace": "llm-serving", "pod": "a/b"},
    {"namespace": "llm-serving", "deployment": "Bad Name"},
])
def test_hostile_names_are_rejected(fleet, labels):
    with pytest.raises(InvalidInput):
        plan(fleet, signal(**labels))


def test_same_incident_same_key_other_target_other_key(fleet):
    a = plan(fleet, signal(namespace="llm-serving", pod="vllm-llama-7b-6d4f8b9c7-x2x9k"))
    b = plan(fleet, signal(namespace="llm-serving", pod="vllm-llama-7b-6d4f8b9c7-q8w7r"))
    c = plan(fleet, signal(namespace="llm-serving", pod="vllm-llama-405b-tp-0"))
    assert isinstance(a, Plan) and isinstance(b, Plan) and isinstance(c, Plan)
    assert a.key == b.key  # two pods of one Deployment: one restart per incident
    assert a.key != c.key


def test_a_pod_replaced_by_the_rollout_is_traced_to_its_deployment_through_the_old_replicaset(
        fleet):
    """Found by the realstack tier: after a real rollout the pod a re-sent
    alert names is gone, but its ReplicaSet stays in the revision history."""
    gone = "vllm-llama-7b-6d4f8b9c7-zz9zz"
    assert fleet.get("Pod", "llm-serving", gone) is None
    p = plan(fleet, signal(namespace="llm-serving", pod=gone))
    assert isinstance(p, Plan) and (p.target.kind, p.target.name) == (
        "Deployment", "vllm-llama-7b")
    # Once the template carries this incident's mark, the re-send is 'already done'.
    objects = [thaw(fleet.get(k, ns, n)) for (k, ns, n) in fleet._by_key]
    for obj in objects:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "vllm-llama-7b":
            obj["spec"]["template"]["metadata"].setdefault("annotations", {})[
                INCIDENT_ANNOTATION] = signal().incident
    again = plan(SnapshotFacts(objects), signal(namespace="llm-serving", pod=gone))
    assert isinstance(again, NoPlan) and again.already_done, again


@pytest.mark.parametrize("name", ["vllm-llama-7b-zz9zz", "other-6d4f8b9c7-zz9zz"])
def test_a_gone_pod_whose_name_does_not_match_a_deployments_replicaset_is_not_found(fleet, name):
    p = plan(fleet, signal(namespace="llm-serving", pod=name))
    assert isinstance(p, NoPlan) and "not found" in p.reasons[0]
