"""What the policy must know about the objects a plan touches, read from
cluster facts (issue 15, findings 2 and 8).

The policy cannot judge "only GPU nodes, never a control-plane node" or
"restart only inference engines in inference namespaces" from the plan
alone: it needs the nodes' labels and GPU capacity, the namespaces' labels
and the workloads' labels and images. :func:`target_facts` gathers them
into ``input.facts`` (pure over the ``ClusterFacts`` port):

``{"nodes": {name: {"found", "labels", "gpu_capacity", "control_plane"}},
   "namespaces": {name: {"found", "labels"}},
   "workloads": {"Kind/ns/name": {"found", "kind", "labels", "template_labels",
                                  "images"}}}``

An object that cannot be found is reported ``found: false`` and the policy
refuses (fail closed). GPU capacity is the largest of capacity and
allocatable over the extended resources that name a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ActionFailed
from ..facts import ClusterFacts
from ..model import Plan

#: extended resources that mean "this node has GPUs"
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915", "habana.ai/gaudi")
#: labels that make a node part of the control plane
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane",
                        "node-role.kubernetes.io/master")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Pod")
#: actions that restart a workload: the policy checks what it is and where
RESTART_ACTIONS = frozenset({"rollout-restart", "delete-pod", "reschedule-pod"})


def _quantity(value: Any) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return 0


def gpu_capacity(node: Mapping[str, Any]) -> int:
    status = node.get("status") or {}
    best = 0
    for field in ("capacity", "allocatable"):
        amounts = status.get(field) or {}
        for resource in GPU_RESOURCES:
            best = max(best, _quantity(amounts.get(resource)))
    return best


def node_facts(node: Mapping[str, Any] | None) -> dict[str, Any]:
    if node is None:
        return {"found": False, "labels": {}, "gpu_capacity": 0, "control_plane": False}
    labels = dict((node.get("metadata") or {}).get("labels") or {})
    taints = (node.get("spec") or {}).get("taints") or []
    control = any(k in labels for k in CONTROL_PLANE_LABELS) or any(
        isinstance(t, Mapping) and t.get("key") in CONTROL_PLANE_LABELS for t in taints)
    return {"found": True, "labels": labels, "gpu_capacity": gpu_capacity(node),
            "control_plane": control}


def _images(spec: Mapping[str, Any]) -> list[str]:
    out = []
    for field in ("containers", "initContainers"):
        for c in spec.get(field) or []:
            if isinstance(c, Mapping) and isinstance(c.get("image"), str):
                out.append(c["image"])
    return sorted(set(out))


def workload_facts(kind: str, obj: Mapping[str, Any] | None) -> dict[str, Any]:
    if obj is None:
        return {"found": False, "kind": kind, "labels": {}, "template_labels": {},
                "images": []}
    spec = obj.get("spec") or {}
    template = spec.get("template") or {} if kind != "Pod" else {}
    pod_spec = spec if kind == "Pod" else (template.get("spec") or {})
    return {"found": True, "kind": kind,
            "labels": dict((obj.get("metadata") or {}).get("labels") or {}),
            "template_labels": dict((template.get("metadata") or {}).get("labels") or {}),
            "images": _images(pod_spec)}


def plan_nodes(plan: Plan) -> list[str]:
    names = {s.name for s in plan.steps if s.kind == "Node"}
    if plan.target.kind == "Node":
        names.add(plan.target.name)
    for key in ("node", "hostname"):
        value = plan.params.get(key)
        if isinstance(value, str) and value:
            names.add(value)
    return sorted(names)


def plan_workloads(plan: Plan) -> list[tuple[str, str, str]]:
    refs = {(s.kind, s.namespace, s.name) for s in plan.steps if s.kind in WORKLOAD_KINDS}
    if plan.target.kind in WORKLOAD_KINDS:
        refs.add((plan.target.kind, plan.target.namespace, plan.target.name))
    workload = plan.params.get("workload")
    if isinstance(workload, Mapping) and workload.get("kind") in WORKLOAD_KINDS:
        refs.add((str(workload["kind"]), str(workload.get("namespace") or ""),
                  str(workload.get("name") or "")))
    return sorted(refs)


def _get(facts: ClusterFacts, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """An object, or None when it is absent or may not be read (403): the
    policy then refuses for want of facts. Temporary errors propagate (retry)."""
    try:
        return facts.get(kind, namespace, name)
    except ActionFailed:
        return None


def target_facts(plan: Plan, facts: ClusterFacts) -> dict[str, Any]:
    """``input.facts`` for the policy; reads only the objects the plan names."""
    nodes = {name: node_facts(_get(facts, "Node", "", name)) for name in plan_nodes(plan)}
    namespaces = {s.namespace for s in plan.steps if s.namespace}
    if plan.target.namespace:
        namespaces.add(plan.target.namespace)
    ns_facts = {}
    for ns in sorted(namespaces):
        obj = _get(facts, "Namespace", "", ns)
        ns_facts[ns] = {"found": obj is not None,
                        "labels": dict(((obj or {}).get("metadata") or {}).get("labels") or {})}
    workloads = {}
    if plan.action in RESTART_ACTIONS:  # a drain's evictions: the node is what is judged
        for kind, ns, name in plan_workloads(plan):
            workloads[f"{kind}/{ns}/{name}"] = workload_facts(kind, _get(facts, kind, ns, name))
    return {"nodes": nodes, "namespaces": ns_facts, "workloads": workloads}
