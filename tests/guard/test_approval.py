"""The signed approval: what verifies, what never does."""

from __future__ import annotations

import pytest

from remediation.errors import InvalidInput
from remediation.guard.approval import approval_data, verify_approval

KEY = "4a6c6587409af93e0e8cdd673dfebc31"


def test_a_signed_approval_verifies():
    a = verify_approval(approval_data("s3cret", KEY, "alice@example.com"), secret="s3cret")
    assert (a.key, a.approver) == (KEY, "alice@example.com")


@pytest.mark.parametrize("data, why", [
    ("not an object", "JSON object"),
    ({}, "approval_id"),
    ({"approval_id": KEY}, "approver"),
    ({"approval_id": "../../etc/passwd", "approver": "a", "signature": "x"}, "approval_id"),
    ({"approval_id": KEY, "approver": "a b;rm -rf", "signature": "x"}, "approver"),
    ({"approval_id": KEY, "approver": "a" * 200, "signature": "x"}, "approver"),
    ({"approval_id": KEY, "approver": "alice", "signature": 7}, "signature"),
    ({"approval_id": KEY, "approver": "alice", "signature": "00" * 32}, "signature"),
])
def test_malformed_or_forged_approvals_are_refused(data, why):
    with pytest.raises(InvalidInput) as exc:
        verify_approval(data, secret="s3cret")
    assert why in str(exc.value) or exc.value.attribute == why


def test_without_a_secret_nothing_verifies_and_the_approver_list_is_enforced():
    with pytest.raises(InvalidInput, match="disabled"):
        verify_approval(approval_data("", KEY, "alice"), secret="")
    with pytest.raises(InvalidInput, match="may not approve"):
        verify_approval(approval_data("s", KEY, "mallory"), secret="s", approvers=("alice",))
