"""Forward adapter output to the Broker (``K_SINK``) as binary-mode CloudEvents.

The ONLY module that imports ``httpx``. One pooled client per process; every
request has a timeout. Timeouts, transport errors and 5xx are retried with
exponential backoff; anything still undelivered makes the whole webhook
answer 503, so Alertmanager retries the notification with backoff (a 4xx
would only stop that attempt; the group comes again at the next
``group_interval`` either way), and the Broker side deduplicates on source +
id, which are deterministic.
Large groups are sent with bounded concurrency so thousands of alerts are
answered well inside Alertmanager's notify timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..events.binding import to_binary

log = logging.getLogger("remediation.sink")

_clients: dict[str, Any] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Delivery:
    event_id: str
    ok: bool
    status: int  # HTTP status, 0 for a transport error
    detail: str


def _client(timeout: float) -> Any:
    import httpx

    key = f"{timeout}"
    with _lock:
        if key not in _clients:
            _clients[key] = httpx.Client(
                timeout=httpx.Timeout(timeout),
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
            )
        return _clients[key]


def send(sink: str, event: Any, *, timeout: float, attempts: int = 3,
         backoff: float = 0.2) -> Delivery:
    import httpx

    headers, body = to_binary(event)
    event_id = str(event.get_id())
    status, detail = 0, ""
    for attempt in range(attempts):
        try:
            resp = _client(timeout).post(sink, headers=headers, content=body)
            status = resp.status_code
            if 200 <= status < 300:
                return Delivery(event_id, True, status, "accepted")
            detail = resp.text[:200]
            if status < 500 and status not in (404, 408, 409, 429):
                return Delivery(event_id, False, status, f"refused: {detail}")
        except httpx.HTTPError as exc:
            status, detail = 0, type(exc).__name__
        if attempt + 1 < attempts:
            time.sleep(backoff * (2 ** attempt))
    return Delivery(event_id, False, status, detail or "no answer")


def send_all(sink: str, events: Sequence[Any], *, timeout: float,
             concurrency: int = 16) -> list[Delivery]:
    if len(events) <= 1:
        return [send(sink, e, timeout=timeout) for e in events]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(events))) as pool:
        return list(pool.map(lambda e: send(sink, e, timeout=timeout), events))
