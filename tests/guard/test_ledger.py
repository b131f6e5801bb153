"""The ledger suite, run against both implementations: SQLite (embedded) and
Leases (Kubernetes-native, against the API emulator over the real client):
claim once, retake only expired claims, the target window, approvals,
verification, history and stats."""

from __future__ import annotations

import dataclasses

import multiprocessing as mp
from typing import Any
from collections.abc import Callable

import pytest

from remediation.clients.kube import KubeLeases
from remediation.guard.lease_ledger import LeaseLedger
from remediation.guard.ledger import SQLiteLedger
from remediation.model import ObjectRef, Plan

from tests.plugins.kube import make_api_client

LEASE_NS = "remediation"


@pytest.fixture(params=["sqlite", "leases"])
def new_ledger(request, tmp_path) -> Callable[[], Any]:
    """``new_ledger()``: another handle on the same ledger (for SQLite the
    same file; for Leases the same namespace of the same emulator)."""
    made: list[Any] = []
    if request.param == "sqlite":
        path = str(tmp_path / "ledger.sqlite")

        def make() -> Any:
            made.append(SQLiteLedger(path))
            return made[-1]
    else:
        emulator = request.getfixturevalue("kube_emulator")

        def make() -> Any:
            made.append(LeaseLedger(KubeLeases(make_api_client(emulator.url), LEASE_NS, 5.0)))
            return made[-1]
    yield make
    for led in made:
        led.close()


@pytest.fixture
def led(new_ledger) -> Any:
    return new_ledger()


def mkplan(key: str = "k1", name: str = "vllm") -> Plan:
    return Plan("restart-engine", "rollout-restart", ObjectRef("Deployment", "llm", name), (),
                key=key)


def test_claim_once_then_duplicate(led):
    assert led.claim(mkplan(), holder="a", event_id="e", now=100, ttl=60).won
    second = led.claim(mkplan(), holder="b", event_id="e", now=101, ttl=60)
    assert not second.won and second.status == "claimed" and second.holder == "a"
    led.finish("k1", "applied", now=102)
    third = led.claim(mkplan(), holder="b", event_id="e", now=5000, ttl=60)
    assert not third.won and third.status == "applied"  # finished: never retaken


def test_expired_claim_is_retaken_and_release_allows_retry(led):
    assert led.claim(mkplan(), holder="dead", event_id="e", now=100, ttl=60).won
    assert not led.claim(mkplan(), holder="b", event_id="e", now=150, ttl=60).won
    assert led.claim(mkplan(), holder="b", event_id="e", now=161, ttl=60).won
    led.release("k1", holder="b")
    assert led.get("k1") is None
    assert led.claim(mkplan(), holder="c", event_id="e", now=170, ttl=60).won


def test_release_by_another_holder_does_nothing(led):
    led.claim(mkplan(), holder="a", event_id="e", now=100, ttl=60)
    led.release("k1", holder="intruder")
    assert led.get("k1").holder == "a"


def test_stats_count_actions_in_window(led):
    for i, name in enumerate(["a", "a", "b"]):
        led.claim(mkplan(f"k{i}", name), holder="h", event_id="e", now=1000 + i, ttl=60)
        led.finish(f"k{i}", "applied", now=1000 + i)
    led.claim(mkplan("kd", "a"), holder="h", event_id="e", now=1003, ttl=60)
    led.finish("kd", "denied", now=1003)
    s = led.stats(mkplan("x", "a"), now=1010, window=3600)
    assert s["target_actions_in_window"] == 2
    assert s["action_count_in_window"] == 3
    assert s["cluster_actions_in_window"] == 3
    assert led.stats(mkplan("x", "a"), now=99999, window=60)["cluster_actions_in_window"] == 0


def _claim_many(kind: str, where: str, holder: str, keys: list[str], out: mp.Queue[int]) -> None:
    if kind == "sqlite":
        led: Any = SQLiteLedger(where)
    else:
        led = LeaseLedger(KubeLeases(make_api_client(where), LEASE_NS, 10.0))
    won = sum(led.claim(mkplan(k), holder=holder, event_id="e", now=100, ttl=600).won for k in keys)
    out.put(won)


@pytest.mark.parametrize("kind", ["sqlite", "leases"])
def test_one_winner_per_key_across_processes(kind, tmp_path, kube_emulator):
    if kind == "sqlite":
        where = str(tmp_path / "ledger.sqlite")
        SQLiteLedger(where).close()
    else:
        where = kube_emulator.url
    keys = [f"key-{i % 25}" for i in range(100)]  # 4 deliveries of each of 25 keys
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_claim_many, args=(kind, where, f"w{n}", keys, q))
             for n in range(4)]
    for p in procs:
        p.start()
    total = sum(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert total == 25  # exactly one winner per distinct key


def test_target_window_refuses_another_incident_on_the_same_target(led):
    a, b = mkplan("incident-a"), mkplan("incident-b")  # same target and action
    assert led.claim(a, holder="h", event_id="e1", now=100, ttl=60, target_window=300).won
    other = led.claim(b, holder="h", event_id="e2", now=110, ttl=60, target_window=300)
    assert not other.won and other.status == "target-recent" and other.other_key == "incident-a"
    led.finish("incident-a", "applied", now=120)
    assert not led.claim(b, holder="h", event_id="e2", now=400, ttl=60, target_window=300).won
    assert led.claim(b, holder="h", event_id="e2", now=421, ttl=60, target_window=300).won
    c = mkplan("incident-c", name="other-deployment")
    assert led.claim(c, holder="h", event_id="e3", now=422, ttl=60, target_window=300).won


def test_denied_does_not_hold_the_target(led):
    led.claim(mkplan("a"), holder="h", event_id="e", now=100, ttl=60, target_window=300)
    led.finish("a", "denied", now=101)
    assert led.claim(mkplan("b"), holder="h", event_id="e", now=102, ttl=60,
                     target_window=300).won


def test_pending_approval_once_before_expiry(led):
    assert led.claim(mkplan(), holder="a", event_id="e", now=100, ttl=60).won
    led.hold("k1", holder="a", now=101, expires_at=200, signal={"id": "e"},
             decision={"allow": True, "needs_approval": True}, reasons=["risky"])
    assert [r.key for r in led.pending(now=150)] == ["k1"]
    assert led.pending(now=150)[0].signal == {"id": "e"}
    waiting = led.claim(mkplan(), holder="b", event_id="e", now=150, ttl=60)
    assert not waiting.won and waiting.status == "pending"  # a redelivery does not act
    ok = led.approve("k1", approver="alice", now=160)
    assert ok.ok and ok.status == "approved" and ok.record.approved_by == "alice"
    again = led.approve("k1", approver="bob", now=161)
    assert not again.ok and again.status == "approved"  # approved once
    won = led.claim(mkplan(), holder="b", event_id="e", now=162, ttl=60)
    assert won.won and won.approved_by == "alice"
    assert not led.claim(mkplan(), holder="c", event_id="e", now=163, ttl=60).won
    assert led.pending(now=163) == []


def test_approval_after_expiry_is_refused_and_the_key_can_be_asked_again(led):
    led.claim(mkplan(), holder="a", event_id="e", now=100, ttl=60)
    led.hold("k1", holder="a", now=101, expires_at=200, signal={})
    assert led.pending(now=201) == []
    late = led.approve("k1", approver="alice", now=201)
    assert not late.ok and late.status == "expired"
    assert not led.approve("nope", approver="alice", now=201).ok
    fresh = led.claim(mkplan(), holder="b", event_id="e2", now=202, ttl=60)
    assert fresh.won and fresh.approved_by == ""


def test_pending_holds_the_target_window_and_verification_is_recorded(led):
    led.claim(mkplan("a"), holder="h", event_id="e", now=100, ttl=60, target_window=300)
    led.hold("a", holder="h", now=101, expires_at=1000, signal={})
    other = led.claim(mkplan("b"), holder="h", event_id="e2", now=102, ttl=60, target_window=300)
    assert not other.won and other.status == "target-recent" and other.other_status == "pending"
    led.claim(mkplan("c", "x"), holder="h", event_id="e3", now=103, ttl=60)
    led.finish("c", "applied", now=104)
    led.record_verification("c", "failed", detail="rollout not complete in 60s", now=170)
    rec = led.get("c")
    assert (rec.status, rec.verification) == ("applied", "failed")
    assert "rollout" in rec.verification_detail


# -- history and stats windows ------------------------------------------------

#: the record every ledger's get/history returns (SQLiteLedger's columns)
RECORD_FIELDS = {"key", "function", "action", "target", "status", "holder", "claimed_at",
                 "expires_at", "updated_at", "event_id", "plan", "decision", "reasons",
                 "signal", "approved_by", "approved_at", "verification", "verification_detail",
                 "approval_mac"}


def test_history_per_target_newest_first_with_limit(led):
    for i, (name, status) in enumerate([("a", "applied"), ("b", "applied"), ("a", "denied"),
                                        ("a", "failed")]):
        led.claim(mkplan(f"k{i}", name), holder="h", event_id=f"e{i}", now=1000 + i, ttl=60)
        led.finish(f"k{i}", status, now=1000 + i, decision={"allow": status != "denied"},
                   reasons=[status])
    a = led.history(target="Deployment/llm/a")
    assert [r.key for r in a] == ["k3", "k2", "k0"]  # newest first, only that target
    assert [r.status for r in a] == ["failed", "denied", "applied"]
    assert a[1].decision == {"allow": False} and a[1].reasons == ("denied",)
    assert a[2].plan["target"]["name"] == "a" and a[2].event_id == "e0"
    assert [r.key for r in led.history(target="Deployment/llm/a", limit=2)] == ["k3", "k2"]
    assert [r.key for r in led.history()] == ["k3", "k2", "k1", "k0"]  # cluster-wide
    assert led.history(target="Deployment/llm/nothing") == []


def test_get_and_history_return_the_same_record_fields(led):
    led.claim(mkplan(), holder="h", event_id="e", now=100, ttl=60)
    led.finish("k1", "applied", now=101)
    led.record_verification("k1", "succeeded", detail="ready", now=130)
    assert {f.name for f in dataclasses.fields(led.get("k1"))} == RECORD_FIELDS
    (rec,) = led.history(target="Deployment/llm/vllm")
    assert rec == led.get("k1")
    assert (rec.claimed_at, rec.expires_at, rec.updated_at) == (100, 160, 101)
    assert (rec.verification, rec.verification_detail) == ("succeeded", "ready")
    assert led.get("missing") is None


def test_stats_per_target_per_action_window_edges_and_exclusion(led):
    def plan(key: str, name: str, action: str = "rollout-restart") -> Plan:
        return Plan("restart-engine", action, ObjectRef("Deployment", "llm", name), (), key=key)

    for key, name, action, status, at in [
            ("old", "a", "rollout-restart", "applied", 399),      # one second too old
            ("edge", "a", "rollout-restart", "applied", 400),     # exactly at the edge
            ("part", "a", "rollout-restart", "partial", 500),
            ("plan", "a", "rollout-restart", "planned", 500),     # plan-only: not counted
            ("deny", "a", "rollout-restart", "denied", 500),
            ("other", "b", "rollout-restart", "applied", 600),    # another target
            ("scale", "a", "scale", "applied", 600)]:             # another action
        led.claim(plan(key, name, action), holder="h", event_id="e", now=at, ttl=60)
        led.finish(key, status, now=at)
    led.claim(plan("flight", "a"), holder="h", event_id="e", now=650, ttl=60)  # in flight
    led.claim(plan("held", "a"), holder="h", event_id="e", now=650, ttl=60)
    led.hold("held", holder="h", now=650, expires_at=9999, signal={})  # pending: not counted
    s = led.stats(plan("x", "a"), now=1000, window=600)
    assert s == {"target_actions_in_window": 4,      # edge, part, scale, flight
                 "action_count_in_window": 4,        # edge, part, other, flight
                 "cluster_actions_in_window": 5, "window_seconds": 600}
    mine = led.stats(plan("flight", "a"), now=1000, window=600, exclude_key="flight")
    assert (mine["target_actions_in_window"], mine["action_count_in_window"],
            mine["cluster_actions_in_window"]) == (3, 3, 4)
    narrow = led.stats(plan("x", "b"), now=1000, window=400)  # since 600
    assert (narrow["target_actions_in_window"], narrow["action_count_in_window"],
            narrow["cluster_actions_in_window"]) == (1, 2, 3)


# -- the target window across releases and differing windows ----------------------

def test_a_released_claim_does_not_hold_the_target(led):
    assert led.claim(mkplan("a"), holder="h", event_id="e", now=100, ttl=60,
                     target_window=300).won
    led.release("a", holder="h")  # nothing was done (temporary failure)
    assert led.claim(mkplan("b"), holder="h", event_id="e", now=101, ttl=60,
                     target_window=300).won


def test_a_later_incident_that_was_denied_does_not_hide_an_earlier_action(led):
    assert led.claim(mkplan("a"), holder="h", event_id="e", now=100, ttl=60,
                     target_window=300).won
    led.finish("a", "applied", now=100)
    # a replica configured with a shorter window takes the target, then is denied
    assert led.claim(mkplan("b"), holder="h", event_id="e", now=200, ttl=60,
                     target_window=50).won
    led.finish("b", "denied", now=200)
    late = led.claim(mkplan("c"), holder="h", event_id="e", now=250, ttl=60, target_window=300)
    assert not late.won and late.status == "target-recent" and late.other_key == "a"


def test_history_by_status_keeps_actions_visible_behind_a_storm_of_denials(led):
    """Planners ask for actions only: 150 later denials of the same target
    must not push the one restart out of the newest 100 records."""
    from remediation.guard.ledger import TAKEN

    led.claim(mkplan("acted"), holder="h", event_id="e", now=100, ttl=60)
    led.finish("acted", "applied", now=100)
    for i in range(150):
        led.claim(mkplan(f"denied-{i}"), holder="h", event_id="e", now=200 + i, ttl=60)
        led.finish(f"denied-{i}", "denied", now=200 + i)
    assert "acted" not in [r.key for r in led.history(target="Deployment/llm/vllm")]
    acted = led.history(target="Deployment/llm/vllm", statuses=TAKEN)
    assert [(r.key, r.status) for r in acted] == [("acted", "applied")]
    assert led.history(target="Deployment/llm/vllm", statuses=("denied",),
                       limit=2)[0].key == "denied-149"


def test_an_old_sqlite_database_gets_the_new_indexes_once(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(_OLD_SCHEMA)
    old.close()
    led = SQLiteLedger(str(path))
    try:
        names = {r[0] for r in led._db.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND name NOT LIKE 'sqlite_%'")}
        assert names == {"claims_status", "claims_target_status", "claims_action_status",
                         "claims_status_updated"}
        assert led._db.execute("PRAGMA user_version").fetchone()[0] == 2
        plan = mkplan("k")
        assert led.claim(plan, holder="h", event_id="e", now=1, ttl=60).won  # still works
    finally:
        led.close()


def test_a_locked_sqlite_database_is_a_temporary_failure(tmp_path):
    import sqlite3

    from remediation.errors import DependencyUnavailable

    path = str(tmp_path / "l.db")
    led = SQLiteLedger(path)
    led._db.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(DependencyUnavailable, match="ledger database"):
            led.claim(mkplan("k"), holder="h", event_id="e", now=1, ttl=60)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert led.claim(mkplan("k"), holder="h", event_id="e", now=1, ttl=60).won
    led.close()


def test_an_approval_survives_a_holder_that_died(led):
    """Approved, retaken by a worker that died (claim expired): the next
    claimer still carries the human's approval; it is not asked again."""
    assert led.claim(mkplan("k"), holder="a", event_id="e", now=100, ttl=60).won
    led.hold("k", holder="a", now=100, expires_at=1000, signal={})
    assert led.approve("k", approver="alice", now=110).ok
    assert led.claim(mkplan("k"), holder="dies", event_id="e", now=120, ttl=60).approved_by \
        == "alice"
    again = led.claim(mkplan("k"), holder="b", event_id="e", now=200, ttl=60)  # past its TTL
    assert again.won and again.approved_by == "alice"


_OLD_SCHEMA = """
CREATE TABLE claims (
  key TEXT PRIMARY KEY, function TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
  status TEXT NOT NULL, holder TEXT NOT NULL, claimed_at REAL NOT NULL,
  expires_at REAL NOT NULL, updated_at REAL NOT NULL, event_id TEXT NOT NULL DEFAULT '',
  plan TEXT NOT NULL DEFAULT '{}', decision TEXT NOT NULL DEFAULT '{}',
  reasons TEXT NOT NULL DEFAULT '[]', signal TEXT NOT NULL DEFAULT '{}',
  approved_by TEXT NOT NULL DEFAULT '', approved_at REAL NOT NULL DEFAULT 0,
  verification TEXT NOT NULL DEFAULT '', verification_detail TEXT NOT NULL DEFAULT '');
CREATE INDEX claims_target ON claims(target, updated_at);
CREATE INDEX claims_action ON claims(action, updated_at);
CREATE INDEX claims_status ON claims(status, expires_at);
"""


@pytest.mark.parametrize("final", ["denied", "failed", "skipped"])
def test_a_key_that_did_nothing_is_judged_again(led, final):
    assert led.claim(mkplan(), holder="a", event_id="e", now=100, ttl=60).won
    led.finish("k1", final, now=101)
    again = led.claim(mkplan(), holder="b", event_id="e", now=102, ttl=60, target_window=300)
    assert again.won and again.status == "claimed"
    assert led.get("k1").status == "claimed"


def test_a_key_judged_again_still_respects_the_target_window(led):
    assert led.claim(mkplan("k1"), holder="a", event_id="e1", now=100, ttl=60).won
    led.finish("k1", "denied", now=101)
    assert led.claim(mkplan("k2"), holder="a", event_id="e2", now=110, ttl=60,
                     target_window=300).won
    led.finish("k2", "applied", now=111)
    again = led.claim(mkplan("k1"), holder="b", event_id="e1", now=120, ttl=60,
                      target_window=300)
    assert not again.won and again.status == "target-recent" and again.other_key == "k2"
    assert led.get("k1").status == "denied"


@pytest.mark.parametrize("final", ["applied", "partial", "planned"])
def test_a_key_that_acted_is_never_judged_again(led, final):
    assert led.claim(mkplan(), holder="a", event_id="e", now=100, ttl=60).won
    led.finish("k1", final, now=101)
    again = led.claim(mkplan(), holder="b", event_id="e", now=9999, ttl=60)
    assert not again.won and again.status == final


def test_scheduled_work_is_listed_once_due_and_holds_nothing(led):
    signal = {"event_id": "e", "name": "GPUXidError", "status": "resolved"}
    assert led.schedule("scheduled/a", function="drain-gpu-node", target="Node//gpu-1",
                        event_id="e", now=100, due_at=400, signal=signal, reasons=["wait"])
    assert not led.schedule("scheduled/a", function="drain-gpu-node", target="Node//gpu-1",
                            event_id="e", now=200, due_at=500, signal=signal, reasons=[])
    assert led.due(now=399) == []
    (due,) = led.due(now=400)
    assert (due.key, due.function, due.signal) == ("scheduled/a", "drain-gpu-node",
                                                             signal)
    assert due.expires_at == 400  # the first schedule stands
    # not an action: counts for no limit and holds no target
    plan = Plan("drain-gpu-node", "uncordon", ObjectRef("Node", "", "gpu-1"), (), key="k9")
    assert led.stats(plan, now=401, window=3600)["cluster_actions_in_window"] == 0
    assert led.claim(plan, holder="a", event_id="e", now=401, ttl=60, target_window=300).won
    led.finish("scheduled/a", "swept", now=402)
    assert led.due(now=10_000) == []
