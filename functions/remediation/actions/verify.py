"""Did the fix take? One pure check per plan action, read from cluster facts.

The pipeline calls :func:`check` after applying, again and again (fresh facts
each time) until it answers done, failed, or the deadline passes. The checks
follow what the usual tools wait for:

- ``rollout-restart`` / ``reschedule-pod`` / ``scale-out``: the workload's
  rollout is complete, as ``kubectl rollout status`` judges it: the
  controller has observed the new generation, every replica is updated and
  available (Deployment) or ready on the update revision (StatefulSet).
  ``scale-out`` also needs ``spec.replicas`` still at or above the new size.
  A paused Deployment or a ``ProgressDeadlineExceeded`` condition fails at
  once (it will not finish by itself).
- ``delete-pod``: the deleted pod (by UID) is gone and its owner is back to
  its ready replica count.
- ``cordon-drain`` / ``mark-reboot``: the node is still unschedulable and no
  evicted pod (by UID) is still on it.
- ``evict-pods`` (rebalance): no evicted pod (by UID) is still on its node,
  and each evicted pod's workload is back to its ready count (rescheduled).
- ``uncordon``: the node is schedulable again (or kept cordoned when the plan
  meant to keep it).

A target that vanished fails (someone else acted); an action without a
check is reported as such and counts as succeeded (nothing to wait for).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..facts import ClusterFacts, owner_of, pod_is_ready
from ..model import Plan


@dataclass(frozen=True)
class Verdict:
    done: bool  # the fix took
    failed: bool = False  # it cannot take without someone's help: stop waiting
    detail: str = ""


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def rollout_status(obj: Mapping[str, Any]) -> Verdict:
    """``kubectl rollout status`` for a Deployment or StatefulSet."""
    kind = obj.get("kind", "")
    meta, spec, status = (obj.get("metadata") or {}, obj.get("spec") or {},
                          obj.get("status") or {})
    name = f"{kind}/{meta.get('namespace', '')}/{meta.get('name', '')}"
    want = _int(spec.get("replicas"), 1)
    if _int(status.get("observedGeneration")) < _int(meta.get("generation"), 0):
        return Verdict(False, detail=f"{name}: waiting for the controller to observe "
                                     f"generation {meta.get('generation')}")
    if kind == "Deployment":
        if spec.get("paused"):
            return Verdict(False, True, f"{name} is paused: the rollout will not progress")
        for cond in status.get("conditions") or []:
            if (isinstance(cond, Mapping) and cond.get("type") == "Progressing"
                    and cond.get("reason") == "ProgressDeadlineExceeded"):
                return Verdict(False, True, f"{name} exceeded its progress deadline")
        updated = _int(status.get("updatedReplicas"))
        total = _int(status.get("replicas"), updated)
        available = _int(status.get("availableReplicas"))
        if updated < want:
            return Verdict(False, detail=f"{name}: {updated} of {want} replicas updated")
        if total > updated:
            return Verdict(False, detail=f"{name}: {total - updated} old replicas pending "
                                         "termination")
        if available < updated:
            return Verdict(False, detail=f"{name}: {available} of {updated} updated "
                                         "replicas available")
        return Verdict(True, detail=f"{name}: rollout complete, {available}/{want} available")
    if kind == "StatefulSet":
        ready, updated = _int(status.get("readyReplicas")), _int(status.get("updatedReplicas"))
        strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
        if strategy == "RollingUpdate":
            if updated < want:
                return Verdict(False, detail=f"{name}: {updated} of {want} pods updated")
            if status.get("updateRevision") and (status.get("currentRevision")
                                                 != status.get("updateRevision")):
                return Verdict(False, detail=f"{name}: waiting for the update revision")
        if ready < want:
            return Verdict(False, detail=f"{name}: {ready} of {want} pods ready")
        return Verdict(True, detail=f"{name}: rollout complete, {ready}/{want} ready")
    ready = _int(status.get("readyReplicas"))
    if ready < want:
        return Verdict(False, detail=f"{name}: {ready} of {want} replicas ready")
    return Verdict(True, detail=f"{name}: {ready}/{want} ready")


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
    want = _int((obj.get("spec") or {}).get("replicas"), 1)
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


def check(plan: Plan, facts: ClusterFacts, *, owners: Mapping[str, Any] | None = None) -> Verdict:
    """One look at whether ``plan`` took. ``owners``: pod ``ns/name`` -> the
    pod's owner reference as it was before the action (the pipeline records
    them before executing, since an evicted pod can no longer be asked)."""
    t = plan.target
    owners = owners or {}
    if plan.action in ("rollout-restart", "reschedule-pod", "scale-out"):
        obj = facts.get(t.kind, t.namespace, t.name)
        if obj is None:
            return Verdict(False, True, f"{t} no longer exists")
        if plan.action == "scale-out":
            want = _int(plan.params.get("to_replicas"))
            have = _int((obj.get("spec") or {}).get("replicas"), 1)
            if have < want:
                return Verdict(False, True, f"{t} was scaled back to {have} (we set {want})")
        verdict = rollout_status(obj)
        if not verdict.done or plan.action != "reschedule-pod":
            return verdict
        left = _pods_gone(plan, facts, _node_of(plan))
        if left:
            return Verdict(False, detail=f"still on the failing node: {', '.join(left)}")
        return verdict
    if plan.action == "delete-pod":
        uid = _uid(plan.steps[0].body) if plan.steps else ""
        if _still_there(facts, t.namespace, t.name, uid):
            return Verdict(False, detail=f"{t} is still there")
        return _replaced(facts, owners.get(f"{t.namespace}/{t.name}"), t.namespace, {uid})
    if plan.action in ("cordon-drain", "mark-reboot"):
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
    if plan.action == "evict-pods":
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
    if plan.action == "uncordon":
        obj = facts.get("Node", "", t.name)
        if obj is None:
            return Verdict(False, True, f"{t} no longer exists")
        cordoned = bool((obj.get("spec") or {}).get("unschedulable"))
        if plan.params.get("uncordon") is False:
            return Verdict(True, detail=f"{t} kept cordoned for other incidents")
        if cordoned:
            return Verdict(False, detail=f"{t} is still unschedulable")
        return Verdict(True, detail=f"{t} is schedulable again")
    return Verdict(True, detail=f"no verification defined for {plan.action}")


def pod_owners(plan: Plan, facts: ClusterFacts) -> dict[str, Any]:
    """Owner references of the pods a plan evicts or deletes, read before acting."""
    out: dict[str, Any] = {}
    for s in plan.steps:
        if s.kind == "Pod" and s.verb in ("evict", "delete"):
            pod = facts.get("Pod", s.namespace, s.name)
            if pod is not None and (owner := owner_of(pod)) is not None:
                out[f"{s.namespace}/{s.name}"] = dict(owner)
    return out
