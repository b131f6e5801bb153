"""Human approval of a pending remediation: what is signed, and checking it.

An approval names the pending remediation (its ledger key, shown by
``remediate pending`` and in the approval-requested event) and the approver.
When it travels as a CloudEvent (through the Broker, from a chat button or
``remediate approve --send``) it carries an HMAC-SHA256 signature of both,
keyed with the shared approval secret (``REMEDIATION_APPROVAL_SECRET``); the
secret itself never travels. Without a configured secret, approval events
are refused: an unauthenticated event must never release an action.

An approval is bound to one request for approval: the signature also covers
the request's ``expires_at`` (shown with the request, by ``remediate
pending`` and in the approval-requested event), and the pipeline releases a
key only when that is the pending request's own. A signed approval of an
earlier request (refused as expired, say) cannot be replayed once the alert
parks the same key again (issue 15). Within its request a replayed approval
is harmless: the ledger approves a key once, and only while it is pending
and unexpired.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput

#: what an approver name may look like (a user or service identity).
_APPROVER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:/+-]{0,127}$")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,252}$")


_EXPIRES = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@dataclass(frozen=True)
class Approval:
    key: str
    approver: str
    expires_at: str = ""  # the approved request's expiry (RFC 3339, UTC, seconds)


def signature(secret: str, key: str, approver: str, expires_at: str = "") -> str:
    msg = f"inferenceremediation-approval-v2\n{key}\n{approver}\n{expires_at}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def approval_data(secret: str, key: str, approver: str, expires_at: str = "") -> dict[str, str]:
    """The data of a signed approval event for the request expiring at
    ``expires_at`` (as the request shows it)."""
    check_names(key, approver)
    return {"approval_id": key, "approver": approver, "expires_at": expires_at,
            "signature": signature(secret, key, approver, expires_at)}


def check_names(key: str, approver: str) -> None:
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidInput("approval_id is missing or malformed", attribute="approval_id")
    if not isinstance(approver, str) or not _APPROVER.match(approver):
        raise InvalidInput("approver is missing or malformed (a user name, at most 128 "
                           "characters of letters, digits and ._@:/+-)", attribute="approver")


def verify_approval(data: Any, *, secret: str, approvers: tuple[str, ...] = ()) -> Approval:
    """The approval in an event's data, or ``InvalidInput`` saying why not."""
    if not secret:
        raise InvalidInput("approval events are disabled: no approval secret is configured")
    if not isinstance(data, Mapping):
        raise InvalidInput("approval data must be a JSON object", attribute="data")
    key, approver, sig = data.get("approval_id"), data.get("approver"), data.get("signature")
    expires_at = data.get("expires_at")
    check_names(key, approver)  # type: ignore[arg-type]
    if not isinstance(expires_at, str) or not _EXPIRES.match(expires_at):
        raise InvalidInput("approval is not bound to its request: expires_at (as the "
                           "request shows it, YYYY-MM-DDTHH:MM:SSZ) is required",
                           attribute="expires_at")
    if not isinstance(sig, str) or not hmac.compare_digest(
            sig.encode(),
            signature(secret, key, approver, expires_at).encode()):  # type: ignore[arg-type]
        raise InvalidInput("approval signature does not match", attribute="signature")
    if approvers and approver not in approvers:
        raise InvalidInput(f"{approver} may not approve remediations", attribute="approver")
    return Approval(key, approver, expires_at)  # type: ignore[arg-type]
