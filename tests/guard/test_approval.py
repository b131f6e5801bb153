"""The signed approval: what verifies, what never does."""

from __future__ import annotations

import pytest

from remediation.errors import InvalidInput
from remediation.guard.approval import approval_data, verify_approval

KEY = "4a6c6587409af93e0e8cdd673dfebc31"
EXP = "2026-11-01T11:00:00Z"  # the approved request's expiry


def test_a_signed_approval_verifies():
    a = verify_approval(approval_data("s3cret", KEY, "alice@example.com", EXP),
                        secret="s3cret")
    assert (a.key, a.approver, a.expires_at) == (KEY, "alice@example.com", EXP)


@pytest.mark.parametrize("data, why", [
    ("not an object", "JSON object"),
    ({}, "approval_id"),
    ({"approval_id": KEY}, "approver"),
    ({"approval_id": "../../etc/passwd", "approver": "a", "signature": "x"}, "approval_id"),
    ({"approval_id": KEY, "approver": "a b;rm -rf", "signature": "x"}, "approver"),
    ({"approval_id": KEY, "approver": "a" * 200, "signature": "x"}, "approver"),
    ({"approval_id": KEY, "approver": "alice", "expires_at": EXP, "signature": 7}, "signature"),
    ({"approval_id": KEY, "approver": "alice", "expires_at": EXP, "signature": "00" * 32},
     "signature"),
])
def test_malformed_or_forged_approvals_are_refused(data, why):
    with pytest.raises(InvalidInput) as exc:
        verify_approval(data, secret="s3cret")
    assert why in str(exc.value) or exc.value.attribute == why


def test_without_a_secret_nothing_verifies_and_the_approver_list_is_enforced():
    with pytest.raises(InvalidInput, match="disabled"):
        verify_approval(approval_data("", KEY, "alice", EXP), secret="")
    with pytest.raises(InvalidInput, match="may not approve"):
        verify_approval(approval_data("s", KEY, "mallory", EXP), secret="s",
                        approvers=("alice",))


def test_the_signature_binds_the_approval_to_its_request():
    """Issue 15, finding 10: a signature for one request does not approve another."""
    data = approval_data("s3cret", KEY, "alice", EXP)
    with pytest.raises(InvalidInput, match="signature does not match"):
        verify_approval({**data, "expires_at": "2026-11-01T12:00:00Z"}, secret="s3cret")
    with pytest.raises(InvalidInput, match="not bound to its request"):
        verify_approval({k: v for k, v in data.items() if k != "expires_at"}, secret="s3cret")
