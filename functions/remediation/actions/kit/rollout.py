"""Whether a rollout is complete, as ``kubectl rollout status`` judges it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..base import Verdict


def whole(value: Any, default: int = 0) -> int:
    """An integer field, or ``default`` when it is not one (booleans are not)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def rollout_status(obj: Mapping[str, Any]) -> Verdict:
    """``kubectl rollout status`` for a Deployment or StatefulSet."""
    kind = obj.get("kind", "")
    meta, spec, status = (obj.get("metadata") or {}, obj.get("spec") or {},
                          obj.get("status") or {})
    name = f"{kind}/{meta.get('namespace', '')}/{meta.get('name', '')}"
    want = whole(spec.get("replicas"), 1)
    if whole(status.get("observedGeneration")) < whole(meta.get("generation"), 0):
        return Verdict(False, detail=f"{name}: waiting for the controller to observe "
                                     f"generation {meta.get('generation')}")
    if kind == "Deployment":
        if spec.get("paused"):
            return Verdict(False, True, f"{name} is paused: the rollout will not progress")
        for cond in status.get("conditions") or []:
            if (isinstance(cond, Mapping) and cond.get("type") == "Progressing"
                    and cond.get("reason") == "ProgressDeadlineExceeded"):
                return Verdict(False, True, f"{name} exceeded its progress deadline")
        updated = whole(status.get("updatedReplicas"))
        total = whole(status.get("replicas"), updated)
        available = whole(status.get("availableReplicas"))
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
        ready, updated = whole(status.get("readyReplicas")), whole(status.get("updatedReplicas"))
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
    ready = whole(status.get("readyReplicas"))
    if ready < want:
        return Verdict(False, detail=f"{name}: {ready} of {want} replicas ready")
    return Verdict(True, detail=f"{name}: {ready}/{want} ready")
