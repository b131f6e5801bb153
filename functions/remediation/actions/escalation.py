"""Escalation ladder for an engine that keeps failing: restart, then
reschedule its pod elsewhere, then drain its node.

Used by the restart-engine planner (pure, like every planner): before it
plans a restart it asks :func:`escalate`, which counts the EARLIER incidents
remediated for the same workload within ``options.escalation_window_seconds``
(default 3600) from ``ctx.history(str(workload), window)``: ledger records
whose status is ``applied``, ``partial`` or ``claimed`` (an action taken, in
part, or in flight),
whose action is on the ladder (the actions restart-engine declares with a
``ladder`` rung), and which belong to another incident
(another remediation key; a redelivery of this incident never climbs). An
incident whose fix failed verification (``verification == "failed"`` on its
record) counts twice. With ``n`` counted this way:

- ``n < escalation_reschedule_after`` (default 2): no escalation, restart;
- ``n < escalation_drain_after`` (default 3): ``reschedule-pod``;
- otherwise: ``cordon-drain`` of the node the failing pod runs on.

``options.escalation: false`` turns the ladder off. Each rung is a Plan with
its own action, judged by policy on its own. A rung that cannot be taken (no
failing pod or node known, no other node with room for the pod, a paused
workload, the pod template already carrying this incident's mark) falls back
to the restart the planner would have made. Restarts made in ``delete-pod``
mode are recorded on the Pod, not the workload, so they do not count.

Reschedule (approach): one strategic-merge patch of the workload's pod
template adding, to every ``nodeSelectorTerm`` of its required node affinity,
``kubernetes.io/hostname NotIn [<failing node>]`` (the full new terms list:
that list has no merge key, so it is replaced; existing terms keep their
other expressions) plus the incident mark and an
``inferenceremediation.io/avoid-nodes`` annotation saying why, then an
eviction (UID precondition) of the workload's pods on that node. For a
Deployment the template change itself rolls every replica (as the restart
rung did) and keeps them all off the failing node; the eviction moves the
failing pod at once instead of at its turn (a 404, already replaced by the
rollout, counts as done; a PDB makes it wait). For a StatefulSet with
``OnDelete`` the eviction is what moves it. The avoidance stays until a human
removes it: the annotation names the nodes. Tainting the node instead would
push every other workload away from a node that only this one fails on.

Drain: cordon + evict the GPU pods of the failing pod's node (the kit's
drain, as drain-gpu-node makes it: never a node someone else cordoned), annotated
``inferenceremediation.io/drained-for=<workload>``. The ladder stops there:
if another node is still cordoned with that annotation for this workload,
the failures follow the workload, not a node, and the answer is NoPlan
("needs a human") rather than draining node after node. Nodes drained by the
ladder are not released automatically (the engine alert's resolution is not
a GPU-health signal): ``kubectl uncordon`` them.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ..facts import selector_matches
from ..model import NoPlan, ObjectRef, Plan, Step, freeze
from ..records import COUNTED
from .base import INCIDENT_ANNOTATION, PlanContext, remediation_key
from .kit.drain import DRAINED_FOR, EVICT_DEADLINE_SECONDS, evict_step, plan_node_drain, pod_key
from .kit.gpu import GpuPlacement, gpu_request, is_finished
from .kit.nodes import node_from_signal
from .kit.options import flag, number

AVOID_NODES_ANNOTATION = "inferenceremediation.io/avoid-nodes"
HOSTNAME_LABEL = "kubernetes.io/hostname"
WINDOW_SECONDS = 3600
RESCHEDULE_AFTER = 2
DRAIN_AFTER = 3


@dataclass(frozen=True)
class Rung:
    name: str  # "restart" | "reschedule" | "drain"
    earlier: int  # earlier incidents remediated for the target within the window
    window: float


def choose_rung(ctx: PlanContext, target: ObjectRef, key: str, *,
                ladder: Collection[str]) -> Rung:
    """Which rung this incident is on (pure: history comes from ``ctx``).
    ``ladder``: the actions on the ladder (the remediation declares them)."""
    opts = ctx.options
    window = number(opts, "escalation_window_seconds", WINDOW_SECONDS)
    reschedule_after = int(number(opts, "escalation_reschedule_after", RESCHEDULE_AFTER))
    drain_after = int(number(opts, "escalation_drain_after", DRAIN_AFTER))
    incidents: set[str] = set()
    unverified: set[str] = set()
    for i, rec in enumerate(ctx.history(str(target), window)):
        if rec.status not in COUNTED or rec.action not in ladder:
            continue
        incident = rec.incident or rec.key or f"record-{i}"
        if rec.key == key or incident == ctx.signal.incident:
            continue
        incidents.add(incident)
        if rec.verification == "failed":
            unverified.add(incident)
    # A fix whose verification failed (the rollout never completed, the pod
    # never came back) did not even take: it counts twice, so the ladder
    # climbs past a rung that is not working.
    n = len(incidents) + len(unverified)
    name = "drain" if n >= drain_after else "reschedule" if n >= reschedule_after else "restart"
    return Rung(name, n, window)


def escalate(ctx: PlanContext, function: str, target: ObjectRef,
             pod: Mapping[str, Any] | None, key: str, *,
             ladder: Collection[str]) -> Plan | NoPlan | None:
    """The escalated plan for ``target``, or None: plan the plain restart."""
    opts = ctx.options
    if "escalation" in opts and not flag(opts, "escalation"):
        return None
    rung = choose_rung(ctx, target, key, ladder=ladder)
    if rung.name == "restart":
        return None
    workload = ctx.facts.get(target.kind, target.namespace, target.name)
    if workload is None or (workload.get("spec") or {}).get("paused"):
        return None  # the restart path reports it
    template = (workload.get("spec") or {}).get("template") or {}
    if ((template.get("metadata") or {}).get("annotations") or {}).get(
            INCIDENT_ANNOTATION) == ctx.signal.incident:
        return None  # already acted on for this incident: the restart path says so
    node_name = ((pod or {}).get("spec") or {}).get("nodeName") or node_from_signal(
        ctx.signal)
    node = ctx.facts.get("Node", "", node_name) if node_name else None
    if node is None:
        return None
    why = (f"{ctx.signal.name or 'alert'}: {target} failed again after {rung.earlier} "
           f"remediation(s) in {int(rung.window)}s")
    params = {"incident": ctx.signal.incident, "workload": target.as_dict(),
              "rung": rung.name, "earlier_failures": rung.earlier,
              "escalation_window_seconds": rung.window, "node": node_name}
    if rung.name == "drain":
        return _drain(ctx, function, target, node, why, params)
    return _reschedule(ctx, function, target, workload, node, why, key, params)


def _avoid_terms(template_spec: Mapping[str, Any], hostname: str) -> list[dict[str, Any]]:
    required = (((template_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = copy.deepcopy(list(required.get("nodeSelectorTerms") or [])) or [{}]
    for term in terms:
        exprs = term.setdefault("matchExpressions", [])
        ours = next((e for e in exprs if e.get("key") == HOSTNAME_LABEL
                     and e.get("operator") == "NotIn"), None)
        if ours is None:
            exprs.append({"key": HOSTNAME_LABEL, "operator": "NotIn", "values": [hostname]})
        elif hostname not in (ours.get("values") or []):
            ours["values"] = list(ours.get("values") or []) + [hostname]
    return terms


def _reschedule(ctx: PlanContext, function: str, target: ObjectRef,
                workload: Mapping[str, Any], node: Mapping[str, Any], why: str, key: str,
                params: dict[str, Any]) -> Plan | None:
    node_name = node["metadata"]["name"]
    hostname = ((node["metadata"].get("labels") or {}).get(HOSTNAME_LABEL) or node_name)
    template = copy.deepcopy((workload.get("spec") or {}).get("template") or {})
    tspec = template.setdefault("spec", {})
    terms = _avoid_terms(tspec, hostname)
    tspec.setdefault("affinity", {}).setdefault("nodeAffinity", {})[
        "requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}
    fits_on = GpuPlacement(ctx.facts, exclude=(node_name,)).place(tspec)
    if gpu_request(tspec) > 0 and not fits_on:
        return None  # nowhere to go: moving it would only leave it Pending
    selector = (workload.get("spec") or {}).get("selector")
    pods = [p for p in ctx.facts.list("Pod", target.namespace, node=node_name)
            if selector_matches(selector, (p["metadata"].get("labels") or {}))
            and not is_finished(p)]
    avoid = [a for a in ((template.get("metadata") or {}).get("annotations") or {})
             .get(AVOID_NODES_ANNOTATION, "").split(",") if a]
    patch = {"spec": {"template": {
        "metadata": {"annotations": {
            AVOID_NODES_ANNOTATION: ",".join(sorted(set(avoid + [hostname]))),
            INCIDENT_ANNOTATION: ctx.signal.incident}},
        "spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}},
    }}}
    steps = [Step("patch", target.kind, target.namespace, target.name,
                  f"{why}: keep its pods off {hostname} (node affinity NotIn)", freeze(patch))]
    steps += [evict_step(p, f"{why}: move it off {node_name}", ctx.options) for p in pods]
    evicted = [pod_key(p) for p in pods]
    return Plan(function, "reschedule-pod", target, tuple(steps),
                (f"escalate: {target} avoids node {hostname} from now on",
                 f"evict {', '.join(evicted) or 'no pod (already gone)'} from {node_name}"
                 + (f"; a GPU fits on {fits_on}" if fits_on else "")),
                key, freeze({**params, "hostname": hostname, "evict_pods": evicted,
                             "evict_count": len(evicted), "fits_on": fits_on,
                             "evict_deadline_seconds": number(
                                 ctx.options, "evict_deadline_seconds",
                                 EVICT_DEADLINE_SECONDS)}))


def _drain(ctx: PlanContext, function: str, target: ObjectRef, node: Mapping[str, Any],
           why: str, params: dict[str, Any]) -> Plan | NoPlan:
    node_name = node["metadata"]["name"]
    for other in ctx.facts.list("Node"):
        drained_for = ((other["metadata"].get("annotations") or {})
                       .get(DRAINED_FOR, "").split(","))
        if (other["metadata"]["name"] != node_name and str(target) in drained_for
                and (other.get("spec") or {}).get("unschedulable")):
            reason = (f"escalation exhausted: {other['metadata']['name']} is still cordoned "
                      f"for {target}, which fails again on {node_name}: the fault follows "
                      "the workload, not a node; needs a human")
            return NoPlan(function, (reason,), target)
    have = [a for a in ((node["metadata"].get("annotations") or {})
                        .get(DRAINED_FOR, "").split(",")) if a]
    ref = ObjectRef("Node", "", node_name)
    return plan_node_drain(
        ctx, node, function=function, action="cordon-drain", why=why,
        key=remediation_key(function, ctx.signal, ref),
        annotations={DRAINED_FOR: ",".join(sorted(set(have + [str(target)])))},
        params=params)
