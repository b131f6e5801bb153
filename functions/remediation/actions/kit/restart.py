"""Restart a workload exactly as ``kubectl rollout restart`` does it (a
strategic merge patch of ``kubectl.kubernetes.io/restartedAt`` into the pod
template, with this project's incident mark), or delete the single wedged
pod (``mode: delete-pod``, UID precondition). Used by restart-engine, and by
drain-gpu-node for the Xids that only need the app on the GPU restarted."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ...events.names import check_namespace
from ...model import NoPlan, ObjectRef, Plan, Step, freeze
from ..base import INCIDENT_ANNOTATION, RESTARTED_AT_ANNOTATION, PlanContext, remediation_key
from .workload import NAMESPACE_LABELS, resolve_workload

#: a ladder above the plain restart: (ctx, function, workload, pod, key) ->
#: the escalated plan, or None for the plain restart
Escalation = Callable[[PlanContext, str, ObjectRef, "Mapping[str, Any] | None", str],
                      "Plan | NoPlan | None"]


def plan_workload_restart(ctx: PlanContext, *, function: str,
                          escalate: Escalation | None = None) -> Plan | NoPlan:
    """The restart of the workload the signal names (``ctx.options.mode``:
    ``rollout``, the default, or ``delete-pod``); ``escalate`` is asked first."""
    s = ctx.signal
    if s.status != "firing":
        return NoPlan(function, ("resolved alert: nothing to restart",))
    raw_ns = s.label(*NAMESPACE_LABELS)
    if not raw_ns:
        return NoPlan(function, ("alert names no namespace",))
    ns = check_namespace(raw_ns, "labels.namespace")
    resolved, pod = resolve_workload(ctx, ns, function=function)
    if isinstance(resolved, NoPlan):
        return resolved
    target = resolved
    mode = str(ctx.options.get("mode", "rollout"))
    key = remediation_key(function, s, target)
    if escalate is not None:
        escalated = escalate(ctx, function, target, pod, key)  # a target that keeps failing
        if escalated is not None:
            return escalated
    why = f"{s.name or 'alert'} ({s.origin}) reports a wedged engine"

    if mode == "delete-pod" and pod is not None:
        pod_ref = ObjectRef("Pod", ns, pod["metadata"]["name"])
        uid = pod["metadata"].get("uid")
        body: dict[str, Any] = {"gracePeriodSeconds": 30}
        if uid:
            body["preconditions"] = {"uid": uid}
        step = Step("delete", "Pod", ns, pod_ref.name, f"{why}: delete the wedged pod",
                    freeze(body))
        return Plan(function, "delete-pod", pod_ref, (step,),
                    (f"delete {pod_ref}; its {target.kind} {target.name} replaces it",),
                    key, freeze({"mode": mode, "workload": target.as_dict()}))

    workload = ctx.facts.get(target.kind, ns, target.name)
    if workload is None:
        return NoPlan(function, (f"{target} not found",), target)
    if target.kind == "Deployment" and (workload.get("spec") or {}).get("paused"):
        return NoPlan(function, (f"can't restart paused deployment {target.name} (run rollout "
                                 "resume first)",), target)
    template_ann = ((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}
    if (template_ann.get("annotations") or {}).get(INCIDENT_ANNOTATION) == s.incident:
        return NoPlan(function, (f"{target} was already restarted for this incident "
                                 "(its pod template carries the incident mark)",), target,
                      already_done=True)
    patch = {"spec": {"template": {"metadata": {"annotations": {
        RESTARTED_AT_ANNOTATION: ctx.now_rfc3339,
        INCIDENT_ANNOTATION: s.incident,
    }}}}}
    step = Step("patch", target.kind, ns, target.name,
                f"{why}: rollout restart, as kubectl rollout restart does", freeze(patch))
    return Plan(function, "rollout-restart", target, (step,),
                (f"rollout restart {target}",), key,
                freeze({"mode": "rollout", "incident": s.incident}))
