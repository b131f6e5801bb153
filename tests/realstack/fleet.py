"""Workloads and alerts for the realstack tier, and waits on the real API.

Every object here is made through the real API server and placed by the real
scheduler on kwok's fake nodes; every assertion helper reads state back from
the API server.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from tests.realstack.components import ControlPlane

ENGINE_IMAGE = "vllm/vllm-openai:v0.11.0"


def engine_template(app: str, gpus: int = 1) -> dict[str, Any]:
    resources = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {}}
    if gpus:
        resources["limits"]["nvidia.com/gpu"] = str(gpus)
        resources["requests"]["nvidia.com/gpu"] = str(gpus)
    return {
        "metadata": {"labels": {"app": app, "app.kubernetes.io/name": "vllm"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "engine", "image": ENGINE_IMAGE, "resources": resources}],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                             "effect": "NoSchedule"}],
        },
    }


def deployment(ns: str, name: str, replicas: int = 1, gpus: int = 1,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations or {},
                     "labels": {"app": name, "app.kubernetes.io/name": "vllm"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "strategy": {"type": "RollingUpdate",
                              "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                 "template": engine_template(name, gpus)},
    }


def pdb(ns: str, name: str, app: str, min_available: int) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": app}}}}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0,
             interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def pods(plane: ControlPlane, ns: str, app: str) -> list[dict[str, Any]]:
    items = plane.read(f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3D{app}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))


def ready_pods(plane: ControlPlane, ns: str, app: str, n: int,
               timeout: float = 60.0) -> list[dict[str, Any]]:
    seen: list[Any] = []

    def check() -> list[dict[str, Any]] | None:
        ps = pods(plane, ns, app)
        seen[:] = [(p["metadata"]["name"], p["spec"].get("nodeName"),
                    p.get("status", {}).get("phase"), ready(p)) for p in ps]
        return ps if len(ps) == n and all(ready(p) for p in ps) else None

    try:
        return wait_for(f"{n} ready pods of {ns}/{app}", check, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; pods seen last: {seen}") from None


def rollout_complete(dep: dict[str, Any]) -> bool:
    """What ``kubectl rollout status`` judges a Deployment rolled out by."""
    spec, status = dep["spec"], dep.get("status", {})
    if status.get("observedGeneration", 0) < dep["metadata"]["generation"]:
        return False
    want = spec.get("replicas", 1)
    return (status.get("updatedReplicas", 0) == want
            and status.get("replicas", 0) == want
            and status.get("availableReplicas", 0) == want)


def alert(alertname: str, labels: dict[str, str], status: str = "firing",
          fingerprint: str = "", starts_at: str = "2026-12-01T10:00:00Z") -> dict[str, Any]:
    """An Alertmanager v4 webhook body with one alert, as Alertmanager posts it."""
    full = {"alertname": alertname, "severity": "critical", **labels}
    return {
        "version": "4", "groupKey": f'{{}}:{{alertname="{alertname}"}}', "truncatedAlerts": 0,
        "status": status, "receiver": "remediation", "groupLabels": {"alertname": alertname},
        "commonLabels": full, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": status, "labels": full, "annotations": {"summary": alertname},
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-01T10:30:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": fingerprint or hashlib.sha256(repr(sorted(full.items())).encode()).hexdigest()[:16],
        }],
    }
