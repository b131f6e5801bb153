"""Act on an NVIDIA Xid GPU fault: restart the app, drain the node, or mark it
for reboot; undo our own cordon when the fault has cleared.

Inputs (what this planner reads):

- a dcgm-exporter alert on ``DCGM_FI_DEV_XID_ERRORS`` (e.g. ``GPUXidError``):
  the node from label ``kubernetes_node``, else ``node``, else ``Hostname``
  (lower-cased; must be a valid node name); the Xid from label ``xid``, else
  label ``value``, else annotation ``value``, else annotation ``xid`` (a bare
  integer such as ``79``; ``79.0`` as ``{{ $value }}`` may render it is
  accepted); ``gpu``, ``UUID`` and ``modelName`` are copied into the plan's
  params. With dcgm-exporter's pod mapping on, ``exported_namespace`` +
  ``exported_pod`` (what Prometheus renames them to when the exporter's own
  target labels clash), else ``namespace`` + ``pod``, name the pod on that
  GPU: the first pair naming a GPU pod on that node is used.
- a Splunk kernel-log result (search e.g. ``GPU Xid error``): the node from
  field ``host`` (else ``kubernetes_node``/``node``), the Xid parsed from
  ``message`` (multivalue allowed) or ``_raw`` with a strict regex over
  ``NVRM: Xid (PCI:0000:3b:00): 79, ...``. Several Xids: the most severe wins.
  Xid 0 means "no error" and is ignored.

What to do is DATA: ``defaults/xid.yaml`` (Xid -> ``restart-app`` | ``drain``
| ``drain-and-reboot`` | ``ignore``), replaced with ``options.xid_table``
(inline, same shape) or ``options.xid_table_file`` (a path, read once and
cached per path).

Actions (plan.action, for policy):

- ``rollout-restart`` / ``delete-pod``: restart the workload using that GPU,
  through the same restart as restart-engine (:mod:`.kit.restart`: same
  resolution, paused check, incident mark; ``options.restart_mode`` picks
  rollout | delete-pod);
- ``cordon-drain``: one merge patch of the Node (``spec.unschedulable: true``,
  the full new ``spec.taints`` list with ``nvidia.com/gpu-xid=<xid>:NoSchedule``,
  the ownership annotation ``inferenceremediation.io/cordoned-by=<incident>``
  and the node's ``resourceVersion`` so a concurrent change is never
  overwritten), then an eviction per GPU pod on the node, as ``kubectl
  drain`` does: DaemonSet and mirror pods (and pods in
  ``options.skip_namespaces``) are skipped, pods without a
  controller (``options.delete_unmanaged``) or with emptyDir
  (``options.delete_local_data``) only with consent, else left and listed;
- ``mark-reboot``: the same, plus label ``inferenceremediation.io/reboot-required=true``
  and annotations with the reason and the node's current ``bootID``.
- ``uncordon`` (recovery, below).

A node someone else cordoned (unschedulable without our annotation) is never
touched: NoPlan. A second incident on a node we already cordoned is appended
to the annotation (comma-separated), so one incident's recovery does not undo
another's cordon. (A Splunk result only takes ownership of a node we have not
cordoned yet: every scheduled run of the search is a new event for the same
log line, and none of them ever resolves.)

Recovery (``handles_resolved``): the resolved alert of the same incident
(same fingerprint + startsAt, hence same ``Signal.incident``) removes that
incident from the node's annotation once the alert has been resolved for
``options.healthy_delay_seconds`` (default 300; the alert's ``endsAt``
against ``ctx.now``); when none is left it uncordons, removes OUR taint only
(key ``nvidia.com/gpu-xid``) and our annotations. Ownership is checked FIRST:
a node we never cordoned for this incident is answered at once (NoPlan,
``skipped``), whatever the delay. A node of ours resolved too recently gives
NoPlan "healthy for Xs, waiting for Ys" with ``due_in``: the pipeline records
the resolution and answers ``scheduled`` at once (Alertmanager does not
retry, and nothing depends on its ``repeat_interval``), and the sweep
(``remediate sweep``, run every minute by a Knative PingSource) plans it
again once due. A node marked reboot-required is only released once its
``status.nodeInfo.bootID`` differs from the one recorded when it was marked
(it did reboot). Splunk results never resolve: cordons they caused are
released by a human (``kubectl uncordon`` + remove the taint).

Circuit-breaker facts in params: ``gpu_nodes`` (nodes with nvidia.com/gpu
capacity or allocatable > 0: a node whose GPUs all went unhealthy still
counts), ``cordoned_gpu_nodes`` (of those, unschedulable now) and
``cordoned_gpu_nodes_after`` (after this plan).

The cordon + drain itself (and which pods a drain evicts) is the kit's
(:mod:`.kit.drain`), shared with the restart-engine escalation ladder.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..events.binding import parse_time
from ..events.names import check_name
from ..facts import ClusterFacts, owner_of
from ..model import NoPlan, ObjectRef, Plan, Signal, Step, freeze, thaw
from .base import (
    ActionSpec,
    FleetLimit,
    PlanContext,
    Remediation,
    Rule,
    VaultRole,
    remediation_key,
)
from .kit import checks
from .kit.drain import (
    CORDON_REASON,
    CORDONED_BY,
    DRAINED_FOR,
    REBOOT_BOOT_ID,
    REBOOT_LABEL,
    REBOOT_REASON,
    UNSCHEDULABLE_TAINT,
    XID_TAINT_KEY,
    owners_of_cordon,
    plan_node_drain,
    pod_key,
)
from .kit.gpu import GPU, cordon_counts, gpu_request, is_finished, is_gpu_node
from .kit.nodes import ALERT_NODE_LABELS, SPLUNK_NODE_LABELS, node_from_signal
from .kit.options import number
from .kit.restart import plan_workload_restart
from .kit.workload import workload_for_pod

__all__ = ["CORDON_REASON", "CORDONED_BY", "DRAINED_FOR", "NAME", "REBOOT_BOOT_ID",
           "REBOOT_LABEL", "REBOOT_REASON", "REMEDIATION", "XID_TAINT_KEY",
           "plan_drain_gpu_node", "plan_recovery", "xid_table", "xids_from_signal",
           "xids_from_text"]

NAME = "drain-gpu-node"
POD_MAPPING = (("exported_namespace", "exported_pod"), ("namespace", "pod"))
XID_ACTIONS = ("ignore", "restart-app", "drain", "drain-and-reboot")  # by severity
HEALTHY_DELAY_SECONDS = 300

#: the kernel's Xid line: "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, ..."
XID_LINE = re.compile(
    r"NVRM: Xid \(PCI:(?P<pci>[0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}(?:\.[0-7])?)\): "
    r"(?P<xid>[0-9]{1,4})(?=,|\s|$)")
_XID_VALUE = re.compile(r"[0-9]{1,4}(?:\.0+)?")


def _no(reason: str, target: ObjectRef | None = None) -> NoPlan:
    return NoPlan(NAME, (reason,), target)


# -- Xid classification ------------------------------------------------------------

def _table_from(data: Any, where: str) -> tuple[dict[int, str], str]:
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{where}: expected a mapping with 'actions'", where)
    table: dict[int, str] = {}
    for action, xids in (data.get("actions") or {}).items():
        if action not in XID_ACTIONS or not isinstance(xids, (list, tuple)):
            raise InvalidInput(f"{where}.actions: {action!r} is not one of {XID_ACTIONS} "
                               "with a list of Xids", where)
        for x in xids:
            if isinstance(x, bool) or not str(x).isdigit():
                raise InvalidInput(f"{where}.actions.{action}: {x!r} is not an Xid", where)
            table[int(x)] = action
    unknown = str(data.get("unknown", "ignore"))
    if unknown not in XID_ACTIONS:
        raise InvalidInput(f"{where}.unknown: {unknown!r} is not one of {XID_ACTIONS}", where)
    return table, unknown


@functools.lru_cache(maxsize=8)
def _table_file(path: str) -> tuple[dict[int, str], str]:
    import yaml

    try:
        text = (Path(path).read_text("utf-8") if path else resources.files("remediation")
                .joinpath("defaults/xid.yaml").read_text("utf-8"))
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"options.xid_table_file: cannot load {path}: {exc}",
                           "options.xid_table_file") from exc
    return _table_from(data, "options.xid_table_file" if path else "defaults/xid.yaml")


def xid_table(options: Mapping[str, Any]) -> tuple[dict[int, str], str]:
    """(Xid -> action, action for unknown Xids) from the options or defaults."""
    if "xid_table" in options:
        return _table_from(thaw(options["xid_table"]), "options.xid_table")
    return _table_file(str(options.get("xid_table_file") or ""))


def xids_from_text(texts: Iterable[str]) -> list[int]:
    return [int(m.group("xid")) for t in texts for m in XID_LINE.finditer(t)]


def xids_from_signal(signal: Signal) -> tuple[list[int], str]:
    """The Xid values an event carries, and where they came from."""
    for where, source, key in (("label", signal.labels, "xid"),
                               ("label", signal.labels, "value"),
                               ("annotation", signal.annotations, "value"),
                               ("annotation", signal.annotations, "xid")):
        raw = source.get(key)
        if raw:
            if not _XID_VALUE.fullmatch(raw.strip()):
                raise InvalidInput(f"{where} {key}: not an Xid number: {raw[:40]!r}",
                                   f"{where}s.{key}")
            return [int(float(raw))], f"{where} {key}"
    result = signal.data.get("result") or {}
    texts: list[str] = []
    for field in ("message", "_raw"):
        value = result.get(field)
        texts += [value] if isinstance(value, str) else [v for v in value or ()
                                                        if isinstance(v, str)]
    return xids_from_text(texts), "kernel log line"


# -- the planner -------------------------------------------------------------------

def _restart_app(ctx: PlanContext, node_name: str, xid: int, facts_params: dict[str, Any],
                 why: str) -> Plan | NoPlan:
    s, node_ref = ctx.signal, ObjectRef("Node", "", node_name)
    pod: dict[str, Any] | None = None
    for ns_label, pod_label in POD_MAPPING:
        ns, name = s.labels.get(ns_label), s.labels.get(pod_label)
        if ns and name:
            found = ctx.facts.get("Pod", ns, check_name(name, f"labels.{pod_label}"))
            if found and gpu_request(found.get("spec")) > 0 and \
                    (found.get("spec") or {}).get("nodeName") == node_name:
                pod = found
                break
    candidates: list[str] = []
    if pod is None:
        workloads: dict[str, dict[str, Any]] = {}
        for p in ctx.facts.list("Pod", None, node=node_name):
            if is_finished(p) or gpu_request(p.get("spec")) <= 0:
                continue
            owner = owner_of(p)
            if owner is not None and owner.get("kind") == "DaemonSet":
                continue
            w = workload_for_pod(ctx.facts, p, function=NAME)
            workloads.setdefault(str(w.target if isinstance(w, NoPlan) else w), p)
        candidates = sorted(workloads)
        if not candidates:
            return _no(f"Xid {xid} on {node_ref}: no GPU pod runs there to restart", node_ref)
        if len(candidates) > 1:
            return _no(f"Xid {xid} on {node_ref}: the alert has no pod mapping and "
                       f"{len(candidates)} GPU workloads run there ({', '.join(candidates)}); "
                       "cannot tell which one uses GPU "
                       f"{s.labels.get('gpu', '?')} (enable dcgm-exporter pod mapping)",
                       node_ref)
        pod = workloads[candidates[0]]
    labels = {"namespace": pod["metadata"]["namespace"], "pod": pod["metadata"]["name"]}
    inner = PlanContext(dataclasses.replace(s, labels=freeze(labels)), ctx.facts, ctx.now,
                        freeze({"mode": ctx.options.get("restart_mode", "rollout")}),
                        ctx.history)
    planned = plan_workload_restart(inner, function=NAME)  # no escalation ladder here
    if isinstance(planned, NoPlan):
        return NoPlan(NAME, planned.reasons, planned.target, already_done=planned.already_done)
    return Plan(NAME, planned.action, planned.target, planned.steps,
                (why,) + planned.reasons, remediation_key(NAME, s, planned.target),
                freeze({**thaw(planned.params), **facts_params,
                        "pod": pod_key(pod), "pod_mapping": not candidates}))


def plan_drain_gpu_node(ctx: PlanContext) -> Plan | NoPlan:
    s = ctx.signal
    if s.status == "resolved":
        return plan_recovery(ctx)
    node_name = node_from_signal(s)
    if not node_name:
        return _no("event names no node (labels kubernetes_node, node, Hostname or host)")
    xids, source = xids_from_signal(s)
    xids = [x for x in xids if x != 0]
    if not xids:
        return _no(f"event carries no Xid (read the {source}); Xid 0 means no error")
    table, unknown = xid_table(ctx.options)
    ranked = sorted(((XID_ACTIONS.index(table.get(x, unknown)), x) for x in xids), reverse=True)
    rank, xid = ranked[0]
    action = XID_ACTIONS[rank]
    node_ref = ObjectRef("Node", "", node_name)
    if action == "ignore":
        known = "classified ignore" if xid in table else "not in the Xid table (unknown)"
        return _no(f"Xid {xid} on {node_ref}: {known}: ignored", node_ref)
    node = ctx.facts.get("Node", "", node_name)
    if node is None:
        return _no(f"{node_ref} not found", node_ref)
    if not is_gpu_node(node):
        # an Xid comes from a GPU: the alert names the wrong node (often
        # dcgm-exporter's Hostname left as the exporter pod's name)
        return _no(f"Xid {xid} on {node_ref}, which has no {GPU} capacity: not a GPU node, "
                   "nothing to drain (check the alert's node label)", node_ref)
    facts_params = {"xid": xid, "xids": sorted(set(xids)), "xid_action": action,
                    "xid_source": source, "node": node_name,
                    "gpu": s.labels.get("gpu", ""), "uuid": s.labels.get("UUID", ""),
                    "model": s.labels.get("modelName", "")}
    why = f"Xid {xid} ({action}) on {node_name} from {s.name or s.origin}"
    if action == "restart-app":
        return _restart_app(ctx, node_name, xid, facts_params, why)
    taint = {"key": XID_TAINT_KEY, "value": str(xid), "effect": "NoSchedule"}
    reboot = f"Xid {xid}: GPU needs a node reboot (incident {s.incident})" \
        if action == "drain-and-reboot" else ""
    return plan_node_drain(ctx, node, function=NAME,
                           action="mark-reboot" if reboot else "cordon-drain", why=why,
                           key=remediation_key(NAME, s, node_ref), taint=taint,
                           reboot_reason=reboot, params=facts_params)


# -- recovery ----------------------------------------------------------------------

def plan_recovery(ctx: PlanContext) -> Plan | NoPlan:
    """Resolved alert: release OUR cordon of the node once healthy long enough."""
    s = ctx.signal
    node_name = node_from_signal(s)
    if not node_name:
        return _no("resolved event names no node")
    ref = ObjectRef("Node", "", node_name)
    alert = s.data.get("alert") or {}
    ends_at = parse_time(alert.get("endsAt")) or parse_time(s.time)
    if ends_at is None or ends_at.year < 2:
        return _no(f"resolved alert for {ref} has no endsAt: cannot tell how long it is healthy",
                   ref)
    delay = number(ctx.options, "healthy_delay_seconds", HEALTHY_DELAY_SECONDS)
    healthy = (ctx.now - ends_at).total_seconds()
    # Ownership first: a node we did not cordon for this incident is answered
    # at once, never after the healthy delay.
    node = ctx.facts.get("Node", "", node_name)
    if node is None:
        return _no(f"{ref} not found", ref)
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    owners = owners_of_cordon(node)
    if not owners:
        if spec.get("unschedulable"):
            return _no(f"{ref} was cordoned by someone else (no {CORDONED_BY} annotation): "
                       "not touching it", ref)
        return _no(f"{ref} carries no cordon of ours: nothing to undo", ref)
    if s.incident not in owners:
        return _no(f"{ref} is cordoned by us for other incident(s) ({', '.join(owners)}), "
                   "not for this one: leaving it", ref)
    if healthy < delay:
        return NoPlan(NAME, (f"{ref} healthy for {max(0, int(healthy))}s, waiting for "
                             f"{int(delay)}s before uncordoning",), ref,
                      due_in=max(1.0, delay - healthy))
    remaining = [o for o in owners if o != s.incident]
    key = remediation_key(f"{NAME}/recover", s, ref)
    params: dict[str, Any] = {"node": node_name, "incident": s.incident,
                              "healthy_for_seconds": int(healthy),
                              "healthy_delay_seconds": delay, "remaining_incidents": remaining}
    rv = {"resourceVersion": meta["resourceVersion"]} if meta.get("resourceVersion") else {}
    if remaining:
        patch = {"metadata": {**rv, "annotations": {CORDONED_BY: ",".join(remaining)}}}
        step = Step("patch", "Node", "", node_name,
                    f"incident {s.incident} resolved; cordon kept for {', '.join(remaining)}",
                    freeze(patch), patch_type="merge")
        return Plan(NAME, "uncordon", ref, (step,),
                    (f"keep {ref} cordoned: still held for incident(s) {', '.join(remaining)}",),
                    key, freeze({**params, "uncordon": False, "remove_taint": False,
                                 **cordon_counts(ctx.facts, node_name, cordon=True)}))
    labels, ann = meta.get("labels") or {}, meta.get("annotations") or {}
    if labels.get(REBOOT_LABEL) == "true":
        asked = ann.get(REBOOT_BOOT_ID, "")
        now_boot = ((node.get("status") or {}).get("nodeInfo") or {}).get("bootID", "")
        if not asked or not now_boot or asked == now_boot:
            return _no(f"{ref} is marked {REBOOT_LABEL}=true and has not rebooted since "
                       "(bootID unchanged): waiting for the reboot", ref)
    taints = list(spec.get("taints") or [])
    # our taint goes; so does the node controller's cordon taint (it mirrors
    # spec.unschedulable, which we clear); every other taint stays.
    kept = [t for t in taints if t.get("key") not in (XID_TAINT_KEY, UNSCHEDULABLE_TAINT)]
    patch_spec: dict[str, Any] = {"unschedulable": None}
    if len(kept) != len(taints):
        patch_spec["taints"] = kept or None
    drop = {k: None for k in (CORDONED_BY, CORDON_REASON, DRAINED_FOR, REBOOT_REASON,
                              REBOOT_BOOT_ID) if k in ann}
    patch_meta: dict[str, Any] = {**rv, "annotations": drop}
    if REBOOT_LABEL in labels:
        patch_meta["labels"] = {REBOOT_LABEL: None}
    step = Step("patch", "Node", "", node_name,
                f"{s.name or 'alert'} resolved {int(healthy)}s ago: uncordon, remove our taint "
                "and marks", freeze({"metadata": patch_meta, "spec": patch_spec}),
                patch_type="merge")
    ours = any(t.get("key") == XID_TAINT_KEY for t in taints)
    counts = cordon_counts(ctx.facts, node_name, cordon=False)
    if spec.get("unschedulable"):
        counts["cordoned_gpu_nodes_after"] = max(0, counts["cordoned_gpu_nodes"] - 1)
    return Plan(NAME, "uncordon", ref, (step,),
                (f"uncordon {ref} (cordoned by us for incident {s.incident})"
                 + (f", remove taint {XID_TAINT_KEY}" if ours else ""),),
                key, freeze({**params, "uncordon": True, "remove_taint": ours,
                             **counts}))


_DRAIN_POLICY = {"kinds": ["Node", "Pod"], "verbs": ["patch", "evict"], "max_steps": 120,
                 "max_per_target_in_window": 1, "max_evictions": 110, "approval": False}

def _adds_a_cordon(plan: Plan) -> bool:
    """The plan cordons a GPU node that is not cordoned (by us) yet: its first
    step is that Node's patch, and the circuit breaker counts it."""
    first = plan.steps[0] if plan.steps else None
    return (plan.params.get("cordon") is True and not plan.params.get("already_cordoned_by_us")
            and first is not None and first.verb == "patch" and first.kind == "Node")


def _cordon_counts_now(facts: ClusterFacts, plan: Plan) -> Mapping[str, Any]:
    return cordon_counts(facts, str(plan.params.get("node") or plan.target.name), cordon=True)


#: the circuit breaker's count: one new cordon judged at a time, on a fresh count
GPU_CORDONS = FleetLimit("gpu-cordons", applies=_adds_a_cordon, refresh=_cordon_counts_now)


REMEDIATION = Remediation(
    name=NAME,
    summary="NVIDIA Xid fault: restart the app, cordon+taint+drain the node, or mark it for "
            "reboot (classification table as data); uncordon our own cordon when resolved",
    purpose="Cordon a failed GPU node and evict its pods (cluster-scoped: ClusterRoleBinding).",
    planner=plan_drain_gpu_node,
    handles_resolved=True,
    fleet_limit=GPU_CORDONS,
    actions=(
        ActionSpec("cordon-drain", checks.node_drained),
        ActionSpec("mark-reboot", checks.node_drained),
        ActionSpec("uncordon", checks.node_released),
        # Xids that only need the app on that GPU restarted (kit.restart)
        ActionSpec("rollout-restart", checks.rollout_complete),
        ActionSpec("delete-pod", checks.pod_replaced),
    ),
    labels=(ALERT_NODE_LABELS, SPLUNK_NODE_LABELS, ("xid", "value"), ("gpu",), ("UUID",),
            ("modelName",), ("exported_namespace", "namespace"), ("exported_pod", "pod")),
    rbac=(
        Rule(("",), ("nodes",), ("get", "list", "patch")),
        Rule(("",), ("pods",), ("get", "list", "delete"),
             why="delete: an application Xid's restart in delete-pod mode"),
        Rule(("",), ("pods/eviction",), ("create",)),
        Rule(("apps",), ("replicasets",), ("get", "list"),
             why="Application Xids (13, 31, 43, 45, 68) restart the GPU pod's workload as "
                 "restart-engine does (the realstack tier's RBAC test found this missing)."),
        Rule(("apps",), ("deployments", "statefulsets"), ("get", "list", "patch")),
        Rule(("policy",), ("poddisruptionbudgets",), ("get", "list")),
        Rule(("",), ("namespaces",), ("get",)),
        Rule(("",), ("events",), ("create",)),
    ),
    vault=VaultRole(rules=(
        Rule(("",), ("nodes",), ("get", "list", "patch")),
        Rule(("",), ("pods",), ("list", "delete")),
        Rule(("apps",), ("deployments", "statefulsets"), ("get", "patch")),
        Rule(("",), ("pods/eviction",), ("create",)),
        Rule(("",), ("events",), ("create",)),
    ), role_type="ClusterRole", namespaces=("remediation",)),
    policy_data={
        "cordon-drain": {**_DRAIN_POLICY, "max_per_window": 5},
        "mark-reboot": {**_DRAIN_POLICY, "max_per_window": 3},
        "uncordon": {"kinds": ["Node"], "verbs": ["patch"], "max_steps": 2,
                     "max_per_target_in_window": 5, "max_per_window": 20, "approval": False},
    },
)
