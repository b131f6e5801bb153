"""The Kubernetes-native ledger: one coordination.k8s.io Lease per key.

Same protocol and semantics as :class:`~.ledger.SQLiteLedger` (the shared
test suite runs both), for a cluster where several replicas of several
functions, on any node, must claim each remediation key once.

Storage, pure over a :class:`LeaseStore` port (``clients.kube`` implements
it over the API; no Kubernetes import here):

- the key's Lease is named ``rem-<sha256(key)[:40]>`` (a valid DNS name
  whatever the key), labelled ``inferenceremediation.io/ledger=claim``, the
  status, a digest of the target and the action (history and stats select
  on them), with the whole record as JSON in the annotation
  ``inferenceremediation.io/record``; ``spec.holderIdentity``,
  ``leaseDurationSeconds`` and ``acquireTime``/``renewTime`` say who holds
  it, for ``kubectl get leases``. Times in the record are the callers'
  ``now`` (never the server clock), so a fake clock works in tests.
- **Claim = create.** A claim creates the key Lease without reading it
  first; AlreadyExists means the key exists, and only then is it read: a
  key that may be taken again (an expired claim, an approved or expired
  approval) is retaken by a replace carrying the ``resourceVersion`` read,
  so of two racing retakers exactly one wins (the other gets Conflict and
  re-reads). Writes keep the Lease the API answered, so the claim's finish
  (and the verification after it) replaces with that ``resourceVersion``
  without reading the Lease again; a Conflict reads it and decides again.
- **The target window** (one action per target and action, any incident)
  spans several keys, and Kubernetes has no multi-object transaction. It is
  serialised through a second Lease per (target, action),
  ``remt-<sha256(target|action)[:40]>``, whose record names the key that
  last took the target. A claimer lists, in one request (one snapshot),
  that Lease and the key Leases of the target (the target Lease carries the
  target and action labels and the status label ``target``; one written
  before it did is met by the create, then read by name before the list)
  and asks what the SQLite claim asks: is
  any other key taken (or pending approval) within *its* window? So a
  replica configured with a different window sees every earlier action, not
  only the last. Free, it takes the target Lease by create or by a replace
  with the ``resourceVersion`` it read first (so of two racers one wins; the
  loser re-reads and decides again), and only then creates its key Lease.
  Race analysis: a claimer that took the target Lease but has not yet
  created its key Lease is visible as the target record's key with no
  Lease: that counts as in flight (``claimed``) until the target record's
  own expiry (the claim TTL), so a racer arriving in that gap loses instead
  of seeing a free target; so does a key judged again (denied, failed,
  skipped) whose target Lease was taken after its record's last write (its
  retake is in flight). The target's list also shows the claimed key itself
  when it is taken or in flight, which answers a redelivery without a read
  of its Lease. A claimer that died in the gap blocks the target
  for at most the TTL, like a dead holder's claim. Claims made without a
  window (``target_window=0``) do not take the target Lease; their records
  still count for claimers that have one.
- finish, hold, approve, verification and release are read-modify-replace
  with the ``resourceVersion``; a Conflict re-reads and decides again, so
  an approval is granted once even when two approvers race.
- release deletes the key Lease with a ``resourceVersion`` precondition and
  marks the target Lease ``released`` if it still names the key (nothing
  was done: the target is free at once, as in SQLite), or puts an approved
  key back to ``approved``.
- Lease bodies reach the API as plain JSON (``clients.kube``): their
  MicroTimes (``acquireTime``, ``renewTime``) need six fraction digits.

Stats, history and the target check select Leases by label on the API
server (target and action digests, and a set-based selector on the status
label), so a claim reads the few records that count, never every Lease:
thousands of denied or skipped records (a storm of forged alerts) cost a
claim nothing. Finished records older than ``retention`` seconds (longer
than any policy or planner window) are deleted, a bounded batch at most once
per ``prune_interval`` (issue 15, finding 6).

Approvals are integrity-protected: with an approval key (the approval HMAC
secret) the ledger signs ``approved_by``/``approved_at`` of the key it
approves, and a claimer honours an approval only when that signature
verifies, so a pod that can write Leases cannot forge one (issue 15,
finding 4).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from ..errors import TemporaryError
from ..model import Plan
from ..ports import LeaseStore
from ..records import (
    APPROVAL_KEPT,
    COUNTED,
    JUDGED_AGAIN,
    TAKEN,
    ApprovalResult,
    ClaimResult,
    LedgerRecord,
    LedgerStatus,
    reclaimable,
)

__all__ = ["LeaseConflict", "LeaseExists", "LeaseLedger", "LeaseStore", "key_lease_name",
           "target_lease_name"]

log = logging.getLogger("remediation.ledger")

LEDGER_LABEL = "inferenceremediation.io/ledger"
STATUS_LABEL = "inferenceremediation.io/status"
TARGET_LABEL = "inferenceremediation.io/target"
ACTION_LABEL = "inferenceremediation.io/action"
RECORD_ANNOTATION = "inferenceremediation.io/record"

_ATTEMPTS = 8  # re-reads after a Conflict before giving up (as busy)


class LeaseExists(Exception):
    """create: a Lease with that name exists (409 AlreadyExists)."""


class LeaseConflict(Exception):
    """replace/delete: the resourceVersion is stale (409 Conflict) or it is gone."""


#: records in these statuses are still in play and never pruned
LIVE_STATUSES = frozenset({"claimed", "pending", "approved"})
#: statuses a target check must see (taken, in flight, waiting for approval)
TARGET_STATUSES = tuple(TAKEN) + ("pending",)
#: the status label of target Leases, so one list finds a target Lease and
#: the records that count for it
TARGET_LEASE_STATUS = "target"
#: at most this many Leases deleted per prune
PRUNE_BATCH = 200
#: Leases this process wrote last, kept (newest first out) so the next write
#: of the same key replaces with the resourceVersion it got back instead of
#: reading the Lease again; a stale one costs a Conflict and a read
WRITTEN_CACHE = 512


def approval_mac(secret: str, rec: Mapping[str, Any]) -> str:
    msg = (f"inferenceremediation-lease-approval-v1\n{rec.get('key')}\n"
           f"{rec.get('approved_by')}\n{float(rec.get('approved_at') or 0):.6f}")
    return hmac.new(secret.encode(), msg.encode(), hashlib.sha256).hexdigest()


def _digest(text: str, n: int = 40) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def key_lease_name(key: str) -> str:
    return f"rem-{_digest(key)}"


def target_lease_name(target: str, action: str) -> str:
    return f"remt-{_digest(target + '|' + action)}"


def _micro(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(lease: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if lease is None:
        return None
    raw = ((lease.get("metadata") or {}).get("annotations") or {}).get(RECORD_ANNOTATION)
    try:
        rec = json.loads(raw) if raw else None
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


class LeaseLedger:
    """The Ledger protocol over Leases (see the module docstring)."""

    def __init__(self, store: LeaseStore, *, approval_key: str = "",
                 retention: float = 86400.0, prune_interval: float = 300.0) -> None:
        self.store = store
        self.approval_key = approval_key
        self.retention = retention
        self.prune_interval = prune_interval
        self._pruned_at = float("-inf")
        self._written: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._written_lock = threading.Lock()
        if not approval_key:
            log.warning("Lease ledger without an approval key: approvals kept in Leases are "
                        "not integrity-protected (set REMEDIATION_APPROVAL_SECRET)")

    def _approved_by(self, rec: Mapping[str, Any]) -> str:
        """Who approved ``rec``, when the approval's signature holds."""
        who = str(rec.get("approved_by") or "")
        if not who or not self.approval_key:
            return who
        mac = str(rec.get("approval_mac") or "")
        if hmac.compare_digest(mac.encode(), approval_mac(self.approval_key, rec).encode()):
            return who
        log.warning("ledger key %s: approval by %r has no valid signature (forged or "
                    "written without the key): ignored", rec.get("key"), who[:80])
        return ""

    # -- writing -----------------------------------------------------------
    def _labels(self, rec: Mapping[str, Any]) -> dict[str, str]:
        return {LEDGER_LABEL: "claim", STATUS_LABEL: str(rec["status"]),
                TARGET_LABEL: _digest(str(rec["target"])),
                ACTION_LABEL: _digest(str(rec["action"]), 16)}

    def _spec(self, rec: Mapping[str, Any]) -> dict[str, Any]:
        return {"holderIdentity": str(rec["holder"])[:253],
                "leaseDurationSeconds": max(1, int(rec["expires_at"] - rec["claimed_at"])),
                "acquireTime": _micro(rec["claimed_at"]), "renewTime": _micro(rec["updated_at"])}

    def _remember(self, written: Mapping[str, Any] | None) -> None:
        """Keep the Lease as the API answered our write (its resourceVersion)."""
        meta = (written or {}).get("metadata") if isinstance(written, Mapping) else None
        if not isinstance(meta, Mapping) or not meta.get("name") \
                or not meta.get("resourceVersion") or _record(written) is None:
            return
        with self._written_lock:
            self._written[str(meta["name"])] = dict(written or {})
            self._written.move_to_end(str(meta["name"]))
            while len(self._written) > WRITTEN_CACHE:
                self._written.popitem(last=False)

    def _forget(self, name: str) -> None:
        with self._written_lock:
            self._written.pop(name, None)

    def _read(self, name: str, *, cached: bool) -> tuple[dict[str, Any] | None, bool]:
        """The key Lease, and whether it is our own copy: as we last wrote it
        when ``cached`` and we did (a replace with it fails with Conflict when
        someone wrote since, and the caller reads again), else from the API."""
        if cached:
            with self._written_lock:
                mine = self._written.get(name)
            if mine is not None:
                return mine, True
        self._forget(name)
        return self.store.get(name), False

    def _create(self, rec: dict[str, Any]) -> dict[str, Any]:
        created = self.store.create(key_lease_name(rec["key"]), labels=self._labels(rec),
                                    annotations={RECORD_ANNOTATION: json.dumps(rec,
                                                                               sort_keys=True)},
                                    spec=self._spec(rec))
        self._remember(created)
        return created

    def _replace(self, lease: Mapping[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
        meta = dict(lease["metadata"])
        meta["labels"] = {**(meta.get("labels") or {}), **self._labels(rec)}
        meta["annotations"] = {**(meta.get("annotations") or {}),
                               RECORD_ANNOTATION: json.dumps(rec, sort_keys=True)}
        try:
            replaced = self.store.replace({**lease, "metadata": meta, "spec": self._spec(rec)})
        except LeaseConflict:
            self._forget(str(meta.get("name") or ""))
            raise
        self._remember(replaced)
        return replaced

    def _update(self, key: str, change: Any) -> dict[str, Any] | None:
        """Read-modify-replace; ``change(rec) -> rec | None`` (None: leave it).
        Returns the record written (or None when nothing was). The first try
        starts from the Lease as this ledger last wrote it, when it did (a
        claim, then its finish: no read in between); a Conflict reads it."""
        name = key_lease_name(key)
        for attempt in range(_ATTEMPTS):
            lease, ours = self._read(name, cached=attempt == 0)
            rec = _record(lease)
            if lease is None or rec is None:
                return None
            new: dict[str, Any] | None = change(dict(rec))
            if new is None:
                if ours:
                    continue  # decided on our own copy: decide again on the API's
                return None
            try:
                self._replace(lease, new)
                return new
            except LeaseConflict:
                continue
        raise LeaseConflict(f"ledger key {key} kept changing under us")

    # -- the protocol ---------------------------------------------------------
    def claim(self, plan: Plan, *, holder: str, event_id: str, now: float,
              ttl: float, target_window: float = 0.0) -> ClaimResult:
        """Create first: a new key (the common case) costs no read of its
        Lease; AlreadyExists reads it and decides as before. With a target
        window the target Lease is taken before the key Lease is created (the
        order the race analysis needs); its list already shows the key when
        it is taken or in flight, which answers a redelivery without a write."""
        self._maybe_prune(now)
        fresh = {"key": plan.key, "function": plan.function, "action": plan.action,
                 "target": str(plan.target), "status": "claimed", "holder": holder,
                 "claimed_at": now, "expires_at": now + ttl, "updated_at": now,
                 "event_id": event_id, "plan": plan.as_dict(), "decision": {}, "reasons": [],
                 "signal": {}, "approved_by": "", "approved_at": 0.0, "verification": "",
                 "verification_detail": ""}
        name = key_lease_name(plan.key)
        known = False  # the key Lease exists (AlreadyExists): read it, never create
        took = False  # the target Lease names this claim (taken at ``now``)
        held_by: ClaimResult | None = None  # the target, held by another key
        for _ in range(_ATTEMPTS):
            lease = self.store.get(name) if known else None
            rec = _record(lease)
            if lease is not None and rec is not None:
                status = str(rec.get("status"))
                if not reclaimable(status, float(rec.get("expires_at") or 0), now):
                    return ClaimResult(False, plan.key, status, str(rec.get("holder") or ""))
                if status in JUDGED_AGAIN and target_window > 0 and not took:
                    # judged again: the target window holds as for a new claim
                    busy = held_by or self._take_target(plan, now=now, ttl=ttl,
                                                        window=target_window)
                    if busy is not None:
                        return busy
                    took = True
                approved_by = self._approved_by(rec) if status in APPROVAL_KEPT else ""
                taken = {**rec, **{k: fresh[k] for k in ("status", "holder", "claimed_at",
                                                           "expires_at", "updated_at",
                                                           "event_id", "plan")},
                         "approved_by": approved_by}
                try:
                    self._replace(lease, taken)
                except LeaseConflict:
                    continue
                return ClaimResult(True, plan.key, "claimed", holder, approved_by=approved_by)
            if target_window > 0 and not took:
                if held_by is not None:
                    return held_by
                busy = self._take_target(plan, now=now, ttl=ttl, window=target_window)
                if busy is not None:
                    if busy.status != ClaimResult.TARGET_RECENT or known:
                        return busy  # the list showed this very key taken or in flight
                    # An approved or expired key is retaken without the target
                    # window, as it always was: read it before answering busy.
                    held_by, known = busy, True
                    continue
                took = True
            try:
                self._create(fresh)
            except LeaseExists:
                known = True
                continue  # someone claimed this very key: read it again
            return ClaimResult(True, plan.key, "claimed", holder)
        return ClaimResult(False, plan.key, "claimed", "")  # contended: answer busy (retry)

    def _take_target(self, plan: Plan, *, now: float, ttl: float,
                     window: float) -> ClaimResult | None:
        """Take the (target, action) Lease for ``plan.key``; a ClaimResult
        when another incident holds the target (see the module docstring), or
        when the list shows ``plan.key`` itself taken or in flight."""
        name = target_lease_name(str(plan.target), plan.action)
        mine = {"key": plan.key, "target": str(plan.target), "action": plan.action,
                "status": "claimed", "holder": plan.key, "claimed_at": now,
                "expires_at": now + ttl, "updated_at": now,
                "taken_at": now}  # = the key record's claimed_at: which claim took it
        labels = self._target_labels(plan)
        for attempt in range(_ATTEMPTS):
            if attempt == 0:
                # one list, one snapshot: the target Lease (labelled like its
                # records) and the records that count; its resourceVersion
                # guards the take as a read's would
                listed = self.store.list({k: labels[k] for k in (TARGET_LABEL, ACTION_LABEL)},
                                         status_in=(*TARGET_STATUSES, TARGET_LEASE_STATUS))
                lock = next((item for item in listed
                             if (item.get("metadata") or {}).get("name") == name), None)
                records = [r for item in listed
                           if ((item.get("metadata") or {}).get("labels") or {}).get(
                               LEDGER_LABEL) == "claim" and (r := _record(item)) is not None]
            else:  # a Lease written before its labels, or taken since: read, then list
                lock = self.store.get(name)  # its resourceVersion guards the take
                records = None
            busy = self._target_busy(plan, _record(lock), now=now, window=window,
                                     records=records)
            if busy is not None:
                return busy
            try:
                if lock is None:
                    self.store.create(name, labels=labels,
                                      annotations={RECORD_ANNOTATION: json.dumps(mine)},
                                      spec={"holderIdentity": plan.key[:253],
                                            "leaseDurationSeconds": max(1, int(ttl)),
                                            "acquireTime": _micro(now), "renewTime": _micro(now)})
                else:
                    self._rewrite_target(lock, mine, labels=labels,
                                         holderIdentity=plan.key[:253], renewTime=_micro(now))
            except (LeaseExists, LeaseConflict):
                continue  # another claimer took it since our read: decide again
            return None
        return ClaimResult(False, plan.key, "target-recent", "", other_status="claimed")

    def _target_labels(self, plan: Plan) -> dict[str, str]:
        return {LEDGER_LABEL: "target", STATUS_LABEL: TARGET_LEASE_STATUS,
                TARGET_LABEL: _digest(str(plan.target)), ACTION_LABEL: _digest(plan.action, 16)}

    def _rewrite_target(self, lock: Mapping[str, Any], rec: Mapping[str, Any], *,
                        labels: Mapping[str, str] | None = None, **spec: Any) -> None:
        """Replace a target Lease (guarded by the resourceVersion it was read
        with) with ``rec`` as its record and ``spec`` fields updated."""
        meta = dict(lock["metadata"])
        if labels:
            meta["labels"] = {**(meta.get("labels") or {}), **labels}
        meta["annotations"] = {**(meta.get("annotations") or {}),
                               RECORD_ANNOTATION: json.dumps(rec)}
        self.store.replace({**lock, "metadata": meta,
                            "spec": {**(lock.get("spec") or {}), **spec}})

    def _target_busy(self, plan: Plan, held: Mapping[str, Any] | None, *, now: float,
                     window: float, records: list[dict[str, Any]] | None = None
                     ) -> ClaimResult | None:
        """What the SQLite claim asks in its transaction: is this action on
        this target taken (or in flight, or pending approval) for another key
        within ``window``? Answered from every key Lease of the target, so a
        replica configured with another window cannot hide an earlier action,
        plus the in-flight gap: the key the target Lease names, not created
        yet, until that claim's TTL."""
        def active(r: Mapping[str, Any]) -> bool:
            status = r.get("status")
            return (status in TAKEN or (status == "pending"
                                         and float(r.get("expires_at") or 0) >= now)) \
                and float(r.get("updated_at") or 0) >= now - window

        def busy(r: Mapping[str, Any]) -> ClaimResult:
            return ClaimResult(False, plan.key, "target-recent", "",
                               other_key=str(r.get("key")), other_status=str(r.get("status")),
                               age=now - float(r.get("updated_at") or now))

        if records is None:
            records = self._records({TARGET_LABEL: _digest(str(plan.target)),
                                     ACTION_LABEL: _digest(plan.action, 16)},
                                    status_in=TARGET_STATUSES)
        listed = [r for r in records
                  if r.get("target") == str(plan.target) and r.get("action") == plan.action]
        for r in listed:  # this very key, taken or in flight: what a read of it answers
            if r.get("key") == plan.key and not reclaimable(
                    str(r.get("status")), float(r.get("expires_at") or 0), now):
                return ClaimResult(False, plan.key, str(r.get("status")),
                                   str(r.get("holder") or ""))
        rows = [r for r in listed if r.get("key") != plan.key]
        recent = [r for r in rows if active(r)]
        if recent:
            return busy(max(recent, key=lambda r: float(r.get("updated_at") or 0)))
        gap = str((held or {}).get("key") or "")
        if not held or not gap or gap == plan.key or held.get("status") == "released" \
                or any(r.get("key") == gap for r in rows):
            return None
        # the target Lease names a key the list did not show: not created yet
        # (in flight until that claim's TTL), or created since the list
        other = _record(self.store.get(key_lease_name(gap)))
        in_flight = held.get("status") == "claimed" \
            and float(held.get("expires_at") or 0) >= now
        if other is None:
            return busy({**held, "status": "claimed"}) if in_flight else None
        if active(other):
            return busy(other)
        # a key judged again (denied, failed, skipped) that took the target
        # after its last write is being retaken: in flight, as a new key is
        if in_flight and float(held.get("taken_at") or 0) > float(other.get("updated_at") or 0):
            return busy({**held, "status": "claimed"})
        return None

    def finish(self, key: str, status: LedgerStatus, *, now: float,
               decision: dict[str, Any] | None = None,
               reasons: list[str] | None = None) -> None:
        value = LedgerStatus(status).value
        self._update(key, lambda r: {**r, "status": value, "updated_at": now,
                                     "decision": decision or {}, "reasons": reasons or []})

    def release(self, key: str, *, holder: str) -> None:
        name = key_lease_name(key)
        for attempt in range(_ATTEMPTS):
            lease, ours = self._read(name, cached=attempt == 0)
            rec = _record(lease)
            if lease is None or rec is None or rec.get("status") != "claimed" \
                    or rec.get("holder") != holder:
                if ours:
                    continue  # decided on our own copy: decide again on the API's
                return
            try:
                if rec.get("approved_by"):
                    self._replace(lease, {**rec, "status": "approved"})
                    return
                self._forget(name)
                self.store.delete(name,
                                  resource_version=str(lease["metadata"]["resourceVersion"]))
            except LeaseConflict:
                continue
            try:
                self._release_target(rec)
            except (TemporaryError, LeaseConflict) as exc:
                # the key is free; the target frees itself when its record's
                # claim TTL ends. A release runs when the API is already failing:
                # it must not turn the retry being answered into an error.
                log.warning("could not mark the target of %s released: %s", key, exc)
            return

    def _release_target(self, rec: Mapping[str, Any]) -> None:
        """A released key (nothing was done) no longer holds its target: mark
        the target Lease released if it still names the key, as the SQLite
        ledger's DELETE frees the target in the same statement. Best effort
        past a few conflicts: the mark only shortens the in-flight gap."""
        name = target_lease_name(str(rec.get("target")), str(rec.get("action")))
        for _ in range(_ATTEMPTS):
            lock = self.store.get(name)
            held = _record(lock)
            if lock is None or held is None or held.get("key") != rec.get("key") \
                    or held.get("taken_at") != rec.get("claimed_at"):
                return  # taken since by another claim (a redelivery of the key included)
            try:
                self._rewrite_target(lock, {**held, "status": "released"})
                return
            except LeaseConflict:
                continue

    def hold(self, key: str, *, holder: str, now: float, expires_at: float,
             signal: dict[str, Any], decision: dict[str, Any] | None = None,
             reasons: list[str] | None = None) -> None:
        def change(r: dict[str, Any]) -> dict[str, Any] | None:
            if r.get("status") != "claimed" or r.get("holder") != holder:
                return None
            return {**r, "status": "pending", "updated_at": now, "expires_at": expires_at,
                    "signal": signal, "decision": decision or {}, "reasons": reasons or []}
        self._update(key, change)

    def approve(self, key: str, *, approver: str, now: float) -> ApprovalResult:
        seen: dict[str, str] = {}

        def change(r: dict[str, Any]) -> dict[str, Any] | None:
            seen["status"] = str(r.get("status"))
            if r.get("status") != "pending":
                return None
            if float(r.get("expires_at") or 0) < now:
                seen["status"] = "expired"
                return {**r, "status": "expired", "updated_at": now}
            seen["status"] = "approved"
            new = {**r, "status": "approved", "approved_by": approver, "approved_at": now,
                   "updated_at": now}
            if self.approval_key:
                new["approval_mac"] = approval_mac(self.approval_key, new)
            return new
        written = self._update(key, change)
        status = seen.get("status", "unknown")
        granted = written is not None and written.get("status") == "approved"
        return ApprovalResult(granted, key, status, self.get(key))

    def schedule(self, key: str, *, function: str, target: str, event_id: str, now: float,
                 due_at: float, signal: dict[str, Any], reasons: list[str]) -> bool:
        rec = {"key": key, "function": function, "action": "scheduled", "target": target,
               "status": "scheduled", "holder": "sweep", "claimed_at": now, "expires_at": due_at,
               "updated_at": now, "event_id": event_id, "plan": {}, "decision": {},
               "reasons": reasons, "signal": signal, "approved_by": "", "approved_at": 0.0,
               "verification": "", "verification_detail": ""}
        try:
            self._create(rec)
        except LeaseExists:
            return False
        return True

    def due(self, *, now: float, limit: int = 100) -> list[LedgerRecord]:
        rows = [r for r in self._records({STATUS_LABEL: "scheduled"})
                if r.get("status") == "scheduled" and float(r.get("expires_at") or 0) <= now]
        return [LedgerRecord.from_document(r)
                for r in sorted(rows, key=lambda r: float(r.get("expires_at") or 0))[:limit]]

    def pending(self, *, now: float) -> list[LedgerRecord]:
        rows = [r for r in self._records({STATUS_LABEL: "pending"})
                if r.get("status") == "pending" and float(r.get("expires_at") or 0) >= now]
        return [LedgerRecord.from_document(r)
                for r in sorted(rows, key=lambda r: float(r["updated_at"]))]

    def record_verification(self, key: str, result: str, *, detail: str, now: float) -> None:
        self._update(key, lambda r: {**r, "verification": result,
                                     "verification_detail": detail[:2000]})

    # -- reading -------------------------------------------------------------
    def _records(self, labels: Mapping[str, str], *,
                 status_in: Collection[str] | None = None) -> list[dict[str, Any]]:
        out = []
        for lease in self.store.list({LEDGER_LABEL: "claim", **labels},
                                     status_in=tuple(status_in) if status_in else None):
            rec = _record(lease)
            if rec is not None:
                out.append(rec)
        return out

    def stats(self, plan: Plan, *, now: float, window: float,
              exclude_key: str = "") -> dict[str, int]:
        since = now - window
        rows = [r for r in self._records({}, status_in=COUNTED)
                if r.get("status") in COUNTED and float(r.get("updated_at") or 0) >= since
                and r.get("key") != exclude_key]
        return {"target_actions_in_window": sum(r.get("target") == str(plan.target)
                                                for r in rows),
                "action_count_in_window": sum(r.get("action") == plan.action for r in rows),
                "cluster_actions_in_window": len(rows), "window_seconds": int(window)}

    def get(self, key: str) -> LedgerRecord | None:
        rec = _record(self.store.get(key_lease_name(key)))
        return LedgerRecord.from_document(rec) if rec is not None else None

    def history(self, *, target: str | None = None, limit: int = 100,
                statuses: Collection[str] | None = None) -> list[LedgerRecord]:
        rows = self._records({TARGET_LABEL: _digest(target)} if target else {},
                             status_in=tuple(statuses) if statuses else None)
        if target:
            rows = [r for r in rows if r.get("target") == target]
        if statuses is not None:
            wanted = {str(s) for s in statuses}
            rows = [r for r in rows if r.get("status") in wanted]
        rows = sorted(rows, key=lambda r: float(r["updated_at"]), reverse=True)[:limit]
        return [LedgerRecord.from_document(r) for r in rows]

    # -- retention -------------------------------------------------------------
    def _maybe_prune(self, now: float) -> None:
        if self.retention <= 0 or now - self._pruned_at < self.prune_interval:
            return
        self._pruned_at = now
        try:
            self.prune(now=now)
        except (TemporaryError, LeaseConflict) as exc:  # best effort: next interval
            log.warning("could not prune the ledger: %s", exc)

    def prune(self, *, now: float, limit: int = PRUNE_BATCH) -> int:
        """Delete finished records (and target Leases) not updated within
        ``retention`` seconds, oldest first, at most ``limit``. Records still
        in play (claimed, pending, approved) are never pruned."""
        cutoff = now - self.retention
        old = []
        for label in ("claim", "target"):
            for lease in self.store.list({LEDGER_LABEL: label}):
                rec = _record(lease)
                if rec is None:
                    continue
                if label == "claim" and rec.get("status") in LIVE_STATUSES:
                    continue
                if label == "target" and rec.get("status") == "claimed" \
                        and float(rec.get("expires_at") or 0) >= now:
                    continue
                if float(rec.get("updated_at") or 0) < cutoff:
                    old.append((float(rec.get("updated_at") or 0), lease))
        old.sort(key=lambda pair: pair[0])
        removed = 0
        for _, lease in old[:limit]:
            meta = lease.get("metadata") or {}
            try:
                self.store.delete(str(meta.get("name")),
                                  resource_version=str(meta.get("resourceVersion") or ""))
                removed += 1
            except LeaseConflict:
                continue  # changed since the list: no longer old
        if removed:
            log.info("pruned %d ledger record(s) older than %ds", removed, int(self.retention))
        return removed

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            close()
