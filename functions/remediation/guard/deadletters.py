"""The dead-letter store: events Knative gave up delivering, kept for replay.

Knative adds three extensions to a dead-lettered event (see
shared/reference/knative-and-event-formats.md): ``knativeerrordest`` (the URL
that failed), ``knativeerrorcode`` (its last HTTP status) and
``knativeerrordata`` (the response body, base64-encoded and cut to 1024
characters). We keep the whole event (structured JSON) plus those three,
decoded, in SQLite. Idempotent on (source, id): a re-delivered dead letter
updates its row instead of adding one.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ERROR_EXTENSIONS = ("knativeerrordest", "knativeerrorcode", "knativeerrordata")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
  seq         INTEGER PRIMARY KEY AUTOINCREMENT,
  source      TEXT NOT NULL,
  id          TEXT NOT NULL,
  type        TEXT NOT NULL,
  error_dest  TEXT NOT NULL DEFAULT '',
  error_code  TEXT NOT NULL DEFAULT '',
  error_data  TEXT NOT NULL DEFAULT '',
  received_at REAL NOT NULL,
  deliveries  INTEGER NOT NULL DEFAULT 1,
  event       TEXT NOT NULL,
  UNIQUE (source, id)
);
"""


def decode_error_data(value: Any) -> str:
    """``knativeerrordata`` is base64 of the failing response body (the docs
    omit the base64); fall back to the raw text when it is not."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value
    return raw.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    source: str
    id: str
    type: str
    error_dest: str
    error_code: str
    error_data: str
    received_at: float
    deliveries: int
    event: dict[str, Any]

    def without_error_extensions(self) -> dict[str, Any]:
        """The event as it was before Knative dead-lettered it, for replay."""
        return {k: v for k, v in self.event.items() if k not in ERROR_EXTENSIONS}

    def summary(self) -> dict[str, Any]:
        return {"seq": self.seq, "source": self.source, "id": self.id, "type": self.type,
                "error_dest": self.error_dest, "error_code": self.error_code,
                "error_data": self.error_data[:200], "deliveries": self.deliveries,
                "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.received_at))}


class DeadLetterStore:
    def __init__(self, path: str = "") -> None:
        if path and path != ":memory:":
            from .ledger import prepare_private_file

            prepare_private_file(path)  # 0600: stored events may carry secrets
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path or ":memory:", timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._db.executescript(_SCHEMA)

    def add(self, event: Mapping[str, Any], *, now: float | None = None) -> int:
        """Store one structured event dict; returns its sequence number."""
        ev = dict(event)
        row = (str(ev.get("source", "")), str(ev.get("id", "")), str(ev.get("type", "")),
               str(ev.get("knativeerrordest", "")), str(ev.get("knativeerrorcode", "")),
               decode_error_data(ev.get("knativeerrordata")), now or time.time(),
               json.dumps(ev, sort_keys=True, default=str))
        with self._lock:
            self._db.execute(
                "INSERT INTO dead_letters (source, id, type, error_dest, error_code, error_data,"
                " received_at, event) VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT(source, id) DO UPDATE SET deliveries = deliveries + 1,"
                " error_dest=excluded.error_dest, error_code=excluded.error_code,"
                " error_data=excluded.error_data, received_at=excluded.received_at,"
                " event=excluded.event", row)
            return int(self._db.execute("SELECT seq FROM dead_letters WHERE source=? AND id=?",
                                        row[:2]).fetchone()[0])

    def list(self, ids: list[str] | None = None) -> list[DeadLetter]:
        sql, args = "SELECT * FROM dead_letters", list[str]()
        if ids:
            marks = ",".join("?" * len(ids))
            sql += f" WHERE id IN ({marks}) OR CAST(seq AS TEXT) IN ({marks})"
            args = list(ids) + list(ids)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq", args).fetchall()
        return [DeadLetter(seq=r[0], source=r[1], id=r[2], type=r[3], error_dest=r[4],
                           error_code=r[5], error_data=r[6], received_at=r[7],
                           deliveries=r[8], event=json.loads(r[9])) for r in rows]

    def remove(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM dead_letters WHERE seq=?", (seq,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
