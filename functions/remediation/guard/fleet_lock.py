"""Fleet locks: one decision at a time about a fleet-wide limit.

The circuit breaker (no more than ``max_cordoned_gpu_nodes_percent`` of the GPU
nodes cordoned) is a limit over the whole fleet, judged from a count of
cordoned nodes. Two deliveries judged at the same time, in one batch (the
batch's facts are read once) or in two worker processes, would both count
``N`` cordoned and both cordon: ``N + 2`` past a limit of ``N + 1``. So a
plan that changes such a count takes the limit's lock, counts again from the
API (never from the batch's memo), is judged on that count, makes the change,
and only then lets the next one count (see ``Pipeline._claimed``).

A lock has a holder and an expiry: a worker that dies holding it delays the
others by at most ``ttl`` seconds, never forever. ``acquire`` does not wait;
the pipeline polls for a bounded time and answers retry after that.

* :class:`LocalFleetLock`: one process (threads), for the in-memory ledger
  and tests that build a pipeline by hand.
* :class:`SQLiteFleetLock`: the processes of one machine sharing a SQLite
  ledger file (``BEGIN IMMEDIATE`` serialises the take).
* :class:`LeaseFleetLock`: a coordination.k8s.io Lease per limit in the
  ledger's namespace, taken by create or by a replace guarded by its
  ``resourceVersion`` (every worker of every node).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any

from ..errors import DependencyUnavailable
from ..ports import LeaseStore
from .lease_ledger import LEDGER_LABEL, RECORD_ANNOTATION, LeaseConflict, LeaseExists, _micro

LOCK_PREFIX = "remediation-lock-"


class LocalFleetLock:
    """Locks of one process."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held: dict[str, tuple[str, float]] = {}

    def acquire(self, name: str, *, holder: str, now: float, ttl: float) -> bool:
        with self._mutex:
            got = self._held.get(name)
            if got is not None and got[0] != holder and got[1] > now:
                return False
            self._held[name] = (holder, now + ttl)
            return True

    def release(self, name: str, *, holder: str) -> None:
        with self._mutex:
            got = self._held.get(name)
            if got is not None and got[0] == holder:
                del self._held[name]

    def close(self) -> None:
        pass


class SQLiteFleetLock:
    """Locks in a table of the SQLite ledger's file (its own connection)."""

    def __init__(self, path: str) -> None:
        self._mutex = threading.Lock()
        self._db = sqlite3.connect(path or ":memory:", timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._db.execute("CREATE TABLE IF NOT EXISTS fleet_locks (name TEXT PRIMARY KEY,"
                         " holder TEXT NOT NULL, expires_at REAL NOT NULL)")

    def acquire(self, name: str, *, holder: str, now: float, ttl: float) -> bool:
        try:
            with self._mutex:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    row = self._db.execute("SELECT holder, expires_at FROM fleet_locks"
                                           " WHERE name=?", (name,)).fetchone()
                    if row is not None and row[0] != holder and row[1] > now:
                        self._db.execute("ROLLBACK")
                        return False
                    self._db.execute("INSERT OR REPLACE INTO fleet_locks VALUES (?, ?, ?)",
                                     (name, holder, now + ttl))
                    self._db.execute("COMMIT")
                    return True
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.OperationalError as exc:
            raise DependencyUnavailable(f"ledger database: {exc}", delay=1.0) from None

    def release(self, name: str, *, holder: str) -> None:
        try:
            with self._mutex:
                self._db.execute("DELETE FROM fleet_locks WHERE name=? AND holder=?",
                                 (name, holder))
        except sqlite3.OperationalError as exc:
            raise DependencyUnavailable(f"ledger database: {exc}", delay=1.0) from None

    def close(self) -> None:
        self._db.close()


class LeaseFleetLock:
    """A Lease per limit, ``remediation-lock-<name>``."""

    def __init__(self, store: LeaseStore) -> None:
        self.store = store
        # the Lease as this process last wrote it, per lock: a release replaces
        # it without reading it first (a Conflict means someone wrote since)
        self._written: dict[str, dict[str, Any]] = {}
        self._mutex = threading.Lock()

    @staticmethod
    def _lease_name(name: str) -> str:
        return f"{LOCK_PREFIX}{name}"[:63]

    @staticmethod
    def _state(lease: dict[str, Any]) -> dict[str, Any]:
        raw = ((lease.get("metadata") or {}).get("annotations") or {}).get(RECORD_ANNOTATION)
        try:
            got = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return got if isinstance(got, dict) else {}

    def acquire(self, name: str, *, holder: str, now: float, ttl: float) -> bool:
        lease_name = self._lease_name(name)
        state = json.dumps({"holder": holder, "expires_at": now + ttl})
        spec = {"holderIdentity": holder[:253], "leaseDurationSeconds": max(1, int(ttl)),
                "acquireTime": _micro(now), "renewTime": _micro(now)}
        with self._mutex:
            known = lease_name in self._written
        if not known:  # the first take of this process: the Lease may not exist yet
            try:
                created = self.store.create(lease_name, labels={LEDGER_LABEL: "lock"},
                                            annotations={RECORD_ANNOTATION: state}, spec=spec)
                self._remember(lease_name, created)
                return True
            except LeaseExists:
                pass
        lease = self.store.get(lease_name)
        if lease is None:
            with self._mutex:
                self._written.pop(lease_name, None)
            return False  # deleted since: the caller polls again and creates it
        held = self._state(lease)
        if held.get("holder") and held.get("holder") != holder \
                and float(held.get("expires_at") or 0) > now:
            self._remember(lease_name, lease)
            return False
        meta = dict(lease.get("metadata") or {})
        meta["annotations"] = {**(meta.get("annotations") or {}), RECORD_ANNOTATION: state}
        try:
            written = self.store.replace({**lease, "metadata": meta,
                                          "spec": {**(lease.get("spec") or {}), **spec}})
        except LeaseConflict:
            return False  # another worker took it since our read
        self._remember(lease_name, written)
        return True

    def _remember(self, lease_name: str, lease: dict[str, Any]) -> None:
        with self._mutex:
            self._written[lease_name] = lease

    def release(self, name: str, *, holder: str) -> None:
        lease_name = self._lease_name(name)
        with self._mutex:
            lease: dict[str, Any] | None = self._written.get(lease_name)
        for _ in range(3):
            if lease is None or self._state(lease).get("holder") != holder:
                lease = self.store.get(lease_name)
            if lease is None or self._state(lease).get("holder") != holder:
                return
            meta = dict(lease.get("metadata") or {})
            meta["annotations"] = {**(meta.get("annotations") or {}),
                                   RECORD_ANNOTATION: json.dumps({"holder": "",
                                                                  "expires_at": 0})}
            try:
                self._remember(lease_name, self.store.replace(
                    {**lease, "metadata": meta,
                     "spec": {**(lease.get("spec") or {}), "holderIdentity": ""}}))
                return
            except LeaseConflict:
                lease = None  # written since: read it and look again
                continue

    def close(self) -> None:
        pass
