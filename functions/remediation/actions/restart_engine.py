"""Restart a wedged inference engine (vLLM, TGI, Triton, KServe).

A hung engine keeps answering /health while generating nothing; the fix is a
restart. The alert names a namespace and a pod or workload; the planner
resolves the owning workload (Pod -> ReplicaSet -> Deployment, or
StatefulSet; KServe InferenceService -> its predictor Deployment) and plans a
rollout restart exactly as ``kubectl rollout restart`` does it: a strategic
merge patch of ``kubectl.kubernetes.io/restartedAt`` into the pod template.
With ``mode: delete-pod`` it deletes the single wedged pod instead (UID
precondition, so a replacement pod with the same name is never hit).
"""

from __future__ import annotations

from typing import Any
from collections.abc import Mapping

from ..events.names import check_name, check_namespace
from ..facts import owner_of
from ..model import NoPlan, ObjectRef, Plan, Step, freeze
from .base import (
    INCIDENT_ANNOTATION,
    RESTARTED_AT_ANNOTATION,
    PlanContext,
    Remediation,
    remediation_key,
)
from .escalation import escalate

NAME = "restart-engine"
NAMESPACE_LABELS = ("namespace", "exported_namespace", "kubernetes_namespace")
POD_LABELS = ("pod", "exported_pod", "kubernetes_pod_name", "pod_name")
KSERVE_LABEL = "serving.kserve.io/inferenceservice"


def _no(reason: str, target: ObjectRef | None = None) -> NoPlan:
    return NoPlan(NAME, (reason,), target)


def _workload_for_pod(ctx: PlanContext, pod: Mapping[str, Any]) -> ObjectRef | NoPlan:
    ns = pod["metadata"].get("namespace", "")
    pod_ref = ObjectRef("Pod", ns, pod["metadata"]["name"])
    owner = owner_of(pod)
    if owner is None:
        return _no(f"{pod_ref} has no controller; a restart would lose it", pod_ref)
    if owner.get("kind") == "StatefulSet":
        return ObjectRef("StatefulSet", ns, owner["name"])
    if owner.get("kind") == "ReplicaSet":
        rs = ctx.facts.get("ReplicaSet", ns, owner["name"])
        if rs is None:
            return _no(f"ReplicaSet/{ns}/{owner['name']} owning {pod_ref} not found", pod_ref)
        rs_owner = owner_of(rs)
        if rs_owner is None or rs_owner.get("kind") != "Deployment":
            return _no(f"ReplicaSet/{ns}/{owner['name']} is not owned by a Deployment", pod_ref)
        return ObjectRef("Deployment", ns, rs_owner["name"])
    return _no(f"{pod_ref} is owned by a {owner.get('kind')}, which this function does not restart",
               pod_ref)


def _workload_for_gone_pod(ctx: PlanContext, ns: str, pod_name: str) -> ObjectRef | NoPlan:
    """A Deployment's pod that is gone (a rollout replaced it, so a re-sent
    alert names a pod that no longer exists) is still traced to its
    Deployment: the pod is named ``<replicaset>-<suffix>``, and the old
    ReplicaSet (``<deployment>-<pod-template-hash>``) is kept by the
    Deployment's revision history. The planner then sees the incident's mark
    on the pod template and answers 'already done' instead of 'not found'."""
    gone = _no(f"Pod/{ns}/{pod_name} not found (already replaced?)", ObjectRef("Pod", ns, pod_name))
    rs_name = pod_name.rpartition("-")[0]
    rs = ctx.facts.get("ReplicaSet", ns, rs_name) if rs_name else None
    if rs is None:
        return gone
    owner = owner_of(rs)
    template_hash = (rs["metadata"].get("labels") or {}).get("pod-template-hash", "")
    if (owner is None or owner.get("kind") != "Deployment" or not template_hash
            or rs_name != f"{owner['name']}-{template_hash}"):
        return gone
    return ObjectRef("Deployment", ns, owner["name"])


def _resolve(ctx: PlanContext, ns: str) -> tuple[ObjectRef | NoPlan, Mapping[str, Any] | None]:
    """The workload to restart, and the pod when the alert named one."""
    s = ctx.signal
    if deployment := s.label("deployment"):
        return ObjectRef("Deployment", ns, check_name(deployment, "labels.deployment")), None
    if statefulset := s.label("statefulset"):
        return ObjectRef("StatefulSet", ns, check_name(statefulset, "labels.statefulset")), None
    if pod_name := s.label(*POD_LABELS):
        check_name(pod_name, "labels.pod")
        pod = ctx.facts.get("Pod", ns, pod_name)
        if pod is None:
            return _workload_for_gone_pod(ctx, ns, pod_name), None
        return _workload_for_pod(ctx, pod), pod
    if isvc := s.label("inferenceservice", "isvc"):
        check_name(isvc, "labels.inferenceservice")
        found = ctx.facts.list("Deployment", ns, labels={KSERVE_LABEL: isvc})
        if len(found) != 1:
            return _no(f"InferenceService/{ns}/{isvc}: expected one predictor Deployment, "
                       f"found {len(found)}"), None
        return ObjectRef("Deployment", ns, found[0]["metadata"]["name"]), None
    return _no("alert names no pod, deployment, statefulset or inferenceservice"), None


def plan_restart(ctx: PlanContext) -> Plan | NoPlan:
    s = ctx.signal
    if s.status != "firing":
        return _no("resolved alert: nothing to restart")
    raw_ns = s.label(*NAMESPACE_LABELS)
    if not raw_ns:
        return _no("alert names no namespace")
    ns = check_namespace(raw_ns, "labels.namespace")
    resolved, pod = _resolve(ctx, ns)
    if isinstance(resolved, NoPlan):
        return resolved
    target = resolved
    mode = str(ctx.options.get("mode", "rollout"))
    key = remediation_key(NAME, s, target)
    escalated = escalate(ctx, NAME, target, pod, key)  # a target that keeps failing
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
        return Plan(NAME, "delete-pod", pod_ref, (step,),
                    (f"delete {pod_ref}; its {target.kind} {target.name} replaces it",),
                    key, freeze({"mode": mode, "workload": target.as_dict()}))

    workload = ctx.facts.get(target.kind, ns, target.name)
    if workload is None:
        return _no(f"{target} not found", target)
    if target.kind == "Deployment" and (workload.get("spec") or {}).get("paused"):
        return _no(f"can't restart paused deployment {target.name} (run rollout resume first)",
                   target)
    template_ann = ((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}
    if (template_ann.get("annotations") or {}).get(INCIDENT_ANNOTATION) == s.incident:
        return NoPlan(NAME, (f"{target} was already restarted for this incident "
                             "(its pod template carries the incident mark)",), target,
                      already_done=True)
    patch = {"spec": {"template": {"metadata": {"annotations": {
        RESTARTED_AT_ANNOTATION: ctx.now_rfc3339,
        INCIDENT_ANNOTATION: s.incident,
    }}}}}
    step = Step("patch", target.kind, ns, target.name,
                f"{why}: rollout restart, as kubectl rollout restart does", freeze(patch))
    return Plan(NAME, "rollout-restart", target, (step,),
                (f"rollout restart {target}",), key,
                freeze({"mode": "rollout", "incident": s.incident}))


REMEDIATION = Remediation(
    name=NAME,
    summary="Restart a wedged vLLM/TGI/Triton/KServe engine (rollout restart or pod delete)",
    planner=plan_restart,
)
