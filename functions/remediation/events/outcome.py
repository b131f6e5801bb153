"""Outcome -> the reply CloudEvent.

- ``type``: :data:`TYPE_OUTCOME`, which no Trigger filter may match; for a
  ``pending`` outcome :data:`TYPE_APPROVAL_REQUESTED` (the reply asks for a
  human; a notifier may subscribe to it, no remediation Trigger does).
- ``source``: ``<source_prefix>/<function>`` (``/remediation/router`` when no
  function was chosen).
- ``id``: a digest of the handled event's ``source`` + ``id`` and the outcome
  status, so a redelivered event that ends the same way replies with the same
  id (the Broker side can deduplicate replies too). The verification result
  and the approver, when present, are part of the digest: the outcome sent
  early (applied) and the verified one are two events.
- ``subject``: the target object (``Deployment/llm-serving/vllm``) when known.
- extensions: ``remediationstatus`` (the status value),
  ``remediationverification`` (succeeded/failed/unknown, after an apply) and the trace context
  (``traceparent``/``tracestate``) copied from the outcome. Deliberately NO
  ``remediation`` extension: Triggers select on it, and a reply that matched a
  Trigger would loop through the Broker.
- no ``time`` (the builder is pure and deterministic).
- data: ``outcome.as_dict()``.
"""

from __future__ import annotations

from typing import Any

from cloudevents.core.v1.event import CloudEvent

from ..model import TYPE_APPROVAL_REQUESTED, TYPE_OUTCOME, Outcome, Status, stable_digest
from .binding import JSON_CONTENT_TYPE, SPECVERSION, new_event, validate_attributes

__all__ = ["outcome_event", "outcome_event_id"]


def outcome_event_id(event_source: str, event_id: str, status: str, extra: str = "") -> str:
    parts = ("outcome", event_source, event_id, status) + ((extra,) if extra else ())
    return stable_digest(*parts, length=32)


def outcome_event(outcome: Outcome, *, source_prefix: str = "/remediation") -> CloudEvent:
    """The reply event for ``outcome`` (see module docstring)."""
    status = outcome.status.value
    verified = str((outcome.verification or {}).get("result") or "")
    approved_by = str((outcome.approval or {}).get("approved_by") or "")
    attributes: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": outcome_event_id(outcome.event_source, outcome.event_id, status,
                               verified + (f"/approved:{approved_by}" if approved_by else "")),
        "source": f"{source_prefix.rstrip('/')}/{outcome.function or 'router'}",
        "type": TYPE_APPROVAL_REQUESTED if outcome.status is Status.PENDING else TYPE_OUTCOME,
        "datacontenttype": JSON_CONTENT_TYPE,
        "remediationstatus": status,
    }
    if verified:
        attributes["remediationverification"] = verified
    if outcome.target is not None:
        attributes["subject"] = str(outcome.target)
    if outcome.traceparent:
        attributes["traceparent"] = outcome.traceparent
    if outcome.tracestate:
        attributes["tracestate"] = outcome.tracestate
    return new_event(validate_attributes(attributes), outcome.as_dict())
