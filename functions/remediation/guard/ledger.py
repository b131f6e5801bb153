"""The ledger: claim each remediation key once, record what happened.

SQLite (stdlib) is the embedded implementation: an in-memory database for one
process, or a file shared by several processes (WAL, busy timeout). A claim
is an INSERT on the key's primary key, so exactly one claimer wins; a claim
whose holder vanished (still ``claimed`` past ``expires_at``) can be retaken.
Finished records answer history queries for policy limits.

States: ``claimed`` -> ``applied`` | ``partial`` | ``planned`` | ``denied`` |
``failed`` | ``skipped``; a temporary failure releases the claim (row deleted)
so a redelivery can try again. Only ``applied``, ``partial`` and ``planned``
are final for the key: a ``denied``, ``failed`` or ``skipped`` key is judged
again on the next delivery of its alert (Alertmanager re-sends a firing
alert at every ``repeat_interval``; limits may have been raised, a freeze
lifted, a refused credential fixed), with the target window checked as for a
new claim.

Human approval: ``claimed`` -> ``pending`` (:meth:`hold`, with the signal kept
so the action can be re-planned and an expiry) -> ``approved``
(:meth:`approve`, atomic: only a pending, unexpired key) -> ``claimed`` again
by the next claimer, who sees ``approved_by`` in the claim result and passes
it to the policy. A pending key past its expiry, or one marked ``expired``,
can be claimed afresh (the alert is still firing: ask again).

Scheduled work: a remediation that may only run later (recovery after the
healthy delay) is recorded ``scheduled`` under its own key with the signal
and the time it is due (``expires_at``) by :meth:`schedule`; :meth:`due` lists
those whose time has come, for the sweep (``remediate sweep``), which runs
the path for each and marks it ``swept``. Scheduled records are not actions:
they count for no limit and hold no target.

Verification of an applied action is recorded beside the status
(``verification``: ``succeeded`` | ``failed``, with a detail), so history
readers such as the escalation ladder can see that a fix did not take.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Any

from ..errors import DependencyUnavailable
from ..model import Plan
from ..ports import Ledger
from ..records import (
    APPROVAL_KEPT,
    COUNTED,
    JUDGED_AGAIN,
    RECLAIMABLE,
    TAKEN,
    ApprovalResult,
    ClaimResult,
    LedgerRecord,
    LedgerStatus,
    reclaimable,
)

__all__ = ["APPROVAL_KEPT", "COUNTED", "JUDGED_AGAIN", "RECLAIMABLE", "TAKEN", "ApprovalResult",
           "ClaimResult", "Ledger", "LedgerRecord", "LedgerStatus", "SQLiteLedger", "reclaimable"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
  key         TEXT PRIMARY KEY,
  function    TEXT NOT NULL,
  action      TEXT NOT NULL,
  target      TEXT NOT NULL,
  status      TEXT NOT NULL,
  holder      TEXT NOT NULL,
  claimed_at  REAL NOT NULL,
  expires_at  REAL NOT NULL,
  updated_at  REAL NOT NULL,
  event_id    TEXT NOT NULL DEFAULT '',
  plan        TEXT NOT NULL DEFAULT '{}',
  decision    TEXT NOT NULL DEFAULT '{}',
  reasons     TEXT NOT NULL DEFAULT '[]',
  signal      TEXT NOT NULL DEFAULT '{}',
  approved_by TEXT NOT NULL DEFAULT '',
  approved_at REAL NOT NULL DEFAULT 0,
  verification        TEXT NOT NULL DEFAULT '',
  verification_detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS claims_status ON claims(status, expires_at);
"""
#: schema version 2: the limits' counts, the target window and planners'
#: history filter on target/action, a few statuses and a time range; the old
#: (target, updated_at) index made SQLite walk every denied record of a target
#: to find its few actions. Run once per database (PRAGMA user_version), in one
#: write transaction, so replicas sharing the file do not all rebuild it.
_MIGRATION_2 = """
DROP INDEX IF EXISTS claims_target;
DROP INDEX IF EXISTS claims_action;
CREATE INDEX IF NOT EXISTS claims_target_status ON claims(target, status, updated_at);
CREATE INDEX IF NOT EXISTS claims_action_status ON claims(action, status, updated_at);
CREATE INDEX IF NOT EXISTS claims_status_updated ON claims(status, updated_at);
"""

class LedgerMissing(RuntimeError):
    """The ledger file existed and is gone: starting empty would act twice."""


def prepare_private_file(path: str) -> None:
    """Create a SQLite file readable by its owner only (0600), or tighten an
    existing one; refuse a file that existed before and is now missing.

    A marker beside the file (``.<name>.created``) remembers that it was
    created: if the file is deleted while the marker stays, the ledger would
    silently start empty and the same remediation would run again (issue 15).
    Wiping the folder (a new pod's emptyDir) removes both: a legitimate start.
    """
    file = Path(path)
    marker = file.with_name(f".{file.name}.created")
    if not file.exists():
        if marker.exists():
            raise LedgerMissing(
                f"the ledger {path} existed (see {marker}) but is gone: refusing to start "
                "empty, which would repeat remediations already done; restore it, or "
                f"delete {marker} to start a new ledger on purpose")
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    else:
        try:
            if file.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
        except OSError:
            pass  # not ours to change: SQLite still opens it
    if not marker.exists():
        fd = os.open(marker, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


class SQLiteLedger:
    """Claims and history in SQLite. ``path=""`` means in-memory; a file is
    created 0600 and must not vanish once created (:func:`prepare_private_file`)."""

    def __init__(self, path: str = "") -> None:
        if path and path != ":memory:":
            prepare_private_file(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path or ":memory:", timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 10000")
        if path:
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(_SCHEMA)
        if self._db.execute("PRAGMA user_version").fetchone()[0] < 2:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._db.execute("PRAGMA user_version").fetchone()[0] < 2:
                    for statement in filter(str.strip, _MIGRATION_2.split(";")):
                        self._db.execute(statement)
                    self._db.execute("PRAGMA user_version = 2")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def claim(self, plan: Plan, *, holder: str, event_id: str, now: float,
              ttl: float, target_window: float = 0.0) -> ClaimResult:
        """See :meth:`_claim`; a database locked past the busy timeout by
        another process is a temporary failure (answer retry), not a crash."""
        try:
            return self._claim(plan, holder=holder, event_id=event_id, now=now, ttl=ttl,
                               target_window=target_window)
        except sqlite3.OperationalError as exc:
            raise DependencyUnavailable(f"ledger database: {exc}", delay=1.0) from None

    def _claim(self, plan: Plan, *, holder: str, event_id: str, now: float,
               ttl: float, target_window: float = 0.0) -> ClaimResult:
        """Claim ``plan.key`` once. With ``target_window``, also refuse when the
        same action on the same target was taken (or is in flight) for another
        incident within that many seconds: a storm of per-pod alerts about one
        Deployment restarts it once. Check and insert are one transaction
        (BEGIN IMMEDIATE), so racing processes cannot both win."""
        def plan_json() -> str:  # only a winner writes its plan (a storm mostly loses)
            return json.dumps(plan.as_dict(), sort_keys=True)
        def target_recent() -> ClaimResult | None:
            if target_window <= 0:
                return None
            recent = self._db.execute(
                "SELECT key, status, updated_at FROM claims WHERE target=? AND action=?"
                " AND (status IN ('claimed','applied','planned','partial')"
                "      OR (status='pending' AND expires_at >= ?))"
                " AND updated_at >= ? AND key != ? ORDER BY updated_at DESC LIMIT 1",
                (str(plan.target), plan.action, now, now - target_window,
                 plan.key)).fetchone()
            if recent is None:
                return None
            return ClaimResult(False, plan.key, "target-recent", "", other_key=recent[0],
                               other_status=recent[1], age=now - recent[2])

        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                got = self._db.execute("SELECT status, holder, expires_at, approved_by FROM claims"
                                       " WHERE key=?",
                                       (plan.key,)).fetchone()
                if got is not None:
                    status, other, expires_at, approved_by = got
                    busy = target_recent() if status in JUDGED_AGAIN else None
                    if busy is not None:
                        self._db.execute("COMMIT")
                        return busy
                    if reclaimable(status, expires_at, now):
                        # holder vanished, approval granted, or approval expired
                        self._db.execute(
                            "UPDATE claims SET status='claimed', holder=?, claimed_at=?,"
                            " expires_at=?, updated_at=?, event_id=?, plan=?, approved_by=?"
                            " WHERE key=?",
                            (holder, now, now + ttl, now, event_id, plan_json(),
                             approved_by if status in APPROVAL_KEPT else "", plan.key))
                        self._db.execute("COMMIT")
                        return ClaimResult(True, plan.key, "claimed", holder,
                                           approved_by=approved_by if status in APPROVAL_KEPT
                                           else "")
                    self._db.execute("COMMIT")
                    return ClaimResult(False, plan.key, status, other)
                busy = target_recent()
                if busy is not None:
                    self._db.execute("COMMIT")
                    return busy
                self._db.execute(
                    "INSERT INTO claims (key, function, action, target, status, holder,"
                    " claimed_at, expires_at, updated_at, event_id, plan)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (plan.key, plan.function, plan.action, str(plan.target), "claimed", holder,
                     now, now + ttl, now, event_id, plan_json()))
                self._db.execute("COMMIT")
                return ClaimResult(True, plan.key, "claimed", holder)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def finish(self, key: str, status: LedgerStatus, *, now: float,
               decision: dict[str, Any] | None = None,
               reasons: list[str] | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE claims SET status=?, updated_at=?, decision=?, reasons=? WHERE key=?",
                (LedgerStatus(status).value, now, json.dumps(decision or {}, sort_keys=True),
                 json.dumps(reasons or []), key))

    def release(self, key: str, *, holder: str) -> None:
        """Give up our claim after a temporary failure: the key is free again,
        or back to ``approved`` when a human had approved it (an approval is
        not lost to a Vault or API outage)."""
        with self._lock:
            self._db.execute("UPDATE claims SET status='approved' WHERE key=? AND holder=?"
                             " AND status='claimed' AND approved_by != ''", (key, holder))
            self._db.execute("DELETE FROM claims WHERE key=? AND holder=? AND status='claimed'",
                             (key, holder))

    def hold(self, key: str, *, holder: str, now: float, expires_at: float,
             signal: dict[str, Any], decision: dict[str, Any] | None = None,
             reasons: list[str] | None = None) -> None:
        """Park our claimed key as ``pending`` a human's approval until ``expires_at``."""
        with self._lock:
            self._db.execute(
                "UPDATE claims SET status='pending', updated_at=?, expires_at=?, signal=?,"
                " decision=?, reasons=? WHERE key=? AND holder=? AND status='claimed'",
                (now, expires_at, json.dumps(signal, sort_keys=True),
                 json.dumps(decision or {}, sort_keys=True), json.dumps(reasons or []),
                 key, holder))

    def approve(self, key: str, *, approver: str, now: float) -> ApprovalResult:
        """Approve a pending key, once, before it expires (one transaction)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                got = self._db.execute("SELECT status, expires_at FROM claims WHERE key=?",
                                       (key,)).fetchone()
                granted = False
                if got is None:
                    result = "unknown"
                elif got[0] == "pending" and got[1] < now:
                    self._db.execute("UPDATE claims SET status='expired', updated_at=?"
                                     " WHERE key=?", (now, key))
                    result = "expired"
                elif got[0] == "pending":
                    self._db.execute(
                        "UPDATE claims SET status='approved', approved_by=?, approved_at=?,"
                        " updated_at=? WHERE key=?", (approver, now, now, key))
                    result, granted = "approved", True
                else:
                    result = got[0]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ApprovalResult(granted, key, result, self.get(key))

    def schedule(self, key: str, *, function: str, target: str, event_id: str, now: float,
                 due_at: float, signal: dict[str, Any], reasons: list[str]) -> bool:
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO claims (key, function, action, target, status, holder,"
                " claimed_at, expires_at, updated_at, event_id, signal, reasons)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, function, "scheduled", target, "scheduled", "sweep", now, due_at, now,
                 event_id, json.dumps(signal, sort_keys=True), json.dumps(reasons)))
            return cur.rowcount == 1

    def due(self, *, now: float, limit: int = 100) -> list[LedgerRecord]:
        return self._select("SELECT * FROM claims WHERE status='scheduled' AND expires_at <= ?"
                            " ORDER BY expires_at LIMIT ?", (now, limit))

    def pending(self, *, now: float) -> list[LedgerRecord]:
        """Keys waiting for approval and not expired, oldest first."""
        return self._select("SELECT * FROM claims WHERE status='pending' AND expires_at >= ?"
                            " ORDER BY updated_at", (now,))

    def record_verification(self, key: str, result: str, *, detail: str, now: float) -> None:
        with self._lock:
            self._db.execute("UPDATE claims SET verification=?, verification_detail=?"
                             " WHERE key=?", (result, detail[:2000], key))

    def stats(self, plan: Plan, *, now: float, window: float,
              exclude_key: str = "") -> dict[str, int]:
        """Actions taken (or in flight) in the window, for policy limits.
        ``exclude_key``: the plan being decided, which must not count itself."""
        since = now - window
        with self._lock:  # one pass over the window's actions (status, updated_at index)
            target, action, total = self._db.execute(
                "SELECT COALESCE(SUM(target=?), 0), COALESCE(SUM(action=?), 0), COUNT(*)"
                " FROM claims WHERE status IN ('applied','partial','claimed')"
                " AND updated_at >= ? AND key != ?",
                (str(plan.target), plan.action, since, exclude_key)).fetchone()
        return {"target_actions_in_window": int(target), "action_count_in_window": int(action),
                "cluster_actions_in_window": int(total), "window_seconds": int(window)}

    def get(self, key: str) -> LedgerRecord | None:
        rows = self._select("SELECT * FROM claims WHERE key=?", (key,))
        return rows[0] if rows else None

    def history(self, *, target: str | None = None, limit: int = 100,
                statuses: Collection[str] | None = None) -> list[LedgerRecord]:
        sql, where, args = "SELECT * FROM claims", list[str](), list[str | int]()
        if target:
            where.append("target=?")
            args.append(target)
        if statuses is not None:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(str(s) for s in statuses)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY updated_at DESC LIMIT ?"
        args.append(limit)
        return self._select(sql, args)

    def _select(self, sql: str, args: Any) -> list[LedgerRecord]:
        """Whole records, JSON columns decoded, in one query."""
        with self._lock:
            cur = self._db.execute(sql, args)
            rows = cur.fetchall()
            cols = [c[0] for c in cur.description]
        out = []
        for row in rows:
            rec = dict(zip(cols, row, strict=True))
            for k in ("plan", "decision", "reasons", "signal"):
                rec[k] = json.loads(rec[k])
            out.append(LedgerRecord.from_document(rec))
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()

