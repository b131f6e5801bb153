"""Verification checks: did an applied plan take? One pure check per kind
of action, read from fresh cluster facts, as the usual tools wait:

- :func:`rollout_complete` (``rollout-restart``): the workload's rollout is
  complete, as ``kubectl rollout status`` judges it: the controller has
  observed the new generation, every replica is updated and available
  (Deployment) or ready on the update revision (StatefulSet). A paused
  Deployment or a ``ProgressDeadlineExceeded`` condition fails at once.
- :func:`scaled_out` (``scale-out``): the same, with ``spec.replicas`` still
  at or above the new size.
- :func:`rescheduled` (``reschedule-pod``): the rollout is complete and no
  evicted pod (by UID) is still on the failing node.
- :func:`pod_replaced` (``delete-pod``): the deleted pod (by UID) is gone and
  its owner is back to its ready replica count.
- :func:`node_drained` (``cordon-drain``, ``mark-reboot``): the node is still
  unschedulable and no evicted pod (by UID) is still on it.
- :func:`pods_moved` (``evict-pods``): no evicted pod is still on its node,
  and each evicted pod's workload is back to its ready count.
- :func:`node_released` (``uncordon``): the node is schedulable again (or
  kept cordoned when the plan meant to keep it).

A target that vanished fails (someone else acted). Which check runs for
which action is the remediation's declaration (``base.ActionSpec.check``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...facts import ClusterFacts, owner_of, pod_is_ready
from ...model import Plan
from ..base import Verdict
from .rollout import rollout_status, whole


def _uid(step_body: Mapping[str, Any]) -> str:
    pre = step_body.get("preconditions") or {}
    return str(pre.get("uid") or "") if isinstance(pre, Mapping) else ""


def _still_there(facts: ClusterFacts, namespace: str, name: str, uid: str,
                 node: str = "") -> bool:
    """Is this very pod (same UID when known) still present (on ``node``)?"""
    pod = facts.get("Pod", namespace, name)
    if pod is None:
        return False
    meta = pod.get("metadata") or {}
    if uid and meta.get("uid") != uid:
        return False  # a replacement with the same name (StatefulSet)
    if meta.get("deletionTimestamp"):
        return True  # terminating: still holds its GPUs
    return not node or (pod.get("spec") or {}).get("nodeName") == node


def _replaced(facts: ClusterFacts, owner: Mapping[str, Any] | None, namespace: str,
              gone: set[str], avoid_node: str = "") -> Verdict:
    """The removed pods' controller has its replicas back: at least
    ``spec.replicas`` ready pods it owns, none of them a removed pod (by UID)
    nor (for a move) on ``avoid_node``. Read from the pods themselves, not
    the controller's status, which lags right after an eviction."""
    if not owner:
        return Verdict(True, detail="unmanaged pod: nothing replaces it")
    kind, name = owner.get("kind", ""), owner.get("name", "")
    obj = facts.get(kind, namespace, name)
    if obj is None:
        return Verdict(False, True, f"{kind}/{namespace}/{name} is gone")
    want = whole((obj.get("spec") or {}).get("replicas"), 1)
    ready = []
    for pod in facts.list("Pod", namespace):
        meta = pod.get("metadata") or {}
        ref = owner_of(pod) or {}
        if (ref.get("kind"), ref.get("name")) != (kind, name) or meta.get("uid") in gone:
            continue
        if meta.get("deletionTimestamp") or not pod_is_ready(pod):
            continue
        if avoid_node and (pod.get("spec") or {}).get("nodeName") == avoid_node:
            continue
        ready.append(meta.get("name", ""))
    where = f" off {avoid_node}" if avoid_node else ""
    if len(ready) < want:
        return Verdict(False, detail=f"{kind}/{namespace}/{name}: {len(ready)} of {want} "
                                     f"replicas ready{where}")
    return Verdict(True, detail=f"{kind}/{namespace}/{name}: {len(ready)}/{want} ready{where}")


def _pods_gone(plan: Plan, facts: ClusterFacts, node: str) -> list[str]:
    return [f"{s.namespace}/{s.name}" for s in plan.steps
            if s.verb in ("evict", "delete") and s.kind == "Pod"
            and _still_there(facts, s.namespace, s.name, _uid(s.body), node)]


def _node_of(plan: Plan) -> str:
    params = plan.params
    for k in ("node", "hostname"):
        v = params.get(k)
        if isinstance(v, str) and v:
            return v
    return plan.target.name if plan.target.kind == "Node" else ""


def rollout_complete(plan: Plan, facts: ClusterFacts, owners: Mapping[str, Any]) -> Verdict:
    t = plan.target
    obj = facts.get(t.kind, t.namespace, t.name)
    if obj is None:
        return Verdict(False, True, f"{t} no longer exists")
    return rollout_status(obj)


def scaled_out(plan: Plan, facts: ClusterFacts, owners: Mapping[str, Any]) -> Verdict:
    t = plan.target
    obj = facts.get(t.kind, t.namespace, t.name)
    if obj is None:
        return Verdict(False, True, f"{t} no longer exists")
    want = whole(plan.params.get("to_replicas"))
    have = whole((obj.get("spec") or {}).get("replicas"), 1)
    if have < want:
        return Verdict(False, True, f"{t} was scaled back to {have} (we set {want})")
    return rollout_status(obj)


def rescheduled(plan: Plan, facts: ClusterFacts, owners: Mapping[str, Any]) -> Verdict:
    verdict = rollout_complete(plan, facts, owners)
    if not verdict.done:
        return verdict
    left = _pods_gone(plan, facts, _node_of(plan))
    if left:
        return Verdict(False, detail=f"still on the failing node: {', '.join(left)}")
    return verdict


def pod_replaced(plan: Plan, facts: ClusterFacts, owners: Mapping[str, Any]) -> Verdict:
    t = plan.target
    uid = _uid(plan.steps[0].body) if plan.steps else ""
    if _still_there(facts, t.namespace, t.name, uid):
        return Verdict(False, detail=f"{t} is still there")
    return _replaced(facts, owners.get(f"{t.namespace}/{t.name}"), t.namespace, {uid})


def node_drained(plan: Plan, facts: ClusterFacts, owners: Mapping[str, Any]) -> Verdict:
    t = plan.target
    node = t.name if t.kind == "Node" else _node_of(plan)
    obj = facts.get("Node", "", node)
    if obj is None:
        return Verdict(False, True, f"Node/{node} no longer exists")
    if not (obj.get("spec") or {}).get("unschedulable"):
        return Verdict(False, True, f"Node/{node} was uncordoned by someone else")
    left = _pods_gone(plan, facts, node)
    if left:
        return Verdict(False, detail=f"Node/{node}: {len(left)} evicted pod(s) still "
                                     f"there: {', '.join(left[:5])}")
    return Verdict(True, detail=f"Node/{node} cordoned and drained of "
                                f"{sum(1 for s in plan.steps if s.verb == 'evict')} pod(s)")


def pods_moved(plan: Plan, facts: ClusterFacts, owners: Mapping[str, Any]) -> Verdict:
    t = plan.target
    node = t.name if t.kind == "Node" else _node_of(plan)
    left = _pods_gone(plan, facts, node)
    if left:
        return Verdict(False, detail=f"not yet moved off {node}: {', '.join(left[:5])}")
    gone = {_uid(s.body) for s in plan.steps if s.verb == "evict"} - {""}
    for s in plan.steps:
        if s.verb != "evict":
            continue
        v = _replaced(facts, owners.get(f"{s.namespace}/{s.name}"), s.namespace, gone, node)
        if not v.done:
            return Verdict(False, v.failed, f"{s.namespace}/{s.name} not rescheduled yet: "
                                            f"{v.detail}")
    return Verdict(True, detail=f"{len(plan.steps)} pod(s) moved off {node} and "
                                "their workloads are ready")


def node_released(plan: Plan, facts: ClusterFacts, owners: Mapping[str, Any]) -> Verdict:
    t = plan.target
    obj = facts.get("Node", "", t.name)
    if obj is None:
        return Verdict(False, True, f"{t} no longer exists")
    cordoned = bool((obj.get("spec") or {}).get("unschedulable"))
    if plan.params.get("uncordon") is False:
        return Verdict(True, detail=f"{t} kept cordoned for other incidents")
    if cordoned:
        return Verdict(False, detail=f"{t} is still unschedulable")
    return Verdict(True, detail=f"{t} is schedulable again")


def pod_owners(plan: Plan, facts: ClusterFacts) -> dict[str, Any]:
    """Owner references of the pods a plan evicts or deletes, read before acting."""
    out: dict[str, Any] = {}
    for s in plan.steps:
        if s.kind == "Pod" and s.verb in ("evict", "delete"):
            pod = facts.get("Pod", s.namespace, s.name)
            if pod is not None and (owner := owner_of(pod)) is not None:
                out[f"{s.namespace}/{s.name}"] = dict(owner)
    return out
