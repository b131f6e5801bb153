"""The data every layer shares: signals in, plans through, outcomes out.

Everything here is a frozen dataclass of plain values, so a Plan is data: the
same object is what dry-run prints, what the policy judges, what the ledger
records, what the outcome event carries and what a replay compares.
No I/O, no third-party imports.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from types import MappingProxyType
from typing import Any

#: CloudEvent type prefix owned by this project (reverse DNS, versioned types).
TYPE_PREFIX = "io.inferenceremediation"

#: Event ids of signals an agent submitted (through the MCP door) start with
#: this, then the client's name and "/": the ledger keeps event ids, so the
#: agents' own counts (policy input ``stats.agent_*``) are read from it.
AGENT_EVENT_PREFIX = "agent/"

#: Incoming signal types (what adapters emit and Triggers route on).
TYPE_ALERT_FIRING = f"{TYPE_PREFIX}.alert.firing.v1"
TYPE_ALERT_RESOLVED = f"{TYPE_PREFIX}.alert.resolved.v1"
TYPE_SPLUNK_RESULT = f"{TYPE_PREFIX}.splunk.result.v1"
#: A human's signed approval of a pending remediation (see guard.approval).
TYPE_APPROVAL_GRANTED = f"{TYPE_PREFIX}.approval.granted.v1"
#: Outgoing types. No Trigger filter may ever match these (loop safety).
TYPE_OUTCOME = f"{TYPE_PREFIX}.remediation.outcome.v1"
#: The reply when policy wants a human: the outcome (status ``pending``) plus
#: what to approve and until when. A notifier may subscribe to it.
TYPE_APPROVAL_REQUESTED = f"{TYPE_PREFIX}.remediation.approval-requested.v1"

INCOMING_TYPES = (TYPE_ALERT_FIRING, TYPE_ALERT_RESOLVED, TYPE_SPLUNK_RESULT,
                  TYPE_APPROVAL_GRANTED)


def freeze(value: Any) -> Any:
    """Deep-freeze JSON-like data: dicts become read-only mappings, lists tuples.

    Exact type checks first: an ``isinstance`` against the Mapping ABC costs
    about a microsecond, and a storm freezes some ten nested values per alert."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is dict or isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):  # concrete types: no ABC machinery
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of :func:`freeze`: plain dicts and lists, ready for JSON."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is MappingProxyType or kind is dict or isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, mappings merged key by key (policy data files
    over the defaults, a scenario's data over its data file)."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def stable_digest(*parts: Any, length: int = 16) -> str:
    """A short deterministic hex digest of JSON-serialisable parts."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class ObjectRef:
    """A Kubernetes object. ``namespace`` is "" for cluster-scoped kinds."""

    kind: str
    namespace: str
    name: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name}

    def __str__(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{ns}{self.name}"


@dataclass(frozen=True)
class Signal:
    """One normalised incoming event (an alert, a Splunk result, a replay).

    Built by the event parser from a CloudEvent; planners only ever see this.
    """

    event_id: str
    source: str
    type: str
    status: str  # "firing" | "resolved"
    name: str  # alertname or Splunk search name ("" when unknown)
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    starts_at: str = ""
    fingerprint: str = ""
    cluster: str = ""
    origin: str = "cloudevent"  # alertmanager | splunk | cloudevent
    traceparent: str = ""
    tracestate: str = ""
    time: str = ""
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: who asked for this besides an alert, set only by a door that knows
    #: (the MCP server: ``{"kind": "agent", "client", "model", "reason"}``);
    #: never read from an event, so a sender cannot claim to be someone. Kept
    #: with the signal while it awaits approval, so the approved run and its
    #: outcome still say an agent asked.
    requester: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @cached_property
    def incident(self) -> str:
        """Identity of the incident: stable across re-sends and HA peers
        (computed once: planners, keys and outcomes all ask for it)."""
        if self.fingerprint:
            return stable_digest(self.fingerprint, self.starts_at)
        return stable_digest(self.source, self.event_id)

    def label(self, *names: str) -> str:
        for n in names:
            v = self.labels.get(n)
            if v:
                return v
        return ""

    def to_record(self) -> dict[str, Any]:
        """Every field, as plain JSON (kept while a remediation awaits approval)."""
        return {
            "event_id": self.event_id, "source": self.source, "type": self.type,
            "status": self.status, "name": self.name, "labels": dict(self.labels),
            "annotations": dict(self.annotations), "starts_at": self.starts_at,
            "fingerprint": self.fingerprint, "cluster": self.cluster, "origin": self.origin,
            "traceparent": self.traceparent, "tracestate": self.tracestate, "time": self.time,
            "data": thaw(self.data),
            **({"requester": dict(self.requester)} if self.requester else {}),
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Signal:
        """Inverse of :meth:`to_record` (the record was written by us)."""
        def text(name: str) -> str:
            value = rec.get(name, "")
            return value if isinstance(value, str) else ""

        def strings(name: str) -> Mapping[str, str]:
            value = rec.get(name) or {}
            if not isinstance(value, Mapping):
                return MappingProxyType({})
            return MappingProxyType({str(k): str(v) for k, v in value.items()})

        data = rec.get("data") or {}
        return cls(event_id=text("event_id"), source=text("source"), type=text("type"),
                   status=text("status") or "firing", name=text("name"),
                   labels=strings("labels"), annotations=strings("annotations"),
                   starts_at=text("starts_at"), fingerprint=text("fingerprint"),
                   cluster=text("cluster"), origin=text("origin") or "cloudevent",
                   traceparent=text("traceparent"), tracestate=text("tracestate"),
                   time=text("time"), data=freeze(data if isinstance(data, Mapping) else {}),
                   requester=strings("requester"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.event_id,
            "source": self.source,
            "type": self.type,
            "status": self.status,
            "name": self.name,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "starts_at": self.starts_at,
            "fingerprint": self.fingerprint,
            "cluster": self.cluster,
            "origin": self.origin,
            "incident": self.incident,
        }


@dataclass(frozen=True)
class Step:
    """One action against the cluster.

    verb: ``patch`` | ``delete`` | ``evict`` | ``scale`` | ``create``.
    patch_type: ``strategic`` | ``merge`` | ``json`` (for ``patch``).
    body: the patch, eviction options, scale, or object to create.
    precondition: optional expectations checked right before the step runs
      (e.g. ``{"uid": ...}``); see the executor.
    """

    verb: str
    kind: str
    namespace: str
    name: str
    why: str
    body: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    patch_type: str = "strategic"

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.kind, self.namespace, self.name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verb": self.verb,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "why": self.why,
            "body": thaw(self.body),
            "patch_type": self.patch_type,
        }


@dataclass(frozen=True)
class StepResult:
    """What running one step gave (the executor's and the writer's answer)."""

    step: Step
    ok: bool
    detail: str
    code: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"verb": self.step.verb, "kind": self.step.kind,
                "namespace": self.step.namespace, "name": self.step.name,
                "ok": self.ok, "detail": self.detail, "code": self.code}


@dataclass(frozen=True)
class Plan:
    """What a remediation intends to do, as data. ``steps`` may be empty only
    when there is nothing to do (then ``reasons`` says why)."""

    function: str  # catalogue name, e.g. "restart-engine"
    action: str  # policy action name, e.g. "rollout-restart" / "delete-pod"
    target: ObjectRef
    steps: tuple[Step, ...]
    reasons: tuple[str, ...] = ()
    key: str = ""  # remediation key: incident + target (claim once per key)
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def as_dict(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "action": self.action,
            "target": self.target.as_dict(),
            "steps": [s.as_dict() for s in self.steps],
            "reasons": list(self.reasons),
            "key": self.key,
            "params": thaw(self.params),
        }


@dataclass(frozen=True)
class NoPlan:
    """A planner's answer when there is nothing it may do, with the reason."""

    function: str
    reasons: tuple[str, ...]
    target: ObjectRef | None = None
    #: the cluster already shows this incident's fix (e.g. a retry after a
    #: timeout that did apply): reported as a duplicate, never done again.
    already_done: bool = False
    #: not yet, and the sender should redeliver: answer "retry" (redeliver
    #: after this many seconds).
    retry_after: float = 0.0
    #: not yet, and nothing for the sender to do (recovery before the healthy
    #: delay): the pipeline records the signal, answers ``scheduled`` at once,
    #: and the sweep runs the path again this many seconds from now.
    due_in: float = 0.0


class Status(str, Enum):
    """Outcome status, as carried in the reply event's data."""

    PLANNED = "planned"  # dry run: plan made, allowed, not applied
    APPLIED = "applied"
    DENIED = "denied"  # policy said no
    SKIPPED = "skipped"  # nothing to do (no route, no target, paused...)
    DUPLICATE = "duplicate"  # claim already taken for this key
    FAILED = "failed"  # tried and failed permanently
    REJECTED = "rejected"  # bad input
    RETRY = "retry"  # temporary failure: nothing done, redeliver later
    PARTIAL = "partial"  # some steps done, some refused/blocked (e.g. PDB-blocked evictions)
    PENDING = "pending"  # allowed only with a human's approval: waiting for it
    SCHEDULED = "scheduled"  # not yet (recovery before its healthy delay): recorded, and
    #                          done by the sweep (``remediate sweep``) once due


@dataclass(frozen=True)
class Decision:
    """A policy decision: the same document from the embedded engine and OPA."""

    allow: bool
    reasons: tuple[str, ...] = ()
    decision_id: str = ""
    needs_approval: bool = False
    dry_run: bool = False  # policy forces a dry run (global switch)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"allow": self.allow, "reasons": list(self.reasons)}
        if self.decision_id:
            d["decision_id"] = self.decision_id
        if self.needs_approval:
            d["needs_approval"] = True
        if self.dry_run:
            d["dry_run"] = True
        return d


@dataclass(frozen=True)
class Outcome:
    """The result of handling one signal. Becomes the reply CloudEvent."""

    status: Status
    function: str
    event_id: str
    event_source: str
    target: ObjectRef | None = None
    plan: Plan | None = None
    reasons: tuple[str, ...] = ()
    decision: Decision | None = None
    dry_run: bool = True
    traceparent: str = ""
    tracestate: str = ""
    retryable: bool = False
    #: for ``pending``: {"id", "expires_at", "requested_at"}; after an
    #: approval: {"approved_by", ...}
    approval: Mapping[str, Any] | None = None
    #: after ``applied``: {"result": "succeeded"|"failed", "detail", "seconds"}
    verification: Mapping[str, Any] | None = None
    #: the signal's requester (an agent), when one asked: see Signal.requester
    requester: Mapping[str, str] | None = None

    @property
    def actions(self) -> list[dict[str, str]]:
        if self.plan is None:
            return []
        return [
            {"verb": s.verb, "kind": s.kind, "namespace": s.namespace, "name": s.name}
            for s in self.plan.steps
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "function": self.function,
            "event_id": self.event_id,
            "event_source": self.event_source,
            "target": self.target.as_dict() if self.target else None,
            "actions": self.actions,
            "reasons": list(self.reasons),
            "decision": self.decision.as_dict() if self.decision else None,
            "plan": self.plan.as_dict() if self.plan else None,
            "dry_run": self.dry_run,
            "retryable": self.retryable,
            **({"approval": thaw(self.approval)} if self.approval else {}),
            **({"verification": thaw(self.verification)} if self.verification else {}),
            **({"requested_by": thaw(self.requester)} if self.requester else {}),
        }
