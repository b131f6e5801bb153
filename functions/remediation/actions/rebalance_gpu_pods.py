"""Move a few GPU pods off a hot or unhealthy node, only where they fit.

Input: an alert naming the node (label ``kubernetes_node``, else ``node``,
else ``Hostname``), e.g. ``GPUNodeHot`` / ``GPUNodeUnhealthy``. Resolved
alerts: nothing.

The plan (action ``evict-pods``, target the Node) evicts at most
``options.max_pods`` (default 1) GPU pods of that node, each only when:

- it is an ordinary controller-managed pod (not DaemonSet, mirror, finished
  or terminating; emptyDir only with ``options.delete_local_data``): an
  eviction must end in a replacement;
- it is covered by at most one PodDisruptionBudget (the eviction API answers
  500 for several) and that budget still allows a disruption. The budget is
  ``disruptionsAllowed`` computed from the PDB spec against the pods' current
  readiness, as the disruption controller does (percentages rounded up,
  ``expectedPods`` from the owning controllers' replicas), never more than
  the PDB's own ``status.disruptionsAllowed`` when present; each planned
  eviction of a ready pod uses one;
- another schedulable GPU node (Ready, not cordoned, taints tolerated,
  nodeSelector/required affinity met) has free ``nvidia.com/gpu`` for it:
  allocatable minus the requests of the node's non-finished pods, with a
  first-fit simulation so two pods never count on the same free GPU.

Pods whose workload has other ready replicas (off this node) go first, then
fewer GPUs first. The hot node is not cordoned: the scheduler normally prefers
the emptier nodes the simulation found, but may place a replacement back here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..facts import ClusterFacts, owner_of, pod_is_ready, selector_matches
from ..model import NoPlan, ObjectRef, Plan, freeze
from .base import ActionSpec, PlanContext, Remediation, Rule, VaultRole, remediation_key
from .kit import checks
from .kit.drain import EVICT_DEADLINE_SECONDS, drain_selection, evict_step, pod_key
from .kit.gpu import GpuPlacement, gpu_request, is_finished
from .kit.nodes import ALERT_NODE_LABELS, node_from_signal
from .kit.options import flag, number

NAME = "rebalance-gpu-pods"


def _no(reason: str, target: ObjectRef | None = None) -> NoPlan:
    return NoPlan(NAME, (reason,), target)


class _Memo:
    """One planning pass reads the same objects many times (each candidate's
    workload, each PDB's pods): over the live API every read is a request, so
    reads are remembered for the pass. Read-only, like the facts it wraps."""

    def __init__(self, facts: ClusterFacts) -> None:
        self._facts = facts
        self._got: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        self._listed: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        key = (kind, namespace, name)
        if key not in self._got:
            self._got[key] = self._facts.get(kind, namespace, name)
        return self._got[key]

    def list(self, kind: str, namespace: str | None = None, *,
             labels: Mapping[str, str] | None = None,
             node: str | None = None) -> list[dict[str, Any]]:
        key = (kind, namespace, tuple(sorted((labels or {}).items())), node)
        if key not in self._listed:
            self._listed[key] = self._facts.list(kind, namespace, labels=labels, node=node)
        return self._listed[key]


def _scaled(value: Any, total: int) -> int:
    text = str(value)
    if text.endswith("%"):
        return math.ceil(total * int(text[:-1]) / 100)
    return int(text)


def _controller(facts: ClusterFacts, pod: Mapping[str, Any]
                ) -> tuple[str, Mapping[str, Any] | None]:
    """The pod's controlling workload ("Kind/ns/name") and the object its pods
    are selected by (its ReplicaSet or StatefulSet), with one read at most."""
    ns = pod["metadata"].get("namespace", "")
    owner = owner_of(pod)
    if owner is None:
        return f"Pod/{ns}/{pod['metadata']['name']}", None
    kind, name = owner.get("kind", ""), owner.get("name", "")
    obj = facts.get(kind, ns, name) if kind in ("ReplicaSet", "StatefulSet") else None
    if kind == "ReplicaSet" and obj is not None:
        up = owner_of(obj)
        if up is not None and up.get("kind") == "Deployment":
            kind, name = "Deployment", up["name"]
    return f"{kind}/{ns}/{name}", obj


def _workload(facts: ClusterFacts, pod: Mapping[str, Any]) -> tuple[str, int]:
    """The pod's controlling workload ("Kind/ns/name") and its desired replicas."""
    workload, obj = _controller(facts, pod)
    kind, ns, name = workload.split("/", 2)
    if kind == "Deployment":
        obj = facts.get("Deployment", ns, name) or obj
    replicas = int(((obj or {}).get("spec") or {}).get("replicas", 1))
    return workload, replicas


def _pods_selected(facts: ClusterFacts, ns: str, selector: Mapping[str, Any] | None
                   ) -> list[dict[str, Any]]:
    """The pods of ``ns`` a selector may match, listed by its labels on the API
    server when it has only matchLabels (a workload's few pods, never the
    namespace's thousands); the caller still matches the whole selector."""
    labels = dict((selector or {}).get("matchLabels") or {})
    labels.pop("pod-template-hash", None)  # a ReplicaSet's: every revision counts
    if selector is None or (selector.get("matchExpressions")) or not labels:
        return facts.list("Pod", ns)
    return facts.list("Pod", ns, labels=labels)


def _other_ready_replicas(facts: ClusterFacts, pod: Mapping[str, Any], node_name: str
                          ) -> tuple[str, int]:
    """The pod's workload and how many of its pods are ready on other nodes:
    the workload's pods are listed by its selector, and only their owners
    resolved (each ReplicaSet read once), whatever the size of the fleet."""
    workload, obj = _controller(facts, pod)
    ns = pod["metadata"].get("namespace", "")
    if workload.startswith("Pod/"):
        return workload, 0  # no controller: no other replica
    # an owner not read (a Job, a custom controller): the namespace's pods
    selector = (obj.get("spec") or {}).get("selector") if obj is not None else None
    others = sum(1 for p in _pods_selected(facts, ns, selector)
                 if (p.get("spec") or {}).get("nodeName") not in (None, node_name)
                 and pod_is_ready(p) and _controller(facts, p)[0] == workload)
    return workload, others


def disruptions_allowed(facts: ClusterFacts, pdb: Mapping[str, Any]) -> int:
    """A PDB's disruptionsAllowed from its spec and the pods' readiness (as the
    disruption controller computes it), capped by its status when present."""
    spec = pdb.get("spec") or {}
    ns = pdb["metadata"].get("namespace", "")
    pods = [p for p in _pods_selected(facts, ns, spec.get("selector"))
            if selector_matches(spec.get("selector"), p["metadata"].get("labels") or {})
            and not is_finished(p)]
    healthy = sum(1 for p in pods if pod_is_ready(p) and not p["metadata"].get(
        "deletionTimestamp"))
    controllers = dict(_workload(facts, p) for p in pods)
    expected = sum(controllers.values()) if controllers else 0
    if spec.get("maxUnavailable") is not None:
        desired = max(0, expected - _scaled(spec["maxUnavailable"], expected))
    elif isinstance(spec.get("minAvailable"), str):
        desired = _scaled(spec["minAvailable"], expected)
    elif spec.get("minAvailable") is not None:
        desired = int(spec["minAvailable"])
    else:
        desired = 0
    allowed = max(0, healthy - desired)
    status = (pdb.get("status") or {}).get("disruptionsAllowed")
    return min(allowed, int(status)) if status is not None else allowed


def plan_rebalance(ctx: PlanContext) -> Plan | NoPlan:
    s, facts = ctx.signal, _Memo(ctx.facts)
    if s.status != "firing":
        return _no("resolved alert: nothing to rebalance")
    node_name = node_from_signal(s)
    if not node_name:
        return _no("alert names no node (labels kubernetes_node, node or Hostname)")
    ref = ObjectRef("Node", "", node_name)
    if facts.get("Node", "", node_name) is None:
        return _no(f"{ref} not found", ref)
    max_pods = int(number(ctx.options, "max_pods", 1))
    if max_pods < 1:
        return _no("options.max_pods is 0: rebalancing is off", ref)
    sel = drain_selection(facts, node_name,
                                {**ctx.options, "delete_unmanaged": False})
    skipped = list(sel.skipped)
    ranked = []
    for pod in sel.evict:
        _, others = _other_ready_replicas(facts, pod, node_name)
        ranked.append((others == 0, -others, gpu_request(pod.get("spec")),
                       pod_key(pod), pod, others))
    ranked.sort(key=lambda r: r[:4])
    placement = GpuPlacement(facts, exclude=(node_name,))
    free_before = dict(placement.free)
    budgets: dict[str, int] = {}
    found: dict[str, int] = {}
    pdbs_by_ns: dict[str, list[dict[str, Any]]] = {}
    chosen: list[tuple[dict[str, Any], str, int]] = []
    for *_, key, pod, others in ranked:
        if len(chosen) >= max_pods:
            break
        ns = pod["metadata"].get("namespace", "")
        if ns not in pdbs_by_ns:
            pdbs_by_ns[ns] = facts.list("PodDisruptionBudget", ns)
        labels = pod["metadata"].get("labels") or {}
        pdbs = [p for p in pdbs_by_ns[ns]
                if selector_matches((p.get("spec") or {}).get("selector"), labels)]
        if len(pdbs) > 1:
            skipped.append({"pod": key, "reason": f"covered by {len(pdbs)} PDBs: the eviction "
                                                  "API refuses it"})
            continue
        pdb_key = f"{ns}/{pdbs[0]['metadata']['name']}" if pdbs else ""
        if pdbs and pdb_key not in budgets:
            found[pdb_key] = budgets[pdb_key] = disruptions_allowed(facts, pdbs[0])
        if pdbs and budgets[pdb_key] <= 0:
            skipped.append({"pod": key, "reason": f"PDB {pdb_key} allows no disruption now"})
            continue
        dest = placement.place(pod.get("spec"))
        if not dest:
            skipped.append({"pod": key, "reason": f"no other schedulable node has "
                                                  f"{gpu_request(pod.get('spec'))} free "
                                                  "GPU(s) for it"})
            continue
        if pdbs and pod_is_ready(pod):
            budgets[pdb_key] -= 1
        chosen.append((pod, dest, others))
    reasons = [f"left {x['pod']}: {x['reason']}" for x in skipped]
    if not chosen:
        return NoPlan(NAME, (f"no GPU pod can move off {ref}",) + tuple(reasons), ref)
    why = f"{s.name or 'alert'}: {node_name} is hot or unhealthy"
    steps = tuple(evict_step(p, f"{why}: move GPU pod (fits on {dest})", ctx.options)
                  for p, dest, _ in chosen)
    moved = [pod_key(p) for p, _, _ in chosen]
    reasons = [f"evict {pod_key(p)} ({others} other ready replica(s)); "
               f"{gpu_request(p.get('spec'))} GPU(s) fit on {dest}"
               for p, dest, others in chosen] + reasons
    return Plan(NAME, "evict-pods", ref, steps, tuple(reasons), remediation_key(NAME, s, ref),
                freeze({"node": node_name, "incident": s.incident, "max_pods": max_pods,
                        "evict_count": len(moved), "evict_pods": moved,
                        "evict_namespaces": sorted({m.split("/", 1)[0] for m in moved}),
                        "placements": {pod_key(p): d for p, d, _ in chosen},
                        "other_ready_replicas": {pod_key(p): o for p, _, o in chosen},
                        "skipped_pods": skipped, "pdb_budgets_before": found,
                        "free_gpus_elsewhere": free_before,
                        "delete_local_data": flag(ctx.options, "delete_local_data"),
                        "local_data_pods": [k for k in sel.local_data if k in moved],
                        "evict_deadline_seconds": number(
                            ctx.options, "evict_deadline_seconds",
                            EVICT_DEADLINE_SECONDS)}))


REMEDIATION = Remediation(
    name=NAME,
    summary="Evict a bounded number of GPU pods off a hot/unhealthy node where other nodes "
            "have free GPUs, never breaking a PodDisruptionBudget",
    purpose="Evict pods from a hot GPU node so the scheduler spreads them (cluster-scoped).",
    planner=plan_rebalance,
    actions=(ActionSpec("evict-pods", checks.pods_moved),),
    labels=(ALERT_NODE_LABELS,),
    rbac=(
        Rule(("",), ("nodes", "pods"), ("get", "list")),
        Rule(("policy",), ("poddisruptionbudgets",), ("get", "list")),
        Rule(("",), ("pods/eviction",), ("create",)),
        Rule(("",), ("namespaces",), ("get",)),
        Rule(("",), ("events",), ("create",)),
    ),
    vault=VaultRole(rules=(
        Rule(("",), ("nodes", "pods"), ("list",)),
        Rule(("",), ("pods/eviction",), ("create",)),
        Rule(("",), ("events",), ("create",)),
    ), role_type="ClusterRole", namespaces=("remediation",)),
    policy_data={
        "evict-pods": {"kinds": ["Pod"], "verbs": ["evict"], "max_steps": 4,
                       "max_per_target_in_window": 3, "max_per_window": 10, "max_evictions": 4,
                       "approval": False},
    },
)
