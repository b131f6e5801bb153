"""drain-gpu-node recovery, pure: the resolved Xid alert releases OUR cordon
(only ours), after a healthy delay, and only after a reboot when one was asked."""

from __future__ import annotations

from datetime import timedelta

import pytest

from remediation.actions.base import remediation_key
from remediation.actions.drain_gpu_node import (
    CORDON_REASON,
    CORDONED_BY,
    REBOOT_BOOT_ID,
    REBOOT_LABEL,
    REBOOT_REASON,
    XID_TAINT_KEY,
    plan_drain_gpu_node,
)
from remediation.model import NoPlan, Plan, thaw

from .gpu_fleet import NOW, alert, ctx, fleet, node

OURS = {"key": XID_TAINT_KEY, "value": "48", "effect": "NoSchedule"}
CORDON_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
OTHER = {"key": "dedicated", "value": "inference", "effect": "NoSchedule"}
ENDS = (NOW - timedelta(seconds=600)).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolved(ends_at: str = ENDS, **labels):
    return alert("GPUXidError", "resolved", ends_at=ends_at, Hostname="gpu-1", xid="48",
                 **labels)


INCIDENT = resolved().incident


def our_node(**kw):
    base = dict(unschedulable=True, annotations={CORDONED_BY: INCIDENT,
                                                 CORDON_REASON: "Xid 48"},
                taints=[OTHER, CORDON_TAINT, OURS], resource_version="7")
    base.update(kw)
    return fleet(node("gpu-1", **base), node("gpu-2"), node("gpu-3", unschedulable=True))


def test_resolved_and_healthy_long_enough_uncordons_and_removes_only_our_taint():
    sig = resolved()
    p = plan_drain_gpu_node(ctx(sig, our_node()))
    assert isinstance(p, Plan)
    assert (p.action, str(p.target)) == ("uncordon", "Node/gpu-1")
    (step,) = p.steps
    assert (step.verb, step.kind, step.patch_type) == ("patch", "Node", "merge")
    body = thaw(step.body)
    assert body["spec"]["unschedulable"] is None
    assert body["spec"]["taints"] == [OTHER]  # theirs kept, ours (and the cordon's) gone
    assert body["metadata"]["annotations"] == {CORDONED_BY: None, CORDON_REASON: None}
    assert body["metadata"]["resourceVersion"] == "7"
    params = thaw(p.params)
    assert params["uncordon"] is True and params["remove_taint"] is True
    assert params["healthy_for_seconds"] == 600
    assert (params["gpu_nodes"], params["cordoned_gpu_nodes"],
            params["cordoned_gpu_nodes_after"]) == (3, 2, 1)
    # the firing alert's drain claimed remediation_key(NAME, sig, node): recovery
    # must not collide with it, or the ledger would answer "duplicate"
    assert p.key != remediation_key("drain-gpu-node", sig, p.target)


def test_too_early_waits_with_the_reason():
    early = (NOW - timedelta(seconds=120)).strftime("%Y-%m-%dT%H:%M:%SZ")
    p = plan_drain_gpu_node(ctx(resolved(early), our_node()))
    assert isinstance(p, NoPlan)
    assert p.reasons == ("Node/gpu-1 healthy for 120s, waiting for 300s before uncordoning",)
    p = plan_drain_gpu_node(ctx(resolved(early), our_node(), healthy_delay_seconds=60))
    assert isinstance(p, Plan)


def test_a_node_someone_else_cordoned_is_left_alone():
    f = fleet(node("gpu-1", unschedulable=True, taints=[CORDON_TAINT, OURS]))
    p = plan_drain_gpu_node(ctx(resolved(), f))
    assert isinstance(p, NoPlan) and "someone else" in p.reasons[0]


def test_a_node_that_is_not_cordoned_needs_nothing():
    p = plan_drain_gpu_node(ctx(resolved(), fleet(node("gpu-1"))))
    assert isinstance(p, NoPlan) and "nothing to undo" in p.reasons[0]


def test_our_cordon_for_another_incident_is_not_released_by_this_one():
    p = plan_drain_gpu_node(ctx(resolved(), our_node(annotations={CORDONED_BY: "other"})))
    assert isinstance(p, NoPlan) and "other incident" in p.reasons[0]


def test_with_another_incident_still_holding_it_only_our_mark_goes():
    p = plan_drain_gpu_node(ctx(resolved(), our_node(
        annotations={CORDONED_BY: f"{INCIDENT},second"})))
    assert isinstance(p, Plan) and p.action == "uncordon"
    body = thaw(p.steps[0].body)
    assert body["metadata"]["annotations"] == {CORDONED_BY: "second"}
    assert "spec" not in body
    params = thaw(p.params)
    assert params["uncordon"] is False and params["remaining_incidents"] == ["second"]


def test_a_node_marked_for_reboot_is_released_only_after_it_rebooted():
    ann = {CORDONED_BY: INCIDENT, REBOOT_REASON: "Xid 79", REBOOT_BOOT_ID: "boot-A"}
    waiting = our_node(annotations=ann, labels={REBOOT_LABEL: "true"}, boot_id="boot-A")
    p = plan_drain_gpu_node(ctx(resolved(), waiting))
    assert isinstance(p, NoPlan) and "waiting for the reboot" in p.reasons[0]
    rebooted = our_node(annotations=ann, labels={REBOOT_LABEL: "true"}, boot_id="boot-B")
    p = plan_drain_gpu_node(ctx(resolved(), rebooted))
    assert isinstance(p, Plan)
    body = thaw(p.steps[0].body)
    assert body["metadata"]["labels"] == {REBOOT_LABEL: None}
    assert body["metadata"]["annotations"][REBOOT_BOOT_ID] is None


@pytest.mark.parametrize("ends_at", ["0001-01-01T00:00:00Z", "not-a-time"])
def test_without_an_end_time_it_cannot_tell_how_long_it_has_been_healthy(ends_at):
    p = plan_drain_gpu_node(ctx(resolved(ends_at), our_node()))
    assert isinstance(p, NoPlan) and "endsAt" in p.reasons[0]
