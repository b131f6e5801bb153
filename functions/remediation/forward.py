"""Adapter mode: with ``K_SINK`` set (a SinkBinding), webhooks forward their
CloudEvents to the Broker instead of handling them in-process."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cloudevents.core.v1.event import CloudEvent
from flask import Response

from .clients.sink import send_all
from .settings import HTTPSettings


def forward_events(events: Sequence[CloudEvent], http: HTTPSettings, *,
                   rejected: list[dict[str, Any]] | None = None,
                   extra: dict[str, Any] | None = None) -> Response:
    """Forward ``events``; ``rejected``: alerts of the same group refused one
    by one (reported, never forwarded)."""
    deliveries = send_all(http.sink, events, timeout=http.sink_timeout) if events else []
    failed = [d for d in deliveries if not d.ok]
    body = {"received": len(events) + len(rejected or []), **(extra or {}),
            "forwarded": len(deliveries) - len(failed),
            "failed": [{"event_id": d.event_id, "status": d.status, "detail": d.detail}
                       for d in failed[:20]],
            "rejected": list(rejected or [])[:100]}
    status = 503 if failed else 200
    headers = {"Retry-After": "5"} if failed else {}
    return Response(json.dumps(body), status=status, mimetype="application/json",
                    headers=headers)
