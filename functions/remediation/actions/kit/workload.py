"""The workload an alert is about: from a Deployment or StatefulSet label,
from a pod (Pod -> ReplicaSet -> Deployment, or StatefulSet), or from a
KServe InferenceService (its predictor Deployment)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...events.names import check_name
from ...facts import ClusterFacts, owner_of
from ...model import NoPlan, ObjectRef
from ..base import PlanContext

#: where an alert names the namespace, the pod (Prometheus renames clashing target labels)
NAMESPACE_LABELS = ("namespace", "exported_namespace", "kubernetes_namespace")
POD_LABELS = ("pod", "exported_pod", "kubernetes_pod_name", "pod_name")
#: KServe's label on the Deployments of an InferenceService
KSERVE_LABEL = "serving.kserve.io/inferenceservice"


def workload_for_pod(facts: ClusterFacts, pod: Mapping[str, Any], *,
                     function: str) -> ObjectRef | NoPlan:
    """The controller a restart of ``pod`` goes through; NoPlan (for
    ``function``) when there is none this project restarts."""
    ns = pod["metadata"].get("namespace", "")
    pod_ref = ObjectRef("Pod", ns, pod["metadata"]["name"])
    owner = owner_of(pod)
    if owner is None:
        return NoPlan(function, (f"{pod_ref} has no controller; a restart would lose it",),
                      pod_ref)
    if owner.get("kind") == "StatefulSet":
        return ObjectRef("StatefulSet", ns, owner["name"])
    if owner.get("kind") == "ReplicaSet":
        rs = facts.get("ReplicaSet", ns, owner["name"])
        if rs is None:
            return NoPlan(function, (f"ReplicaSet/{ns}/{owner['name']} owning {pod_ref} not "
                                     "found",), pod_ref)
        rs_owner = owner_of(rs)
        if rs_owner is None or rs_owner.get("kind") != "Deployment":
            return NoPlan(function, (f"ReplicaSet/{ns}/{owner['name']} is not owned by a "
                                     "Deployment",), pod_ref)
        return ObjectRef("Deployment", ns, rs_owner["name"])
    return NoPlan(function, (f"{pod_ref} is owned by a {owner.get('kind')}, which this "
                             "function does not restart",), pod_ref)


def workload_for_gone_pod(facts: ClusterFacts, ns: str, pod_name: str, *,
                          function: str) -> ObjectRef | NoPlan:
    """A Deployment's pod that is gone (a rollout replaced it, so a re-sent
    alert names a pod that no longer exists) is still traced to its
    Deployment: the pod is named ``<replicaset>-<suffix>``, and the old
    ReplicaSet (``<deployment>-<pod-template-hash>``) is kept by the
    Deployment's revision history. The planner then sees the incident's mark
    on the pod template and answers 'already done' instead of 'not found'."""
    gone = NoPlan(function, (f"Pod/{ns}/{pod_name} not found (already replaced?)",),
                  ObjectRef("Pod", ns, pod_name))
    rs_name = pod_name.rpartition("-")[0]
    rs = facts.get("ReplicaSet", ns, rs_name) if rs_name else None
    if rs is None:
        return gone
    owner = owner_of(rs)
    template_hash = (rs["metadata"].get("labels") or {}).get("pod-template-hash", "")
    if (owner is None or owner.get("kind") != "Deployment" or not template_hash
            or rs_name != f"{owner['name']}-{template_hash}"):
        return gone
    return ObjectRef("Deployment", ns, owner["name"])


def resolve_workload(ctx: PlanContext, ns: str, *, function: str
                     ) -> tuple[ObjectRef | NoPlan, Mapping[str, Any] | None]:
    """The workload the signal names in ``ns``, and the pod when it named one."""
    s = ctx.signal
    if deployment := s.label("deployment"):
        return ObjectRef("Deployment", ns, check_name(deployment, "labels.deployment")), None
    if statefulset := s.label("statefulset"):
        return ObjectRef("StatefulSet", ns, check_name(statefulset, "labels.statefulset")), None
    if pod_name := s.label(*POD_LABELS):
        check_name(pod_name, "labels.pod")
        pod = ctx.facts.get("Pod", ns, pod_name)
        if pod is None:
            return workload_for_gone_pod(ctx.facts, ns, pod_name, function=function), None
        return workload_for_pod(ctx.facts, pod, function=function), pod
    if isvc := s.label("inferenceservice", "isvc"):
        check_name(isvc, "labels.inferenceservice")
        found = ctx.facts.list("Deployment", ns, labels={KSERVE_LABEL: isvc})
        if len(found) != 1:
            return NoPlan(function, (f"InferenceService/{ns}/{isvc}: expected one predictor "
                                     f"Deployment, found {len(found)}",)), None
        return ObjectRef("Deployment", ns, found[0]["metadata"]["name"]), None
    return NoPlan(function, ("alert names no pod, deployment, statefulset or "
                             "inferenceservice",)), None
