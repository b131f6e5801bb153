"""From CloudEvents to outcomes: the glue shared by the HTTP app and the CLI.

Pure apart from what the pipeline's ports do.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

from .errors import InvalidInput
from .events.signal import signal_from_event
from .guard.approval import verify_approval
from .model import TYPE_APPROVAL_GRANTED, Outcome, Status
from .pipeline import BatchMemo, Pipeline


def _attr(event: Any, getter: str) -> str:
    try:
        return str(getattr(event, getter)() or "")
    except Exception:  # noqa: BLE001 - a broken attribute is just unknown here
        return ""


def handle_event(pipeline: Pipeline, event: Any, *, via: str,
                 batch: BatchMemo | None = None) -> Outcome:
    """Handle one CloudEvent. Bad content gives a REJECTED outcome, never an action."""
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
    return pipeline.approve(approval.key, approval.approver, via="approval-event")


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
