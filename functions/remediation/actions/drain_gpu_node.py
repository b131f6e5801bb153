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
  through the restart-engine planner itself (same resolution, paused check,
  incident mark; ``options.restart_mode`` picks rollout | delete-pod);
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

The shared reads of GPU nodes and pods (requests, free GPUs, placement,
drain candidates) live here too; rebalance-gpu-pods, scale-engine and the
restart-engine escalation ladder import them.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..events.binding import parse_time
from ..events.names import check_name
from ..facts import ClusterFacts, owner_of
from ..model import TYPE_SPLUNK_RESULT, NoPlan, ObjectRef, Plan, Signal, Step, freeze, thaw
from . import restart_engine
from .base import PlanContext, Remediation, remediation_key

NAME = "drain-gpu-node"
GPU = "nvidia.com/gpu"
CORDONED_BY = "inferenceremediation.io/cordoned-by"
CORDON_REASON = "inferenceremediation.io/cordon-reason"
DRAINED_FOR = "inferenceremediation.io/drained-for"
REBOOT_LABEL = "inferenceremediation.io/reboot-required"
REBOOT_REASON = "inferenceremediation.io/reboot-reason"
REBOOT_BOOT_ID = "inferenceremediation.io/reboot-requested-boot-id"
XID_TAINT_KEY = "nvidia.com/gpu-xid"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
ALERT_NODE_LABELS = ("kubernetes_node", "node", "Hostname")
SPLUNK_NODE_LABELS = ("host", "kubernetes_node", "node")
POD_MAPPING = (("exported_namespace", "exported_pod"), ("namespace", "pod"))
XID_ACTIONS = ("ignore", "restart-app", "drain", "drain-and-reboot")  # by severity
EVICT_DEADLINE_SECONDS = 120
HEALTHY_DELAY_SECONDS = 300

#: the kernel's Xid line: "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, ..."
XID_LINE = re.compile(
    r"NVRM: Xid \(PCI:(?P<pci>[0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}(?:\.[0-7])?)\): "
    r"(?P<xid>[0-9]{1,4})(?=,|\s|$)")
_XID_VALUE = re.compile(r"[0-9]{1,4}(?:\.0+)?")


def _no(reason: str, target: ObjectRef | None = None, *, function: str = NAME,
        already_done: bool = False) -> NoPlan:
    return NoPlan(function, (reason,), target, already_done=already_done)


# -- fleet reads (shared) ----------------------------------------------------------

def quantity(value: Any) -> int:
    """An extended-resource quantity (whole numbers: "8", 8, "2k") as int."""
    text = str(value if value is not None else "0").strip()
    scale = {"k": 1000, "M": 1000**2, "G": 1000**3}.get(text[-1:], 1)
    try:
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        return 0


def gpu_request(pod_spec: Mapping[str, Any] | None) -> int:
    """GPUs a pod (spec or template spec) requests: limits stand in for
    requests (extended resources), init containers count as the scheduler does."""
    def of(c: Mapping[str, Any]) -> int:
        res = c.get("resources") or {}
        got = (res.get("requests") or {}).get(GPU)
        return quantity(got if got is not None else (res.get("limits") or {}).get(GPU))

    spec = pod_spec or {}
    main = sum(of(c) for c in spec.get("containers") or [])
    init = max((of(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


def is_finished(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def node_gpus(node: Mapping[str, Any], field: str = "allocatable") -> int:
    return quantity(((node.get("status") or {}).get(field) or {}).get(GPU))


def is_gpu_node(node: Mapping[str, Any]) -> bool:
    return node_gpus(node) > 0 or node_gpus(node, "capacity") > 0


def node_ready(node: Mapping[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (
                taint.get("value") or ""):
            return True
    return False


def _node_term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    fields = {"metadata.name": node["metadata"]["name"]}
    for source, have in (("matchExpressions", labels), ("matchFields", fields)):
        for e in term.get(source) or []:
            key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
            present = key in have
            ok = {"In": present and have.get(key) in values,
                  "NotIn": not present or have.get(key) not in values,
                  "Exists": present, "DoesNotExist": not present}.get(op, True)
            if not ok:
                return False
    return True


def node_accepts(node: Mapping[str, Any], pod_spec: Mapping[str, Any] | None) -> bool:
    """Would the scheduler consider ``node`` for this pod (spec or template)?
    Schedulable, Ready, taints tolerated, nodeSelector and required node
    affinity satisfied. Resources are checked by :class:`GpuPlacement`."""
    spec = pod_spec or {}
    if (node.get("spec") or {}).get("unschedulable") or not node_ready(node):
        return False
    tolerations = spec.get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(
                tolerations, taint):
            return False
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(_node_term_matches(t, node) for t in terms)


class GpuPlacement:
    """Free GPUs per node (allocatable minus the requests of the node's
    non-finished pods) and a first-fit simulation, so two pods never claim
    the same free GPU. Pending GPU pods are placed first: they will take
    capacity before anything we add."""

    def __init__(self, facts: ClusterFacts, *, exclude: Sequence[str] = ()) -> None:
        self.nodes = [n for n in facts.list("Node")
                      if is_gpu_node(n) and n["metadata"]["name"] not in exclude]
        used: dict[str, int] = {}
        pending: list[Mapping[str, Any]] = []
        for pod in facts.list("Pod"):
            if is_finished(pod) or (gpus := gpu_request(pod.get("spec"))) <= 0:
                continue
            where = (pod.get("spec") or {}).get("nodeName")
            if where:
                used[where] = used.get(where, 0) + gpus
            else:
                pending.append(pod)
        self.free = {n["metadata"]["name"]: node_gpus(n) - used.get(n["metadata"]["name"], 0)
                     for n in self.nodes}
        for pod in pending:
            self.place(pod.get("spec"))

    def place(self, pod_spec: Mapping[str, Any] | None) -> str:
        """Claim GPUs on the first node that fits; the node name, or ""."""
        need = gpu_request(pod_spec)
        for node in self.nodes:
            name = node["metadata"]["name"]
            if self.free[name] >= need and node_accepts(node, pod_spec):
                self.free[name] -= need
                return name
        return ""

    def total_free(self, pod_spec: Mapping[str, Any] | None = None) -> int:
        return sum(max(0, f) for n, f in self.free.items()
                   if pod_spec is None or node_accepts(self._node(n), pod_spec))

    def _node(self, name: str) -> Mapping[str, Any]:
        return next(n for n in self.nodes if n["metadata"]["name"] == name)


def cordon_counts(facts: ClusterFacts, node_name: str, *, cordon: bool) -> dict[str, int]:
    """Circuit-breaker facts: GPU nodes, cordoned now, cordoned after the plan."""
    gpu_nodes = [n for n in facts.list("Node") if is_gpu_node(n)]
    cordoned = {n["metadata"]["name"] for n in gpu_nodes
                if (n.get("spec") or {}).get("unschedulable")}
    after = set(cordoned)
    if cordon and any(n["metadata"]["name"] == node_name for n in gpu_nodes):
        after.add(node_name)
    return {"gpu_nodes": len(gpu_nodes), "cordoned_gpu_nodes": len(cordoned),
            "cordoned_gpu_nodes_after": len(after)}


def node_from_signal(signal: Signal) -> str:
    """The node an alert or Splunk result names ("" when none); InvalidInput
    for a value that is not a node name."""
    names = SPLUNK_NODE_LABELS if signal.type == TYPE_SPLUNK_RESULT else ALERT_NODE_LABELS
    for label in names:
        value = signal.labels.get(label)
        if value:
            return check_name(value.lower() if label in ("Hostname", "host") else value,
                              f"labels.{label}")
    return ""


def _flag(options: Mapping[str, Any], key: str) -> bool:
    value = options.get(key, False)
    return value is True or str(value).lower() in ("true", "yes", "1")


def _number(options: Mapping[str, Any], key: str, default: float) -> float:
    try:
        value = float(options.get(key, default))
    except (TypeError, ValueError):
        raise InvalidInput(f"options.{key}: expected a number", f"options.{key}") from None
    if value < 0:
        raise InvalidInput(f"options.{key}: must not be negative", f"options.{key}")
    return value


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
        body["gracePeriodSeconds"] = int(_number(options, "grace_period_seconds", 30))
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
    consent_unmanaged = _flag(options, "delete_unmanaged")
    consent_local = _flag(options, "delete_local_data")
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
        return _no(f"{ref} was cordoned by someone else (no {CORDONED_BY} annotation): "
                   "not touching it", ref, function=function)
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
        return _no(f"{ref} is already cordoned by us and has no GPU pods left to evict",
                   ref, function=function, already_done=True)
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
        "delete_unmanaged": _flag(ctx.options, "delete_unmanaged"),
        "delete_local_data": _flag(ctx.options, "delete_local_data"),
        "unmanaged_pods": sel.unmanaged, "local_data_pods": sel.local_data,
        "evict_deadline_seconds": _number(ctx.options, "evict_deadline_seconds",
                                          EVICT_DEADLINE_SECONDS),
        **dict(params or {}),
    }
    return Plan(function, action, ref, tuple(steps), tuple(reasons), key, freeze(all_params))


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
            w = restart_engine._workload_for_pod(ctx, p)
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
                        freeze({"mode": ctx.options.get("restart_mode", "rollout"),
                                "escalation": False}), ctx.history)
    planned = restart_engine.plan_restart(inner)
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
    delay = _number(ctx.options, "healthy_delay_seconds", HEALTHY_DELAY_SECONDS)
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


REMEDIATION = Remediation(
    name=NAME,
    summary="NVIDIA Xid fault: restart the app, cordon+taint+drain the node, or mark it for "
            "reboot (classification table as data); uncordon our own cordon when resolved",
    planner=plan_drain_gpu_node,
    handles_resolved=True,
)
