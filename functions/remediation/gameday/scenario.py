"""Game-day scenarios: the file format and its loader. A scenario file (a
cluster snapshot, a timed list of events, the expected end state) is
replayed through the full path on a virtual clock.

    name: xid79-drains-the-node                    # required
    description: a fatal Xid drains the node, keeps the DaemonSet pod
    snapshot: ../../functions/remediation/defaults/demo/cluster.yaml
                                      # a path (relative to this file) or a list of objects
    objects: [{apiVersion: v1, kind: Pod, ...}]   # added over the snapshot (same name: replaced)
    start: "2026-11-01T10:05:00Z"     # the virtual clock at t=0 (default: now)
    settings:                         # environment-style overrides (see SETTINGS below)
      REMEDIATION_TARGET_WINDOW: 300
      REMEDIATION_POLICY_DATA: policy-data.yaml   # relative to this file
    policy_data: {remediation_config: {limits: {max_cordoned_gpu_nodes_percent: 50}}}
    options: {drain-gpu-node: {evict_deadline_seconds: 0.2}}  # routes options, per function
    events:
      - at: 0                         # seconds from start, never before the previous event
        id: first-xid                 # optional: a name for expect.outcomes / approve
        via: alertmanager             # optional check of the body's shape:
                                      #   alertmanager | splunk | cloudevent
        file: demo:10-dcgm-xid79-fell-off-bus.json   # demo: = the bundled demo events
        expect: applied               # every outcome of this event; or one status per
                                      # outcome [applied, skipped]; or a mapping
                                      # {status, function, action, reason}
        live_only: false              # true: its checks need earlier actions applied
                                      # (reported "not checked" on a plan-only stand)
      - at: 30
        body: {...}                   # inline: Alertmanager, Splunk or a CloudEvent
      - at: 300
        body:                         # any value of a body (or file) may name a pod
          ...                         # as it is when the event is delivered:
            labels: {alertname: VLLMEngineHung, namespace: llm-serving,
                     pod: {current_pod_of: {namespace: llm-serving,
                                            deployment: vllm-llama-7b,  # or statefulset,
                                            node: gpu-node-1}}}        # daemonset, replicaset
      - at: 600
        approve: {event: first-xid, by: alice}   # a human approves that event's
                                                 # pending remediation (signed event)
      - at: 900
        sweep: true                   # run the sweep (remediate sweep) over what is due
    expect:
      outcomes:                       # the long form of the per-event `expect`
        - {event: 1, status: denied, function: drain-gpu-node, reason: circuit breaker}
      objects:                        # the end state; one check each
        - {kind: Node, name: gpu-node-5, path: spec.unschedulable, equals: true}
        - {kind: Node, name: gpu-node-5, path: spec.taints, contains: {key: nvidia.com/gpu-xid}}
        - {kind: Pod, namespace: llm-serving, name: vllm-qwen-14b-7c6b5a4d3-k5j6h, absent: true}
        - {kind: Deployment, namespace: llm-serving, name: vllm-llama-7b,
           path: 'spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]',
           exists: true}
      actions:                        # API writes made, counted over the whole run
        - {verb: patch, kind: Deployment, name: vllm-llama-7b, count: 1}
        - {verb: evict, code: 429, at_least: 2}   # code: 2xx (default), 4xx, or a number

A ``{current_pod_of: {namespace, deployment | statefulset | daemonset |
replicaset, node}}`` value (``node`` optional) is replaced, when its event is
delivered, by the name of a pod that workload runs then: one its selector
matches, not being deleted, not finished, on ``node`` when given; the Ready
one first, then the newest, then the last by name. A real alert names the pod
that hangs now, and on a real cluster a rollout restart gives the workload
new pods with new names (and the scheduler new nodes): a scenario that names
a snapshot pod after a restart names a pod that is gone. The workload and its
pods are read from the stand (``Stand.read`` and ``Stand.list_objects``), the
snapshot on a plan-only stand; no such pod fails the delivery, saying which.

Each event is delivered as ``remediate replay`` delivers it (shape detection
and the adapters of :func:`remediation.documents.detect_events`, routed by
the scenario's own routes (its ``REMEDIATION_ROUTES_FILE`` and options), then
:func:`remediation.dispatch.handle_events`: route, plan, claim, policy,
credentials, execute, verify, report), with the pipeline's clock at
``start + at``: target windows, healthy delays and approval expiry play out in
virtual time. Verification polls on a separate monotonic clock that the stand
supplies: virtual on the snapshot and the emulator, so it costs no real time;
real on a real cluster, whose controllers need it. Either way it does not move
the next event.

A ``Stand`` (:mod:`.runner`) is where a scenario runs. ``SnapshotStand`` (what
``remediate gameday`` uses) plans against the snapshot and applies nothing:
outcome expectations are checked (``planned`` meets an expected ``applied``,
``partial`` or ``failed``), object and action expectations are reported as
not checked. The tests' emulator stand (``tests/gameday_stand.py``) applies
for real against the Kubernetes API emulator and checks all of it; the
realstack tier's stand (``tests/realstack/gameday_stand.py``) does the same
on a real control plane.

A game day never reads the environment and always uses a fresh in-memory
ledger: the scenario file is the whole configuration.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..actions.catalogue import CATALOGUE
from ..documents import demo_dir, detect_events
from ..errors import InvalidInput
from ..events.names import check_name, check_namespace
from ..facts import load_objects
from ..model import Status, deep_merge
from ..routing import Routes, load_routes
from ..settings import Settings

STATUSES = frozenset(s.value for s in Status)
#: outcome statuses only a live stand can produce; plan-only, ``planned`` meets them
EXECUTED = frozenset({"applied", "partial", "failed"})
VIAS = ("alertmanager", "splunk", "cloudevent")
WRITE_VERBS = ("create", "update", "patch", "scale", "delete", "evict")
#: the environment-style settings a scenario may override (paths: relative to the file)
SETTINGS = frozenset({
    "REMEDIATION_DRY_RUN", "REMEDIATION_ACTOR", "REMEDIATION_CLUSTER", "REMEDIATION_FUNCTIONS",
    "REMEDIATION_NAMESPACE", "REMEDIATION_TARGET_WINDOW", "REMEDIATION_CLAIM_TTL",
    "REMEDIATION_VERIFY_DEADLINE", "REMEDIATION_VERIFY_INTERVAL", "REMEDIATION_APPROVAL_TTL",
    "REMEDIATION_APPROVAL_SECRET", "REMEDIATION_APPROVERS", "REMEDIATION_POLICY_DIR",
    "REMEDIATION_POLICY_DATA", "REMEDIATION_ROUTES_FILE",
})
_PATH_SETTINGS = ("REMEDIATION_POLICY_DIR", "REMEDIATION_POLICY_DATA", "REMEDIATION_ROUTES_FILE")
_GAMEDAY_APPROVAL_SECRET = "gameday-approval-secret"
#: counting a body's events needs no routing (every alert is an event)
_COUNTING = Routes()
_PATH = re.compile(r'\.?([^.\[\]"]+)|\["([^"]*)"\]|\[(\d+)\]')
#: a value a path does not reach (``lookup``), and an expectation not given
MISSING: Any = object()



# -- the scenario ---------------------------------------------------------------

@dataclass(frozen=True)
class Approve:
    """A human approves the pending remediation of an earlier event."""

    event: int  # index into Scenario.events
    by: str


#: the key of a value naming the pod a workload runs when its event is delivered
POD_REF = "current_pod_of"
#: the workload kinds a pod reference may name (its key -> kind)
POD_REF_KINDS = {"deployment": "Deployment", "statefulset": "StatefulSet",
                 "daemonset": "DaemonSet", "replicaset": "ReplicaSet"}
#: where a value sits in a document: mapping keys and list indexes
DocPath = tuple[str | int, ...]


@dataclass(frozen=True)
class PodRef:
    """``{current_pod_of: {namespace, deployment, node}}``: the pod that
    workload runs (on that node) when the event is delivered."""

    namespace: str
    kind: str  # Deployment | StatefulSet | DaemonSet | ReplicaSet
    name: str
    node: str = ""

    def describe(self) -> str:
        on = f" on {self.node}" if self.node else ""
        return f"the current pod of {self.kind} {self.namespace}/{self.name}{on}"

    @property
    def placeholder(self) -> str:
        """A pod name standing in for it where nothing is resolved (counting
        a body's outcomes at load)."""
        return f"{self.name}-current-pod"


@dataclass(frozen=True)
class TimedEvent:
    at: float
    where: str  # "events[2]" (for messages)
    document: Any = None  # what replay would read from a file; None for approvals
    approve: Approve | None = None
    id: str = ""
    via: str = ""
    outcomes: int = 1  # how many outcomes it yields (alerts in the payload)
    live_only: bool = False
    sweep: bool = False  # run the sweep (remediate sweep) instead of delivering an event
    #: values of ``document`` resolved at delivery: where, and which pod
    pod_refs: tuple[tuple[DocPath, PodRef], ...] = ()


@dataclass(frozen=True)
class OutcomeExpectation:
    event: int
    status: str
    outcome: int | None = None  # None: every outcome of the event
    function: str | None = None
    action: str | None = None
    reason: str | None = None  # a substring of one of the reasons (any case)

    def describe(self, scenario: Scenario) -> str:
        ev = scenario.events[self.event]
        label = f"{ev.where}{' ' + ev.id if ev.id else ''} at t+{ev.at:g}s"
        if self.outcome is not None:
            label += f" outcome {self.outcome}"
        want = [self.status] + [f"{k}={v}" for k, v in (("function", self.function),
                                                          ("action", self.action),
                                                          ("reason~", self.reason)) if v]
        return f"{label}: {', '.join(want)}"


@dataclass(frozen=True)
class ObjectExpectation:
    kind: str
    namespace: str
    name: str
    path: str = ""
    equals: Any = MISSING
    exists: bool | None = None
    contains: Any = MISSING
    absent: bool = False

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.namespace + '/' if self.namespace else ''}{self.name}"

    def describe(self) -> str:
        if self.absent:
            return f"{self.ref} is gone"
        if self.equals is not MISSING:
            return f"{self.ref} {self.path} == {show(self.equals)}"
        if self.contains is not MISSING:
            return f"{self.ref} {self.path} contains {show(self.contains)}"
        return f"{self.ref} {self.path} {'is set' if self.exists else 'is not set'}"


@dataclass(frozen=True)
class ActionExpectation:
    verb: str = ""
    kind: str = ""
    namespace: str = ""
    name: str = ""
    code: str = "2xx"  # "2xx", "4xx", "5xx" or a number
    count: int | None = None
    at_least: int | None = None
    at_most: int | None = None

    def matches(self, w: Write) -> bool:
        if self.verb and w.verb != self.verb:
            return False
        if self.kind and w.kind.lower() != self.kind.lower():
            return False
        if self.namespace and w.namespace != self.namespace:
            return False
        if self.name and w.name != self.name:
            return False
        return (str(w.code)[0] + "xx" == self.code) if self.code.endswith("xx") \
            else str(w.code) == self.code

    def describe(self) -> str:
        obj = "/".join(x for x in (self.kind, self.namespace, self.name) if x)
        what = f"{self.verb or 'any write'} {obj or '(any object)'}"
        bounds = [f"== {self.count}" if self.count is not None else "",
                  f">= {self.at_least}" if self.at_least is not None else "",
                  f"<= {self.at_most}" if self.at_most is not None else ""]
        return f"writes: {what} answered {self.code}: {' and '.join(b for b in bounds if b)}"


@dataclass(frozen=True)
class Scenario:
    name: str
    events: tuple[TimedEvent, ...]
    objects: tuple[Mapping[str, Any], ...] = ()  # the snapshot, extra objects applied over it
    description: str = ""
    settings: Mapping[str, str] = field(default_factory=dict)  # env-style, paths absolute
    policy_data: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    start: float | None = None  # epoch seconds; None: now
    outcomes: tuple[OutcomeExpectation, ...] = ()
    expect_objects: tuple[ObjectExpectation, ...] = ()
    expect_actions: tuple[ActionExpectation, ...] = ()
    source: str = ""

    @property
    def approvals(self) -> bool:
        return any(e.approve for e in self.events)


@dataclass(frozen=True)
class Write:
    """One API write the stand saw (dry-run writes are not counted)."""

    verb: str  # create | update | patch | scale | delete | evict
    kind: str
    namespace: str
    name: str
    code: int



# -- loading ------------------------------------------------------------------

def _bad(where: str, fld: str, message: str) -> InvalidInput:
    return InvalidInput(f"{where}: {fld}: {message}", fld)


def show(value: Any) -> str:
    if value is MISSING:
        return "(not set)"
    return json.dumps(value, sort_keys=True, default=str)


def _read(path: Path, where: str, fld: str) -> Any:
    import yaml  # local: only scenario readers pay for it

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _bad(where, fld, f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise _bad(where, fld, f"{path} is not UTF-8 text") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise _bad(where, fld, f"{path} is not valid JSON/YAML: {exc}") from None


def _only(doc: Mapping[str, Any], allowed: Sequence[str], where: str, prefix: str) -> None:
    unknown = sorted(str(k) for k in doc if k not in allowed)
    if unknown:
        raise _bad(where, f"{prefix}{unknown[0]}",
                   f"unknown field (allowed: {', '.join(allowed)})")


def _str(doc: Mapping[str, Any], key: str, where: str, prefix: str = "", *,
         required: bool = False) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value:
        raise _bad(where, prefix + key, "required, a non-empty string" if value is None
                   else f"must be a non-empty string, not {show(value)}")
    return value


def _number(value: Any, where: str, fld: str, *, integer: bool = False) -> float:
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if not ok or value < 0:
        raise _bad(where, fld, f"must be a non-negative {'integer' if integer else 'number'}, "
                               f"not {show(value)}")
    return float(value) if not integer else int(value)


def _start(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value))
        except ValueError:
            raise _bad(where, "start", f"not an RFC 3339 time: {show(value)}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _objects(items: Any, where: str, fld: str) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        raise _bad(where, fld, "must be a list of Kubernetes objects")
    for i, obj in enumerate(items):
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        if not (isinstance(obj, Mapping) and isinstance(obj.get("kind"), str)
                and isinstance(meta, Mapping) and isinstance(meta.get("name"), str)):
            raise _bad(where, f"{fld}[{i}]", "a Kubernetes object needs kind and metadata.name")
    return [dict(o) for o in items]


def _object_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))


def _shape(item: Any) -> str:
    if isinstance(item, Mapping):
        if "specversion" in item:
            return "cloudevent"
        if "alerts" in item and "version" in item:
            return "alertmanager"
        if "sid" in item and "result" in item:
            return "splunk"
    return ""


def _settings(doc: Any, base_dir: Path, where: str) -> dict[str, str]:
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise _bad(where, "settings", "must be a mapping of environment-style names to values")
    out: dict[str, str] = {}
    for key, value in doc.items():
        if key not in SETTINGS:
            raise _bad(where, f"settings.{key}", "not a setting a game day can change "
                       f"(one of {', '.join(sorted(SETTINGS))})")
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, (str, int, float)):
            raise _bad(where, f"settings.{key}", f"must be a string or number, not "
                                                 f"{show(value)}")
        value = str(value)
        if key in _PATH_SETTINGS:
            value = str((base_dir / value).resolve())
        out[str(key)] = value
    try:
        Settings.from_env(out)
    except ValueError as exc:
        raise _bad(where, "settings", f"a value does not parse: {exc}") from None
    return out


def _expectation(spec: Any, where: str, fld: str, event: int, n: int, *,
                 top: bool = False) -> list[OutcomeExpectation]:
    """A per-event ``expect``: a status, one status per outcome, or a mapping."""
    if isinstance(spec, str):
        spec = {"status": spec}
    if isinstance(spec, list):
        if len(spec) != n:
            raise _bad(where, fld, f"lists {len(spec)} statuses but the event yields {n} "
                                   "outcome(s); give one status for all, or one per outcome")
        out: list[OutcomeExpectation] = []
        for i, s in enumerate(spec):
            out.extend(_expectation({"status": s, "outcome": i}, where, f"{fld}[{i}]", event, n))
        return out
    if not isinstance(spec, Mapping):
        raise _bad(where, fld, "must be a status, a list of statuses or a mapping")
    _only(spec, ("event",) * top + ("outcome", "status", "function", "action", "reason"),
          where, f"{fld}.")
    status = _str(spec, "status", where, f"{fld}.", required=True)
    if status not in STATUSES:
        raise _bad(where, f"{fld}.status", f"unknown status {status!r} (one of "
                                           f"{', '.join(sorted(STATUSES))})")
    outcome = spec.get("outcome")
    if outcome is not None:
        _number(outcome, where, f"{fld}.outcome", integer=True)
        if outcome >= n:
            raise _bad(where, f"{fld}.outcome", f"the event yields only {n} outcome(s)")
    return [OutcomeExpectation(
        event=event, status=status, outcome=outcome,
        function=_str(spec, "function", where, f"{fld}.") or None,
        action=_str(spec, "action", where, f"{fld}.") or None,
        reason=_str(spec, "reason", where, f"{fld}.") or None)]


def _pod_ref(spec: Any, where: str, fld: str) -> PodRef:
    if not isinstance(spec, Mapping):
        raise _bad(where, fld, "must be a mapping {namespace, deployment (or statefulset, "
                               "daemonset, replicaset), node}")
    _only(spec, ("namespace", *POD_REF_KINDS, "node"), where, f"{fld}.")
    kinds = [k for k in POD_REF_KINDS if k in spec]
    if len(kinds) != 1:
        raise _bad(where, f"{fld}.{kinds[1] if kinds else 'deployment'}",
                   "needs exactly one workload: deployment, statefulset, daemonset or "
                   "replicaset")
    values = {k: _str(spec, k, where, f"{fld}.", required=k != "node")
              for k in ("namespace", kinds[0], "node")}
    try:
        check_namespace(values["namespace"], f"{fld}.namespace")
        check_name(values[kinds[0]], f"{fld}.{kinds[0]}")
        if values["node"]:
            check_name(values["node"], f"{fld}.node")
    except InvalidInput as exc:
        raise _bad(where, exc.attribute or fld, str(exc).partition(": ")[2]) from None
    return PodRef(values["namespace"], POD_REF_KINDS[kinds[0]], values[kinds[0]],
                  values["node"])


def find_pod_refs(doc: Any, where: str, fld: str,
                  path: DocPath = ()) -> list[tuple[DocPath, PodRef]]:
    """Every ``{current_pod_of: ...}`` value in ``doc``, validated, with its path."""
    here = fld + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    if isinstance(doc, Mapping):
        if POD_REF in doc:
            if len(doc) != 1:
                extra = sorted(str(k) for k in doc if k != POD_REF)
                raise _bad(where, f"{here}.{extra[0]}", f"a {POD_REF} value is a mapping "
                                                        f"with that one key")
            return [(path, _pod_ref(doc[POD_REF], where, f"{here}.{POD_REF}"))]
        return [r for k, v in doc.items() for r in find_pod_refs(v, where, fld, (*path, k))]
    if isinstance(doc, list):
        return [r for i, v in enumerate(doc) for r in find_pod_refs(v, where, fld, (*path, i))]
    return []


def with_values(doc: Any, values: Mapping[DocPath, Any], path: DocPath = ()) -> Any:
    """A copy of ``doc`` with the value at each path of ``values`` replaced."""
    if path in values:
        return values[path]
    if isinstance(doc, Mapping):
        return {k: with_values(v, values, (*path, k)) for k, v in doc.items()}
    if isinstance(doc, list):
        return [with_values(v, values, (*path, i)) for i, v in enumerate(doc)]
    return doc


def _event(doc: Any, i: int, last: float, base_dir: Path, where: str,
           ids: Mapping[str, int], events: Sequence[TimedEvent]) -> TimedEvent:
    fld = f"events[{i}]"
    if not isinstance(doc, Mapping):
        raise _bad(where, fld, "an event is a mapping with at, and file, body or approve")
    _only(doc, ("at", "id", "via", "file", "body", "approve", "sweep", "expect", "live_only"),
          where, f"{fld}.")
    at = float(_number(doc.get("at", 0), where, f"{fld}.at"))
    if at < last:
        raise _bad(where, f"{fld}.at", f"{at:g} is before the previous event's {last:g}")
    ident = _str(doc, "id", where, f"{fld}.")
    if ident and ident in ids:
        raise _bad(where, f"{fld}.id", f"{ident!r} is already the id of events[{ids[ident]}]")
    live_only = doc.get("live_only", False)
    if not isinstance(live_only, bool):
        raise _bad(where, f"{fld}.live_only", "must be true or false")
    given = [k for k in ("file", "body", "approve", "sweep") if k in doc]
    if len(given) != 1:
        raise _bad(where, f"{fld}.{given[1] if len(given) > 1 else 'file'}",
                   "an event needs exactly one of file, body, approve or sweep")
    if "sweep" in doc:
        if doc["sweep"] is not True:
            raise _bad(where, f"{fld}.sweep", "must be true")
        return TimedEvent(at, fld, id=ident, sweep=True, live_only=live_only)
    if "approve" in doc:
        spec = doc["approve"]
        if not isinstance(spec, Mapping):
            raise _bad(where, f"{fld}.approve", "must be a mapping {event, by}")
        _only(spec, ("event", "by"), where, f"{fld}.approve.")
        ref = spec.get("event")
        target = _event_ref(ref, where, f"{fld}.approve.event", ids, i)
        if events[target].approve is not None:
            raise _bad(where, f"{fld}.approve.event", "names an approval, not an alert")
        by = _str(spec, "by", where, f"{fld}.approve.", required=True)
        return TimedEvent(at, fld, approve=Approve(target, by), id=ident, live_only=live_only)
    if "file" in doc:
        ref = _str(doc, "file", where, f"{fld}.", required=True)
        path = demo_dir() / "events" / ref[5:] if ref.startswith("demo:") else base_dir / ref
        body = _read(path, where, f"{fld}.file")
    else:
        body = doc["body"]
    refs = find_pod_refs(body, where, f"{fld}.{'file' if 'file' in doc else 'body'}")
    counted = with_values(body, {p: r.placeholder for p, r in refs})  # named as delivered
    items = counted if isinstance(counted, list) else [counted]
    shapes = {_shape(item) for item in items}
    via = _str(doc, "via", where, f"{fld}.")
    if via and via not in VIAS:
        raise _bad(where, f"{fld}.via", f"unknown {via!r} (one of {', '.join(VIAS)})")
    if via and shapes != {via}:
        raise _bad(where, f"{fld}.via", f"says {via} but the body is "
                   f"{' and '.join(sorted(s or 'of no known shape' for s in shapes))}")
    try:
        n = len(detect_events(counted, where=fld, routes=_COUNTING))
    except InvalidInput as exc:
        raise _bad(where, f"{fld}.{'file' if 'file' in doc else 'body'}", str(exc)) from None
    return TimedEvent(at, fld, document=body, id=ident, via=via or shapes.pop(), outcomes=n,
                      live_only=live_only, pod_refs=tuple(refs))


def _event_ref(ref: Any, where: str, fld: str, ids: Mapping[str, int], before: int) -> int:
    if isinstance(ref, str):
        if ref not in ids:
            raise _bad(where, fld, f"no event has id {ref!r}")
        return ids[ref]
    if isinstance(ref, int) and not isinstance(ref, bool) and 0 <= ref < before:
        return ref
    raise _bad(where, fld, f"must be the index or id of an earlier event, not {show(ref)}")


def _object_expectation(o: Any, where: str, fld: str) -> ObjectExpectation:
    if not isinstance(o, Mapping):
        raise _bad(where, fld, "must be a mapping {kind, namespace, name, ...}")
    _only(o, ("kind", "namespace", "name", "path", "equals", "exists", "contains", "absent"),
          where, f"{fld}.")
    kind = _str(o, "kind", where, f"{fld}.", required=True)
    name = _str(o, "name", where, f"{fld}.", required=True)
    namespace = _str(o, "namespace", where, f"{fld}.")
    tests = [k for k in ("equals", "exists", "contains", "absent") if k in o]
    if len(tests) != 1:
        raise _bad(where, f"{fld}.{tests[1] if len(tests) > 1 else 'path'}",
                   "needs exactly one of: path with equals, exists or contains; absent: true")
    if "absent" in o:
        if o["absent"] is not True or "path" in o:
            raise _bad(where, f"{fld}.absent", "is 'absent: true' (the object is gone), "
                                               "without a path")
        return ObjectExpectation(kind, namespace, name, absent=True)
    path = _str(o, "path", where, f"{fld}.", required=True)
    try:
        lookup({}, path)
    except InvalidInput as exc:
        raise _bad(where, f"{fld}.path", str(exc)) from None
    if "exists" in o and not isinstance(o["exists"], bool):
        raise _bad(where, f"{fld}.exists", "must be true or false")
    return ObjectExpectation(kind, namespace, name, path=path,
                             equals=o.get("equals", MISSING),
                             exists=o.get("exists") if "exists" in o else None,
                             contains=o.get("contains", MISSING))


def _action_expectation(a: Any, where: str, fld: str) -> ActionExpectation:
    if not isinstance(a, Mapping):
        raise _bad(where, fld, "must be a mapping {verb, kind, namespace, name, count}")
    _only(a, ("verb", "kind", "namespace", "name", "code", "count", "at_least", "at_most"),
          where, f"{fld}.")
    verb = _str(a, "verb", where, f"{fld}.")
    if verb and verb not in WRITE_VERBS:
        raise _bad(where, f"{fld}.verb", f"unknown {verb!r} (one of {', '.join(WRITE_VERBS)})")
    code = str(a.get("code", "2xx"))
    if not re.fullmatch(r"[1-5](xx|\d\d)", code):
        raise _bad(where, f"{fld}.code", f"must be 2xx, 4xx, 5xx or a status code, not {code!r}")
    bounds = {k: int(_number(a[k], where, f"{fld}.{k}", integer=True))
              for k in ("count", "at_least", "at_most") if k in a}
    if not bounds:
        raise _bad(where, f"{fld}.count", "needs count, at_least or at_most")
    return ActionExpectation(verb=verb, kind=_str(a, "kind", where, f"{fld}."),
                             namespace=_str(a, "namespace", where, f"{fld}."),
                             name=_str(a, "name", where, f"{fld}."), code=code, **bounds)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file. ``InvalidInput`` (its ``attribute``
    the offending field, e.g. ``events[2].at``) says what is wrong."""
    path = Path(path)
    doc = _read(path, path.name, "file")
    return parse_scenario(doc, base_dir=path.parent, where=path.name, source=str(path))


def parse_scenario(doc: Any, *, base_dir: Path, where: str = "scenario",
                   source: str = "") -> Scenario:
    """Validate a scenario document (relative paths against ``base_dir``)."""
    if not isinstance(doc, Mapping):
        raise _bad(where, "scenario", "a scenario is a mapping (name, snapshot, events, "
                                      "expect)")
    _only(doc, ("name", "description", "snapshot", "objects", "start", "settings",
                "policy_data", "options", "events", "expect"), where, "")
    name = _str(doc, "name", where, required=True)
    description = doc.get("description") or ""
    if not isinstance(description, str):
        raise _bad(where, "description", "must be a string")

    objects: list[dict[str, Any]] = []
    snapshot = doc.get("snapshot")
    if isinstance(snapshot, str):
        try:
            objects = load_objects(base_dir / snapshot)
        except InvalidInput as exc:
            raise _bad(where, "snapshot", str(exc)) from None
    elif snapshot is not None:
        objects = _objects(snapshot, where, "snapshot")
    elif "objects" not in doc:
        raise _bad(where, "snapshot", "required: a snapshot file (relative to the scenario) "
                                      "or a list of objects (or give 'objects')")
    extra = _objects(doc["objects"], where, "objects") if "objects" in doc else []
    merged = {_object_key(o): o for o in objects}
    merged.update({_object_key(o): o for o in extra})

    settings = _settings(doc.get("settings"), base_dir, where)
    policy_data: Any = {}
    if "REMEDIATION_POLICY_DATA" in settings:
        policy_data = _read(Path(settings.pop("REMEDIATION_POLICY_DATA")), where,
                            "settings.REMEDIATION_POLICY_DATA") or {}
        if not isinstance(policy_data, Mapping):
            raise _bad(where, "settings.REMEDIATION_POLICY_DATA", "the file is not a mapping")
    inline = doc.get("policy_data") or {}
    if not isinstance(inline, Mapping):
        raise _bad(where, "policy_data", "must be a mapping (merged over the policy's data)")
    policy_data = deep_merge(policy_data, inline)
    options = doc.get("options") or {}
    if not isinstance(options, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Mapping) for k, v in options.items()):
        raise _bad(where, "options", "must map function names to their options")
    for fn in options:
        if fn not in CATALOGUE:
            raise _bad(where, f"options.{fn}", f"no such function (one of "
                                               f"{', '.join(sorted(CATALOGUE))})")
    routes_file = settings.get("REMEDIATION_ROUTES_FILE", "")
    if routes_file:
        try:
            load_routes(routes_file)
        except InvalidInput as exc:
            raise _bad(where, "settings.REMEDIATION_ROUTES_FILE", str(exc)) from None

    raw_events = doc.get("events")
    if not isinstance(raw_events, list) or not raw_events:
        raise _bad(where, "events", "required, a non-empty list of timed events")
    events: list[TimedEvent] = []
    ids: dict[str, int] = {}
    expectations: list[OutcomeExpectation] = []
    for i, raw in enumerate(raw_events):
        ev = _event(raw, i, events[-1].at if events else 0.0, base_dir, where, ids, events)
        if ev.id:
            ids[ev.id] = i
        events.append(ev)
        if "expect" in raw:
            expectations += _expectation(raw["expect"], where, f"events[{i}].expect", i,
                                         ev.outcomes)

    expect = doc.get("expect") or {}
    if not isinstance(expect, Mapping):
        raise _bad(where, "expect", "must be a mapping {outcomes, objects, actions}")
    _only(expect, ("outcomes", "objects", "actions"), where, "expect.")
    for key in ("outcomes", "objects", "actions"):
        if not isinstance(expect.get(key) or [], list):
            raise _bad(where, f"expect.{key}", "must be a list")
    for j, spec in enumerate(expect.get("outcomes") or []):
        fld = f"expect.outcomes[{j}]"
        if not isinstance(spec, Mapping) or "event" not in spec:
            raise _bad(where, f"{fld}.event", "required: the index or id of an event")
        idx = _event_ref(spec["event"], where, f"{fld}.event", ids, len(events))
        expectations += _expectation(spec, where, fld, idx, events[idx].outcomes, top=True)
    objs = [_object_expectation(o, where, f"expect.objects[{j}]")
            for j, o in enumerate(expect.get("objects") or [])]
    acts = [_action_expectation(a, where, f"expect.actions[{j}]")
            for j, a in enumerate(expect.get("actions") or [])]
    if not expectations and not objs and not acts:
        raise _bad(where, "expect", "a scenario must expect something: an event's expect, "
                                    "expect.outcomes, expect.objects or expect.actions")
    return Scenario(name=name, description=description.strip(),
                    objects=tuple(merged.values()), events=tuple(events),
                    settings=settings, policy_data=dict(policy_data),
                    options={k: dict(v) for k, v in options.items()},
                    start=_start(doc.get("start"), where), outcomes=tuple(expectations),
                    expect_objects=tuple(objs), expect_actions=tuple(acts), source=source)



# -- paths into objects ------------------------------------------------------

def lookup(obj: Any, path: str) -> Any:
    """``spec.template.metadata.annotations["a/b"]`` or ``spec.taints[0].key``;
    a missing part gives the module's ``MISSING`` marker, a bad path InvalidInput."""
    pos, cur = 0, obj
    for m in _PATH.finditer(path):
        if m.start() != pos or (pos == 0 and path.startswith(".")):
            raise InvalidInput(f"bad path {path!r} at character {pos}", "path")
        pos = m.end()
        if m.group(3) is not None:
            idx = int(m.group(3))
            cur = cur[idx] if isinstance(cur, list) and idx < len(cur) else MISSING
            continue
        part = m.group(1) if m.group(1) is not None else m.group(2)
        cur = cur[part] if isinstance(cur, Mapping) and part in cur else MISSING
    if pos != len(path) or not path:
        raise InvalidInput(f"bad path {path!r} at character {pos}", "path")
    return cur


