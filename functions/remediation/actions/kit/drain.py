"""Drains, as ``kubectl drain`` does them: which GPU pods of a node are
evicted (DaemonSet and mirror pods skipped, unmanaged and local-data pods
only with consent), the eviction step, and the whole cordon (+ taint, +
reboot mark) and drain plan that drain-gpu-node and the restart-engine
escalation ladder both make."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ...facts import ClusterFacts, owner_of
from ...model import TYPE_SPLUNK_RESULT, NoPlan, ObjectRef, Plan, Step, freeze
from ..base import PlanContext
from .gpu import cordon_counts, gpu_request, is_finished
from .options import flag, number

#: ownership of a cordon: the incidents (comma-separated) we cordoned the node for
CORDONED_BY = "inferenceremediation.io/cordoned-by"
CORDON_REASON = "inferenceremediation.io/cordon-reason"
#: the workloads (comma-separated) an escalation drained the node for
DRAINED_FOR = "inferenceremediation.io/drained-for"
REBOOT_LABEL = "inferenceremediation.io/reboot-required"
REBOOT_REASON = "inferenceremediation.io/reboot-reason"
REBOOT_BOOT_ID = "inferenceremediation.io/reboot-requested-boot-id"
XID_TAINT_KEY = "nvidia.com/gpu-xid"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
EVICT_DEADLINE_SECONDS = 120


def pod_key(pod: Mapping[str, Any]) -> str:
    return f"{pod['metadata'].get('namespace', '')}/{pod['metadata']['name']}"


def evict_step(pod: Mapping[str, Any], why: str, options: Mapping[str, Any]) -> Step:
    """An eviction with a UID precondition (a StatefulSet's replacement pod
    with the same name is never hit). Grace period: the pod's own unless
    ``options.grace_period_seconds``."""
    body: dict[str, Any] = {}
    if uid := pod["metadata"].get("uid"):
        body["preconditions"] = {"uid": uid}
    if "grace_period_seconds" in options:
        body["gracePeriodSeconds"] = int(number(options, "grace_period_seconds", 30))
    return Step("evict", "Pod", pod["metadata"].get("namespace", ""), pod["metadata"]["name"],
                why, freeze(body))


@dataclasses.dataclass
class DrainSelection:
    evict: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    unmanaged: list[str]
    local_data: list[str]


def drain_selection(facts: ClusterFacts, node_name: str,
                    options: Mapping[str, Any]) -> DrainSelection:
    """The node's GPU pods to evict, as ``kubectl drain`` chooses them."""
    sel = DrainSelection([], [], [], [])
    consent_unmanaged = flag(options, "delete_unmanaged")
    consent_local = flag(options, "delete_local_data")
    leave_ns = {str(n) for n in options.get("skip_namespaces") or ()}
    for pod in facts.list("Pod", None, node=node_name):
        if is_finished(pod) or gpu_request(pod.get("spec")) <= 0:
            continue  # finished pods hold nothing; non-GPU pods stay
        meta, key = pod["metadata"], pod_key(pod)
        owner = owner_of(pod)
        local = any("emptyDir" in v for v in (pod.get("spec") or {}).get("volumes") or [])
        reason = ""
        if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
            reason = "mirror (static) pod: the kubelet owns it, as kubectl drain skips it"
        elif owner is not None and owner.get("kind") == "DaemonSet":
            reason = "DaemonSet pod: ignored, as kubectl drain does"
        elif meta.get("deletionTimestamp"):
            reason = "already terminating"
        elif meta.get("namespace", "") in leave_ns:
            reason = "its namespace is in skip_namespaces: left to its owners"
        elif owner is None and not consent_unmanaged:
            reason = "no controller would recreate it: needs delete_unmanaged consent"
        elif local and not consent_local:
            reason = "emptyDir data would be lost: needs delete_local_data consent"
        if reason:
            sel.skipped.append({"pod": key, "reason": reason})
            continue
        sel.evict.append(pod)
        if owner is None:
            sel.unmanaged.append(key)
        if local:
            sel.local_data.append(key)
    return sel


def owners_of_cordon(node: Mapping[str, Any]) -> list[str]:
    value = ((node.get("metadata") or {}).get("annotations") or {}).get(CORDONED_BY, "")
    return [v for v in str(value).split(",") if v]


def plan_node_drain(ctx: PlanContext, node: Mapping[str, Any], *, function: str, action: str,
                    why: str, key: str, taint: Mapping[str, str] | None = None,
                    reboot_reason: str = "", annotations: Mapping[str, str] | None = None,
                    params: Mapping[str, Any] | None = None) -> Plan | NoPlan:
    """Cordon (+ taint, + reboot mark) the node in one merge patch, then evict
    its GPU pods. NoPlan when someone else cordoned it, or all is done."""
    incident = ctx.signal.incident
    name = node["metadata"]["name"]
    ref = ObjectRef("Node", "", name)
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    owners = owners_of_cordon(node)
    if spec.get("unschedulable") and not owners:
        return NoPlan(function, (f"{ref} was cordoned by someone else (no {CORDONED_BY} "
                                 "annotation): not touching it",), ref)
    have_ann = meta.get("annotations") or {}
    new_ann: dict[str, Any] = {}
    # A Splunk result never resolves, and each scheduled run of the search is a
    # new "incident" for the same log line: it takes ownership of an uncordoned
    # node, but never piles onto a cordon we already hold.
    splunk_repeat = bool(owners) and ctx.signal.type == TYPE_SPLUNK_RESULT
    if incident not in owners and not splunk_repeat:
        new_ann[CORDONED_BY] = ",".join(owners + [incident])
    if not owners:
        new_ann[CORDON_REASON] = why[:500]
    for k, v in (annotations or {}).items():
        if have_ann.get(k) != v:
            new_ann[k] = v
    patch: dict[str, Any] = {"metadata": {}, "spec": {}}
    if not spec.get("unschedulable"):
        patch["spec"]["unschedulable"] = True
    taints = list(spec.get("taints") or [])
    if taint and not any(t.get("key") == taint["key"] and t.get("effect") == taint["effect"]
                         for t in taints):
        patch["spec"]["taints"] = taints + [dict(taint)]
    labels = meta.get("labels") or {}
    if reboot_reason and labels.get(REBOOT_LABEL) != "true":
        patch["metadata"]["labels"] = {REBOOT_LABEL: "true"}
        new_ann[REBOOT_REASON] = reboot_reason[:500]
        new_ann[REBOOT_BOOT_ID] = ((node.get("status") or {}).get("nodeInfo") or {}).get(
            "bootID", "")
    if new_ann:
        patch["metadata"]["annotations"] = new_ann
    steps: list[Step] = []
    changes = bool(new_ann or patch["spec"] or patch["metadata"].get("labels"))
    if changes:
        if meta.get("resourceVersion"):
            patch["metadata"]["resourceVersion"] = meta["resourceVersion"]
        if not patch["metadata"]:
            del patch["metadata"]
        if not patch["spec"]:
            del patch["spec"]
        steps.append(Step("patch", "Node", "", name,
                          f"{why}: cordon{' + taint' if 'taints' in patch.get('spec', {}) else ''}"
                          f"{' + mark reboot' if reboot_reason else ''} (kubectl drain order)",
                          freeze(patch), patch_type="merge"))
    sel = drain_selection(ctx.facts, name, ctx.options)
    steps += [evict_step(p, f"{why}: drain GPU pod off {name}", ctx.options) for p in sel.evict]
    if not steps:
        return NoPlan(function, (f"{ref} is already cordoned by us and has no GPU pods left "
                                 "to evict",), ref, already_done=True)
    evicted = [pod_key(p) for p in sel.evict]
    reasons = [f"{'cordon' if changes else 'keep cordon on'} {ref}"
               + (f", taint {taint['key']}={taint['value']}:{taint['effect']}" if taint else "")
               + (", mark reboot-required" if reboot_reason else ""),
               f"evict {len(evicted)} GPU pod(s): {', '.join(evicted) or 'none'}"]
    reasons += [f"left {s['pod']}: {s['reason']}" for s in sel.skipped]
    all_params: dict[str, Any] = {
        "node": name, "incident": incident, "reason": why,
        "cordon": True, "already_cordoned_by_us": bool(owners),
        "taint": f"{taint['key']}={taint['value']}:{taint['effect']}" if taint else "",
        "mark_reboot": bool(reboot_reason),
        **cordon_counts(ctx.facts, name, cordon=True),
        "evict_count": len(evicted), "evict_pods": evicted,
        "evict_namespaces": sorted({k.split("/", 1)[0] for k in evicted}),
        "skipped_pods": sel.skipped,
        "delete_unmanaged": flag(ctx.options, "delete_unmanaged"),
        "delete_local_data": flag(ctx.options, "delete_local_data"),
        "unmanaged_pods": sel.unmanaged, "local_data_pods": sel.local_data,
        "evict_deadline_seconds": number(ctx.options, "evict_deadline_seconds",
                                          EVICT_DEADLINE_SECONDS),
        **dict(params or {}),
    }
    return Plan(function, action, ref, tuple(steps), tuple(reasons), key, freeze(all_params))
