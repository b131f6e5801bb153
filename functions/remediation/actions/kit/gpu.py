"""GPU capacity and placement: what a node has, what a pod asks for, where
it would fit. Reads plain objects as the API serves them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...facts import ClusterFacts

GPU = "nvidia.com/gpu"


def quantity(value: Any) -> int:
    """An extended-resource quantity (whole numbers: "8", 8, "2k") as int."""
    text = str(value if value is not None else "0").strip()
    scale = {"k": 1000, "M": 1000**2, "G": 1000**3}.get(text[-1:], 1)
    try:
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        return 0


def gpu_request(pod_spec: Mapping[str, Any] | None) -> int:
    """GPUs a pod (spec or template spec) requests: limits stand in for
    requests (extended resources), init containers count as the scheduler does."""
    def of(c: Mapping[str, Any]) -> int:
        res = c.get("resources") or {}
        got = (res.get("requests") or {}).get(GPU)
        return quantity(got if got is not None else (res.get("limits") or {}).get(GPU))

    spec = pod_spec or {}
    main = sum(of(c) for c in spec.get("containers") or [])
    init = max((of(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


def is_finished(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def node_gpus(node: Mapping[str, Any], field: str = "allocatable") -> int:
    return quantity(((node.get("status") or {}).get(field) or {}).get(GPU))


def is_gpu_node(node: Mapping[str, Any]) -> bool:
    return node_gpus(node) > 0 or node_gpus(node, "capacity") > 0


def node_ready(node: Mapping[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (
                taint.get("value") or ""):
            return True
    return False


def node_term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    fields = {"metadata.name": node["metadata"]["name"]}
    for source, have in (("matchExpressions", labels), ("matchFields", fields)):
        for e in term.get(source) or []:
            key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
            present = key in have
            ok = {"In": present and have.get(key) in values,
                  "NotIn": not present or have.get(key) not in values,
                  "Exists": present, "DoesNotExist": not present}.get(op, True)
            if not ok:
                return False
    return True


def node_accepts(node: Mapping[str, Any], pod_spec: Mapping[str, Any] | None) -> bool:
    """Would the scheduler consider ``node`` for this pod (spec or template)?
    Schedulable, Ready, taints tolerated, nodeSelector and required node
    affinity satisfied. Resources are checked by :class:`GpuPlacement`."""
    spec = pod_spec or {}
    if (node.get("spec") or {}).get("unschedulable") or not node_ready(node):
        return False
    tolerations = spec.get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(
                tolerations, taint):
            return False
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(node_term_matches(t, node) for t in terms)


class GpuPlacement:
    """Free GPUs per node (allocatable minus the requests of the node's
    non-finished pods) and a first-fit simulation, so two pods never claim
    the same free GPU. Pending GPU pods are placed first: they will take
    capacity before anything we add."""

    def __init__(self, facts: ClusterFacts, *, exclude: Sequence[str] = ()) -> None:
        self.nodes = [n for n in facts.list("Node")
                      if is_gpu_node(n) and n["metadata"]["name"] not in exclude]
        used: dict[str, int] = {}
        pending: list[dict[str, Any]] = []
        for pod in facts.list("Pod"):
            if is_finished(pod) or (gpus := gpu_request(pod.get("spec"))) <= 0:
                continue
            where = (pod.get("spec") or {}).get("nodeName")
            if where:
                used[where] = used.get(where, 0) + gpus
            else:
                pending.append(pod)
        self.free = {n["metadata"]["name"]: node_gpus(n) - used.get(n["metadata"]["name"], 0)
                     for n in self.nodes}
        for pod in pending:
            self.place(pod.get("spec"))

    def place(self, pod_spec: Mapping[str, Any] | None) -> str:
        """Claim GPUs on the first node that fits; the node name, or ""."""
        need = gpu_request(pod_spec)
        for node in self.nodes:
            name = str(node["metadata"]["name"])
            if self.free[name] >= need and node_accepts(node, pod_spec):
                self.free[name] -= need
                return name
        return ""

    def total_free(self, pod_spec: Mapping[str, Any] | None = None) -> int:
        return sum(max(0, f) for n, f in self.free.items()
                   if pod_spec is None or node_accepts(self._node(n), pod_spec))

    def _node(self, name: str) -> Mapping[str, Any]:
        return next(n for n in self.nodes if n["metadata"]["name"] == name)


def cordon_counts(facts: ClusterFacts, node_name: str, *, cordon: bool) -> dict[str, int]:
    """Circuit-breaker facts: GPU nodes, cordoned now, cordoned after the plan."""
    gpu_nodes = [n for n in facts.list("Node") if is_gpu_node(n)]
    cordoned = {n["metadata"]["name"] for n in gpu_nodes
                if (n.get("spec") or {}).get("unschedulable")}
    after = set(cordoned)
    if cordon and any(n["metadata"]["name"] == node_name for n in gpu_nodes):
        after.add(node_name)
    return {"gpu_nodes": len(gpu_nodes), "cordoned_gpu_nodes": len(cordoned),
            "cordoned_gpu_nodes_after": len(after)}
