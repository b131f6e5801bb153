"""Restart a wedged inference engine (vLLM, TGI, Triton, KServe).

A hung engine keeps answering /health while generating nothing; the fix is a
restart. The alert names a namespace and a pod or workload; the planner
resolves the owning workload (Pod -> ReplicaSet -> Deployment, or
StatefulSet; KServe InferenceService -> its predictor Deployment) and plans a
rollout restart exactly as ``kubectl rollout restart`` does it: a strategic
merge patch of ``kubectl.kubernetes.io/restartedAt`` into the pod template.
With ``mode: delete-pod`` it deletes the single wedged pod instead (UID
precondition, so a replacement pod with the same name is never hit). An
engine that keeps failing climbs the escalation ladder (:mod:`.escalation`):
reschedule its pod off the node, then drain the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import NoPlan, ObjectRef, Plan
from .base import ActionSpec, PlanContext, Remediation, Rule, VaultRole
from .escalation import escalate
from .kit import checks
from .kit.restart import plan_workload_restart
from .kit.workload import KSERVE_LABEL, NAMESPACE_LABELS, POD_LABELS

__all__ = ["KSERVE_LABEL", "LADDER_ACTIONS", "NAME", "NAMESPACE_LABELS", "POD_LABELS",
           "REMEDIATION", "plan_restart"]

NAME = "restart-engine"


def _escalate(ctx: PlanContext, function: str, target: ObjectRef,
              pod: Mapping[str, Any] | None, key: str) -> Plan | NoPlan | None:
    return escalate(ctx, function, target, pod, key, ladder=LADDER_ACTIONS)


def plan_restart(ctx: PlanContext) -> Plan | NoPlan:
    return plan_workload_restart(ctx, function=NAME, escalate=_escalate)


_POLICY_LIMITS = {"max_per_target_in_window": 3, "max_per_window": 20, "approval": False}

REMEDIATION = Remediation(
    name=NAME,
    summary="Restart a wedged vLLM/TGI/Triton/KServe engine (rollout restart or pod delete)",
    purpose="Restart a hung LLM-serving engine: rollout restart of its "
            "Deployment/StatefulSet, or delete one pod.",
    planner=plan_restart,
    actions=(
        ActionSpec("rollout-restart", checks.rollout_complete, ladder=0),
        ActionSpec("delete-pod", checks.pod_replaced, ladder=0),
        ActionSpec("reschedule-pod", checks.rescheduled, ladder=1),
        ActionSpec("cordon-drain", checks.node_drained, ladder=2),
    ),
    labels=(NAMESPACE_LABELS, POD_LABELS, ("deployment",), ("statefulset",),
            ("inferenceservice", "isvc")),
    rbac=(
        Rule(("",), ("pods",), ("get", "list", "delete")),
        Rule(("apps",), ("replicasets",), ("get", "list")),
        Rule(("apps",), ("deployments", "statefulsets"), ("get", "list", "patch")),
        Rule(("",), ("namespaces",), ("get",)),
        Rule(("",), ("events",), ("create",)),
    ),
    vault=VaultRole(rules=(
        Rule(("",), ("pods",), ("get", "list", "delete")),
        Rule(("apps",), ("replicasets",), ("get", "list")),
        Rule(("apps",), ("deployments", "statefulsets"), ("get", "list", "patch")),
        Rule(("",), ("events",), ("create",)),
    )),
    policy_data={
        "rollout-restart": {"kinds": ["Deployment", "StatefulSet"], "verbs": ["patch"],
                            "max_steps": 1, **_POLICY_LIMITS},
        "delete-pod": {"kinds": ["Pod"], "verbs": ["delete"], "max_steps": 1, **_POLICY_LIMITS},
        "reschedule-pod": {"kinds": ["Deployment", "StatefulSet", "Pod"],
                           "verbs": ["patch", "evict", "delete"], "max_steps": 10,
                           "max_per_target_in_window": 2, "max_per_window": 10,
                           "max_evictions": 8, "approval": False},
    },
)

#: the actions on the escalation ladder: the ones declared with a rung
LADDER_ACTIONS = frozenset(a.name for a in REMEDIATION.actions if a.ladder is not None)
