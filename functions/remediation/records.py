"""What the ledger keeps: its statuses and its records, as typed values.

Both ledgers (SQLite, Kubernetes Leases) store a record as a flat JSON-like
document; :meth:`LedgerRecord.from_document` is the one place that reads it
back, so the pipeline, the CLI and the planners read named fields
(``rec.status``, ``rec.params``, ``rec.incident``), never nested keys.
No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any


class LedgerStatus(str, Enum):
    """The status of a remediation key in the ledger.

    ``claimed`` -> ``applied`` | ``partial`` | ``planned`` | ``denied`` |
    ``failed`` | ``skipped``; or ``claimed`` -> ``pending`` (a human's
    approval) -> ``approved`` (claimed again by the next claimer) or
    ``expired``. A temporary failure releases the claim (no record)."""

    CLAIMED = "claimed"
    APPLIED = "applied"
    PLANNED = "planned"
    PARTIAL = "partial"
    DENIED = "denied"
    FAILED = "failed"
    SKIPPED = "skipped"
    PENDING = "pending"
    APPROVED = "approved"
    EXPIRED = "expired"
    #: work due later (recovery after its healthy delay), then ``swept``
    SCHEDULED = "scheduled"
    SWEPT = "swept"

    def __str__(self) -> str:
        return self.value


#: an action was taken, in part, or is in flight (limits, the target window,
#: planners' history)
TAKEN = (LedgerStatus.CLAIMED, LedgerStatus.APPLIED, LedgerStatus.PLANNED,
         LedgerStatus.PARTIAL)
#: counted by the policy limits (an action done, in part, or in flight)
COUNTED = (LedgerStatus.APPLIED, LedgerStatus.PARTIAL, LedgerStatus.CLAIMED)
#: final statuses judged again on the next delivery (nothing was done)
JUDGED_AGAIN = (LedgerStatus.DENIED, LedgerStatus.FAILED, LedgerStatus.SKIPPED)
#: a key in one of these may be claimed afresh (besides a ``claimed`` or
#: ``pending`` one past its expiry)
RECLAIMABLE = (LedgerStatus.APPROVED, LedgerStatus.EXPIRED) + JUDGED_AGAIN
#: a key retaken from one of these keeps its human approval: granted, or
#: claimed by a worker that died (or kept its claim after an unanswered write)
APPROVAL_KEPT = (LedgerStatus.APPROVED, LedgerStatus.CLAIMED)


def reclaimable(status: str, expires_at: float, now: float) -> bool:
    """May a key in ``status`` be claimed afresh? (shared by every ledger)"""
    if status in RECLAIMABLE:
        return True
    return status in (LedgerStatus.CLAIMED, LedgerStatus.PENDING) and expires_at < now


def _text(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    return value if isinstance(value, str) else ""


def _number(doc: Mapping[str, Any], key: str) -> float:
    value = doc.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else 0.0


def _mapping(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    return dict(value) if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class LedgerRecord:
    """One remediation key's record."""

    key: str
    function: str
    action: str
    target: str  # "Kind/namespace/name"
    status: LedgerStatus
    holder: str = ""
    claimed_at: float = 0.0
    expires_at: float = 0.0
    updated_at: float = 0.0
    event_id: str = ""
    #: the plan as claimed (``Plan.as_dict()``)
    plan: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    decision: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    reasons: tuple[str, ...] = ()
    #: the signal kept while a remediation waits for approval (``Signal.to_record()``)
    signal: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    approved_by: str = ""
    approved_at: float = 0.0
    verification: str = ""  # "" | "succeeded" | "failed" | "unknown"
    verification_detail: str = ""
    #: the approval's signature over key, approver and time (guard.approval)
    approval_mac: str = ""

    @property
    def params(self) -> Mapping[str, Any]:
        """The claimed plan's params (what the planner recorded about it)."""
        params = self.plan.get("params")
        return params if isinstance(params, Mapping) else MappingProxyType({})

    @property
    def incident(self) -> str:
        """The incident the plan was made for ("" when it did not say)."""
        value = self.params.get("incident")
        return value if isinstance(value, str) else ""

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> LedgerRecord:
        """A record as either ledger stores it (JSON columns already decoded)."""
        reasons = doc.get("reasons")
        return cls(key=_text(doc, "key"), function=_text(doc, "function"),
                   action=_text(doc, "action"), target=_text(doc, "target"),
                   status=LedgerStatus(_text(doc, "status")), holder=_text(doc, "holder"),
                   claimed_at=_number(doc, "claimed_at"), expires_at=_number(doc, "expires_at"),
                   updated_at=_number(doc, "updated_at"), event_id=_text(doc, "event_id"),
                   plan=_mapping(doc, "plan"), decision=_mapping(doc, "decision"),
                   reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
                   signal=_mapping(doc, "signal"), approved_by=_text(doc, "approved_by"),
                   approved_at=_number(doc, "approved_at"),
                   verification=_text(doc, "verification"),
                   verification_detail=_text(doc, "verification_detail"),
                   approval_mac=_text(doc, "approval_mac"))


@dataclass(frozen=True)
class ClaimResult:
    won: bool
    key: str
    #: the key's current status (ours ``claimed`` when won), or
    #: ``target-recent`` when the target was acted on for another incident
    status: str
    holder: str = ""
    other_key: str = ""
    other_status: str = ""
    age: float = 0.0
    approved_by: str = ""  # set when the won key had been approved by a human

    #: ``status`` when the target window refused the claim
    TARGET_RECENT = "target-recent"


@dataclass(frozen=True)
class ApprovalResult:
    ok: bool
    key: str
    #: "approved", or why not: "expired", "unknown", or the key's status ("applied", ...)
    status: str
    record: LedgerRecord | None = None
