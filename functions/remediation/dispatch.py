"""From CloudEvents to outcomes: the glue shared by the HTTP app and the CLI.

Every outcome is logged as one JSON line on the ``remediation.outcome``
logger (INFO; WARNING for ``retry``/``failed``/``partial``/``rejected``):
``event_id``, ``alertname``, ``function``, ``status``, ``target``,
``reasons``, ``traceparent`` (never a credential: outcomes carry none). With
``REMEDIATION_OUTCOME_SINK_ALL`` every outcome (not only ``applied`` and
approval requests) also goes to the outcome sink.

Pure apart from what the pipeline's ports do and the log.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Sequence
from typing import Any

from . import metrics
from .errors import InvalidInput
from .events.signal import signal_from_event
from .guard.approval import verify_approval
from .model import TYPE_APPROVAL_GRANTED, Outcome, Status
from .pipeline import REPLY_VIAS, BatchMemo, Pipeline

outcome_log = logging.getLogger("remediation.outcome")
_LOUD = frozenset({Status.RETRY, Status.FAILED, Status.PARTIAL, Status.REJECTED})


def outcome_record(outcome: Outcome, *, alertname: str = "", via: str = "") -> dict[str, Any]:
    """The fields of an outcome's log line (plain JSON)."""
    record: dict[str, Any] = {
        "event_id": outcome.event_id, "alertname": alertname, "function": outcome.function,
        "status": outcome.status.value, "target": str(outcome.target) if outcome.target else "",
        "reasons": list(outcome.reasons)[:10], "traceparent": outcome.traceparent, "via": via}
    if outcome.plan is not None:
        record["action"] = outcome.plan.action
    if outcome.verification:
        record["verification"] = str(outcome.verification.get("result") or "")
    return record


def log_outcome(outcome: Outcome, *, alertname: str = "", via: str = "") -> None:
    metrics.outcome(outcome)  # every outcome is logged here, once: so it is counted here
    level = logging.WARNING if outcome.status in _LOUD else logging.INFO
    if outcome_log.isEnabledFor(level):
        outcome_log.log(level, "%s", json.dumps(outcome_record(outcome, alertname=alertname,
                                                               via=via),
                                                separators=(",", ":"), default=str))


def report(pipeline: Pipeline, outcome: Outcome, *, alertname: str = "", via: str = "") -> Outcome:
    """Log the outcome and, when asked, send it to the outcome sink."""
    log_outcome(outcome, alertname=alertname, via=via)
    settings = getattr(pipeline, "settings", None)
    publish = getattr(pipeline, "publish", None)
    if (settings is not None and settings.http.outcome_sink_all and publish is not None
            and not (outcome.status is Status.PENDING and via not in REPLY_VIAS)):
        try:  # an approval request on a path without a reply was published already
            publish(outcome)
        except Exception as exc:  # noqa: BLE001 - the reply still carries the outcome
            outcome_log.warning("could not publish outcome %s: %s", outcome.event_id, exc)
    return outcome


def _attr(event: Any, getter: str) -> str:
    try:
        return str(getattr(event, getter)() or "")
    except Exception:  # noqa: BLE001 - a broken attribute is just unknown here
        return ""


def handle_event(pipeline: Pipeline, event: Any, *, via: str,
                 batch: BatchMemo | None = None) -> Outcome:
    """Handle one CloudEvent. Bad content gives a REJECTED outcome, never an
    action. Every outcome is logged (see the module docstring)."""
    outcome = _handle_event(pipeline, event, via=via, batch=batch)
    return report(pipeline, outcome, alertname=_attr(event, "get_subject")[:200], via=via)


def _handle_event(pipeline: Pipeline, event: Any, *, via: str,
                  batch: BatchMemo | None = None) -> Outcome:
    if _attr(event, "get_type") == TYPE_APPROVAL_GRANTED:
        return handle_approval(pipeline, event)
    try:
        signal = signal_from_event(event)
    except InvalidInput as exc:
        reason = str(exc) if not exc.attribute else f"{exc.attribute}: {exc}"
        return Outcome(status=Status.REJECTED, function="", event_id=_attr(event, "get_id"),
                       event_source=_attr(event, "get_source"), reasons=(reason,))
    try:
        requested = str(event.get_extension("remediation") or "")
    except Exception:  # noqa: BLE001
        requested = ""
    return pipeline.handle(signal, via=via, requested=requested, batch=batch)


def handle_approval(pipeline: Pipeline, event: Any) -> Outcome:
    """A signed approval event releases one pending remediation (see guard.approval)."""
    cfg = pipeline.settings.approval
    try:
        data = event.get_data()
        approval = verify_approval(data, secret=cfg.secret.reveal(), approvers=cfg.approvers)
    except InvalidInput as exc:
        reason = str(exc) if not exc.attribute else f"{exc.attribute}: {exc}"
        return Outcome(status=Status.REJECTED, function="", event_id=_attr(event, "get_id"),
                       event_source=_attr(event, "get_source"), reasons=(reason,))
    except Exception:  # noqa: BLE001 - undecodable data is just invalid here
        return Outcome(status=Status.REJECTED, function="", event_id=_attr(event, "get_id"),
                       event_source=_attr(event, "get_source"),
                       reasons=("approval data is not a JSON object",))
    return pipeline.approve(approval.key, approval.approver, via="approval-event",
                            expires_at=approval.expires_at)


#: batches at least this large run with the cyclic garbage collector paused
LARGE_BATCH = 256


def handle_events(pipeline: Pipeline, events: Sequence[Any], *, via: str) -> list[Outcome]:
    """Handle a batch (an Alertmanager group, a CloudEvents batch, a replay
    file). Cluster facts and ledger history are read once per batch. A large
    batch creates some hundred thousand short-lived objects that reference
    counting frees; the cyclic collector would still walk every live object
    of the batch again and again (about 12% of a 20,000-alert storm), so it
    is paused for the batch and runs once after it."""
    batch = BatchMemo()  # one read of each cluster object per batch
    pause = len(events) >= LARGE_BATCH and gc.isenabled()
    if pause:
        gc.disable()
    try:
        return [handle_event(pipeline, e, via=via, batch=batch) for e in events]
    finally:
        if pause:
            gc.enable()


def http_status(outcomes: list[Outcome]) -> int:
    """200 when every outcome is final; 503 when any is worth redelivering
    (the rest come back as duplicates); 400 when all were rejected."""
    if any(o.status is Status.RETRY for o in outcomes):
        return 503
    if outcomes and all(o.status is Status.REJECTED for o in outcomes):
        return 400
    return 200
