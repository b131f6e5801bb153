"""Builders for small GPU fleets as plain dicts (what the API serves), for the
pure planner tests of drain-gpu-node, rebalance-gpu-pods, scale-engine and
the escalation ladder."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from remediation.actions.base import PlanContext
from remediation.facts import SnapshotFacts
from remediation.model import TYPE_ALERT_FIRING, TYPE_ALERT_RESOLVED, TYPE_SPLUNK_RESULT, Signal

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
NS = "llm-serving"


def node(name: str, gpus: int = 8, *, unschedulable: bool = False, ready: bool = True,
         annotations: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
         taints: Sequence[Mapping[str, str]] = (), boot_id: str = "boot-1",
         resource_version: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name,
                            "labels": {"kubernetes.io/hostname": name, **(labels or {})}}
    if annotations:
        meta["annotations"] = dict(annotations)
    if resource_version:
        meta["resourceVersion"] = resource_version
    spec: dict[str, Any] = {}
    if unschedulable:
        spec["unschedulable"] = True
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    res = {"cpu": "96", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": spec,
            "status": {"allocatable": res, "capacity": res,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "nodeInfo": {"bootID": boot_id}}}


def deployment(name: str, replicas: int = 1, gpus: int = 1, *, ns: str = NS,
               ready: int | None = None, annotations: Mapping[str, str] | None = None,
               labels: Mapping[str, str] | None = None,
               template_spec: Mapping[str, Any] | None = None,
               paused: bool = False) -> list[dict[str, Any]]:
    """A Deployment and its ReplicaSet ``<name>-rs``."""
    sel = {"app": name}
    tspec = dict(template_spec or {"containers": [{"name": "engine", "resources": {
        "requests": {"nvidia.com/gpu": str(gpus)}, "limits": {"nvidia.com/gpu": str(gpus)}}}]})
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}",
                        "labels": {**sel, **(labels or {})},
                        "annotations": dict(annotations or {})},
           "spec": {"replicas": replicas, "selector": {"matchLabels": sel},
                    "template": {"metadata": {"labels": sel}, "spec": tspec},
                    **({"paused": True} if paused else {})},
           "status": {"replicas": replicas,
                      "readyReplicas": replicas if ready is None else ready}}
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": f"{name}-rs", "namespace": ns, "uid": f"uid-{name}-rs",
                       "labels": sel,
                       "ownerReferences": [{"kind": "Deployment", "name": name,
                                            "uid": f"uid-{name}", "controller": True}]},
          "spec": {"replicas": replicas, "selector": {"matchLabels": sel}}}
    return [dep, rs]


def pod(name: str, node_name: str | None, gpus: int = 1, *, ns: str = NS, app: str = "",
        owner: tuple[str, str] | None = ("ReplicaSet", ""), ready: bool = True,
        phase: str = "Running", annotations: Mapping[str, str] | None = None,
        empty_dir: bool = False, spec_extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A pod; ``app`` names its Deployment (owner ``<app>-rs``) unless ``owner``
    says otherwise (``None``: no controller)."""
    app = app or name.rsplit("-", 1)[0]
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{name}",
                            "labels": {"app": app}}
    if owner is not None:
        kind, oname = owner
        meta["ownerReferences"] = [{"kind": kind, "name": oname or f"{app}-rs",
                                    "uid": f"uid-{oname or app}", "controller": True}]
    if annotations:
        meta["annotations"] = dict(annotations)
    res = {"requests": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
    spec: dict[str, Any] = {"containers": [{"name": "engine", "resources": res}],
                            **(spec_extra or {})}
    if node_name:
        spec["nodeName"] = node_name
    if empty_dir:
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": {"phase": phase,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pdb(name: str, app: str, *, ns: str = NS, min_available: Any = None,
        max_unavailable: Any = None, status_allowed: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": app}}}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    obj: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                           "metadata": {"name": name, "namespace": ns}, "spec": spec}
    if status_allowed is not None:
        obj["status"] = {"disruptionsAllowed": status_allowed}
    return obj


def fleet(*objs: Any) -> SnapshotFacts:
    flat: list[dict[str, Any]] = []
    for o in objs:
        flat.extend(o if isinstance(o, list) else [o])
    return SnapshotFacts(flat)


def alert(name: str = "GPUXidError", status: str = "firing", *,
          annotations: Mapping[str, str] | None = None, fingerprint: str = "f00d",
          starts_at: str = "2026-11-01T11:00:00Z", ends_at: str = "",
          **labels: str) -> Signal:
    data: dict[str, Any] = {"alert": {"status": status, "labels": dict(labels),
                                      "startsAt": starts_at,
                                      "endsAt": ends_at or "0001-01-01T00:00:00Z"}}
    return Signal(event_id=f"e-{fingerprint}-{status}", source="/alertmanager/remediation",
                  type=TYPE_ALERT_RESOLVED if status == "resolved" else TYPE_ALERT_FIRING,
                  status=status, name=name, labels=MappingProxyType(dict(labels)),
                  annotations=MappingProxyType(dict(annotations or {})), starts_at=starts_at,
                  fingerprint=fingerprint, origin="alertmanager",
                  data=MappingProxyType(data))


def splunk(message: Any, *, host: str = "gpu-1", raw: str = "",
           search: str = "GPU Xid error", sid: str = "sid-1") -> Signal:
    result: dict[str, Any] = {"host": host, "message": message}
    if raw:
        result["_raw"] = raw
    return Signal(event_id=f"{sid}:abc", source="/splunk/search", type=TYPE_SPLUNK_RESULT,
                  status="firing", name=search, labels=MappingProxyType({"host": host}),
                  origin="splunk", data=MappingProxyType({"result": result, "sid": sid}))


def ctx(sig: Signal, facts: SnapshotFacts, *, now: datetime = NOW,
        history: Callable[[str, float], Sequence[Mapping[str, Any]]] | None = None,
        **options: Any) -> PlanContext:
    return PlanContext(sig, facts, now, MappingProxyType(options),
                       history or (lambda target, window: ()))
