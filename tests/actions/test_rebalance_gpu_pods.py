"""rebalance-gpu-pods, pure: evict a bounded number of GPU pods off a hot node
only where they fit, preferring replicated workloads, never breaking a PDB."""

from __future__ import annotations

import pytest

from remediation.actions.catalogue import CATALOGUE
from remediation.actions.rebalance_gpu_pods import disruptions_allowed, plan_rebalance
from remediation.model import NoPlan, Plan, thaw

from .gpu_fleet import alert, ctx, deployment, fleet, node, pdb, pod


def hot(**labels):
    return alert("GPUNodeHot", **({"kubernetes_node": "hot"} | labels))


def base(*extra, free_elsewhere: int = 4):
    """hot node: a replicated workload's pod (rep-1, 2 GPUs; rep-2 ready on
    other) and a single-replica workload's pod (solo-1, 1 GPU)."""
    return fleet(node("hot"), node("other", gpus=free_elsewhere + 2),
                 deployment("rep", 2, 2), deployment("solo", 1, 1),
                 pod("rep-1", "hot", 2), pod("rep-2", "other", 2),
                 pod("solo-1", "hot", 1), *extra)


def test_moves_one_pod_preferring_a_workload_with_other_ready_replicas():
    sig = hot()
    p = plan_rebalance(ctx(sig, base()))
    assert isinstance(p, Plan)
    assert (p.function, p.action, str(p.target)) == ("rebalance-gpu-pods", "evict-pods",
                                                     "Node/hot")
    assert [(s.verb, s.name) for s in p.steps] == [("evict", "rep-1")]
    assert thaw(p.steps[0].body) == {"preconditions": {"uid": "uid-rep-1"}}
    params = thaw(p.params)
    assert params["max_pods"] == 1 and params["evict_pods"] == ["llm-serving/rep-1"]
    assert params["placements"] == {"llm-serving/rep-1": "other"}
    assert params["other_ready_replicas"] == {"llm-serving/rep-1": 1}
    assert params["free_gpus_elsewhere"] == {"other": 4}


def test_first_fit_simulation_never_counts_the_same_free_gpu_twice():
    # 'other' has 3 free GPUs: rep-1 (2) fits, then solo-1 (1) fits, a third does not.
    f = base(deployment("big", 1, 2), pod("big-1", "hot", 2), free_elsewhere=3)
    p = plan_rebalance(ctx(hot(), f, max_pods=3))
    assert isinstance(p, Plan)
    params = thaw(p.params)
    assert params["evict_pods"] == ["llm-serving/rep-1", "llm-serving/solo-1"]
    assert params["placements"] == {"llm-serving/rep-1": "other",
                                    "llm-serving/solo-1": "other"}
    assert {"pod": "llm-serving/big-1",
            "reason": "no other schedulable node has 2 free GPU(s) for it"} \
        in params["skipped_pods"]


def test_no_room_anywhere_means_no_plan():
    f = fleet(node("hot"), node("full", gpus=2), node("cordoned", unschedulable=True),
              node("sick", ready=False), node("tainted", taints=[
                  {"key": "maintenance", "effect": "NoSchedule"}]),
              deployment("rep", 2, 2), pod("rep-1", "hot", 2), pod("rep-2", "full", 2))
    p = plan_rebalance(ctx(hot(), f))
    assert isinstance(p, NoPlan)
    assert p.reasons[0] == "no GPU pod can move off Node/hot"
    assert "no other schedulable node has 2 free GPU(s)" in p.reasons[1]


def test_a_tolerated_taint_does_not_block_placement():
    tol = {"tolerations": [{"key": "maintenance", "operator": "Exists"}]}
    f = fleet(node("hot"), node("tainted", taints=[{"key": "maintenance",
                                                     "effect": "NoSchedule"}]),
              deployment("rep", 2, 1), pod("rep-1", "hot", 1, spec_extra=tol))
    p = plan_rebalance(ctx(hot(), f))
    assert isinstance(p, Plan) and thaw(p.params)["placements"] == {
        "llm-serving/rep-1": "tainted"}


def test_finished_pods_do_not_hold_gpus():
    f = fleet(node("hot"), node("other", gpus=2), deployment("rep", 2, 2),
              pod("rep-1", "hot", 2), pod("old-job", "other", 2, phase="Succeeded"))
    assert isinstance(plan_rebalance(ctx(hot(), f)), Plan)


def test_a_pdb_that_allows_no_disruption_keeps_the_pod():
    f = base(pdb("rep", "rep", min_available=2))
    p = plan_rebalance(ctx(hot(), f))
    assert isinstance(p, Plan)
    params = thaw(p.params)
    assert params["evict_pods"] == ["llm-serving/solo-1"]  # rep-1 protected, next best
    assert {"pod": "llm-serving/rep-1",
            "reason": "PDB llm-serving/rep allows no disruption now"} in params["skipped_pods"]


def test_the_pdb_status_caps_the_computed_budget():
    f = base(pdb("rep", "rep", min_available=1, status_allowed=0))
    p = plan_rebalance(ctx(hot(), f))
    assert isinstance(p, Plan) and thaw(p.params)["evict_pods"] == ["llm-serving/solo-1"]


def test_our_own_evictions_use_up_the_budget():
    f = fleet(node("hot"), node("other", gpus=8), deployment("rep", 3, 1),
              pod("rep-1", "hot", 1), pod("rep-2", "hot", 1), pod("rep-3", "other", 1),
              pdb("rep", "rep", max_unavailable=1))
    p = plan_rebalance(ctx(hot(), f, max_pods=2))
    assert isinstance(p, Plan)
    params = thaw(p.params)
    assert params["evict_pods"] == ["llm-serving/rep-1"]
    assert params["pdb_budgets_before"] == {"llm-serving/rep": 1}
    assert {"pod": "llm-serving/rep-2",
            "reason": "PDB llm-serving/rep allows no disruption now"} in params["skipped_pods"]


def test_several_pdbs_on_one_pod_are_never_evicted():
    f = base(pdb("rep-a", "rep", max_unavailable=1), pdb("rep-b", "rep", max_unavailable=1))
    p = plan_rebalance(ctx(hot(), f))
    assert isinstance(p, Plan) and thaw(p.params)["evict_pods"] == ["llm-serving/solo-1"]
    assert any("covered by 2 PDBs" in r for r in p.reasons)


@pytest.mark.parametrize("spec, ready, expected", [
    ({"min_available": 1}, 3, 2),
    ({"min_available": "50%"}, 3, 1),     # ceil(3 * 50%) = 2 desired
    ({"max_unavailable": 1}, 3, 1),
    ({"max_unavailable": "34%"}, 3, 2),   # ceil(3 * 34%) = 2 unavailable allowed
    ({"min_available": 1}, 1, 0),         # two not ready
    ({}, 2, 2),
])
def test_disruptions_allowed_follows_the_disruption_controller(spec, ready, expected):
    f = fleet(deployment("rep", 3, 1),
              *[pod(f"rep-{i}", "n", 1, ready=i < ready) for i in range(3)])
    assert disruptions_allowed(f, pdb("rep", "rep", **spec)) == expected


def test_unmanaged_daemonset_and_emptydir_pods_stay():
    f = fleet(node("hot"), node("other"),
              pod("debug", "hot", 1, owner=None),
              pod("ds-1", "hot", 1, owner=("DaemonSet", "ds")),
              deployment("embed", 1, 1), pod("embed-1", "hot", 1, empty_dir=True))
    p = plan_rebalance(ctx(hot(), f))
    assert isinstance(p, NoPlan) and len(p.reasons) == 4
    p = plan_rebalance(ctx(hot(), f, delete_local_data=True))
    assert isinstance(p, Plan) and thaw(p.params)["local_data_pods"] == ["llm-serving/embed-1"]


@pytest.mark.parametrize("sig, reason", [
    (alert("GPUNodeHot", "resolved", kubernetes_node="hot"), "resolved"),
    (alert("GPUNodeHot"), "names no node"),
    (alert("GPUNodeHot", node="nope"), "not found"),
])
def test_no_plan_with_a_reason(sig, reason):
    p = plan_rebalance(ctx(sig, base()))
    assert isinstance(p, NoPlan) and reason in p.reasons[0]


def test_node_label_variants_and_registration():
    assert isinstance(plan_rebalance(ctx(alert("GPUNodeHot", Hostname="HOT"), base())), Plan)
    assert isinstance(plan_rebalance(ctx(alert("GPUNodeHot", node="hot"), base())), Plan)
    assert CATALOGUE["rebalance-gpu-pods"].planner is plan_rebalance
