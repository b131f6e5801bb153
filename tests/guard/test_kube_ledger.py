"""The Lease ledger's races, made deterministic: a wrapper around the real
``KubeLeases`` store (over the API emulator) runs another ledger's whole
operation between one ledger's read and its write, so every optimistic-
concurrency path (create -> AlreadyExists, replace -> Conflict, delete
precondition -> Conflict) is taken on purpose instead of by luck of thread
timing (tests/guard/test_lease_ledger.py has the thread races). Also: the
Lease objects themselves, and the API failing half-way through a claim."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from remediation.clients.kube import KubeLeases
from remediation.errors import DependencyUnavailable
from remediation.guard.lease_ledger import (
    LEDGER_LABEL,
    RECORD_ANNOTATION,
    LeaseLedger,
    key_lease_name,
    target_lease_name,
)
from remediation.model import ObjectRef, Plan

from tests.plugins.kube import make_api_client

NS = "remediation"
TARGET = "Deployment/llm/vllm"
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class Interleaved:
    """A LeaseStore that runs ``hook()`` once, just before the first call
    of ``op`` on a Lease whose name starts with ``prefix``."""

    def __init__(self, store: KubeLeases) -> None:
        self.store = store
        self._hooks: list[tuple[str, str, Callable[[], None]]] = []

    def before(self, op: str, prefix: str, hook: Callable[[], None]) -> None:
        self._hooks.append((op, prefix, hook))

    def _run(self, op: str, name: str) -> None:
        for i, (o, prefix, hook) in enumerate(self._hooks):
            if o == op and name.startswith(prefix):
                del self._hooks[i]
                hook()
                return

    def create(self, name: str, *, labels: Mapping[str, str], annotations: Mapping[str, str],
               spec: Mapping[str, Any]) -> dict[str, Any]:
        self._run("create", name)
        return self.store.create(name, labels=labels, annotations=annotations, spec=spec)

    def get(self, name: str) -> dict[str, Any] | None:
        self._run("get", name)
        return self.store.get(name)

    def replace(self, lease: Mapping[str, Any]) -> dict[str, Any]:
        self._run("replace", lease["metadata"]["name"])
        return self.store.replace(lease)

    def delete(self, name: str, *, resource_version: str) -> None:
        self._run("delete", name)
        self.store.delete(name, resource_version=resource_version)

    def list(self, labels: Mapping[str, str], **kwargs: Any) -> list[dict[str, Any]]:
        return self.store.list(labels, **kwargs)

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def make(kube_emulator) -> Any:
    """``make(timeout=5.0) -> (ledger, store)``: another handle on the ledger."""
    made: list[LeaseLedger] = []

    def new(timeout: float = 5.0) -> tuple[LeaseLedger, Interleaved]:
        store = Interleaved(KubeLeases(make_api_client(kube_emulator.url), NS, timeout))
        made.append(LeaseLedger(store))
        return made[-1], store
    yield new
    for led in made:
        led.close()


def plan(key: str, name: str = "vllm") -> Plan:
    return Plan("restart-engine", "rollout-restart", ObjectRef("Deployment", "llm", name), (),
                key=key)


def lease(emu: Any, name: str) -> dict[str, Any]:
    got = emu.get("leases", NS, name)
    assert got is not None, name
    return got


# -- the objects ------------------------------------------------------------------

def test_key_and_target_leases_have_valid_names_labels_and_holders(kube_emulator, make):
    led, _ = make()
    long_target = "x" * 200  # labels carry digests, never the raw target
    assert led.claim(plan("alert/ns:pod#1", long_target), holder="pod-a", event_id="e", now=100,
                     ttl=60, target_window=300).won
    led.hold("alert/ns:pod#1", holder="pod-a", now=101, expires_at=400, signal={"a": 1})
    key = lease(kube_emulator, key_lease_name("alert/ns:pod#1"))
    tgt = lease(kube_emulator, target_lease_name(f"Deployment/llm/{long_target}",
                                                 "rollout-restart"))
    for obj in (key, tgt):
        name = obj["metadata"]["name"]
        assert DNS1123.match(name) and len(name) <= 63
        assert all(LABEL_VALUE.match(v) and len(v) <= 63
                   for v in obj["metadata"]["labels"].values())
    assert key["metadata"]["name"] == key_lease_name("alert/ns:pod#1")  # deterministic
    assert key["metadata"]["labels"][LEDGER_LABEL] == "claim"
    assert key["metadata"]["labels"]["inferenceremediation.io/status"] == "pending"
    assert key["spec"]["holderIdentity"] == "pod-a"
    assert key["spec"]["leaseDurationSeconds"] == 300  # until the approval expires
    assert key["spec"]["acquireTime"].startswith("1970-01-01T00:01:40")  # the caller's clock
    rec = json.loads(key["metadata"]["annotations"][RECORD_ANNOTATION])
    assert rec["signal"] == {"a": 1} and rec["status"] == "pending"
    assert tgt["metadata"]["labels"][LEDGER_LABEL] == "target"
    assert tgt["spec"]["holderIdentity"] == "alert/ns:pod#1"  # the key holding the target
    assert json.loads(tgt["metadata"]["annotations"][RECORD_ANNOTATION])["expires_at"] == 160
    assert [r.key for r in led.history()] == ["alert/ns:pod#1"]  # target Leases: no history


def _micro_text(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


RFC3339_MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")


@pytest.mark.parametrize("now", [100.0, 1767225600.0, 1767225600.25])
def test_lease_times_reach_the_api_as_rfc3339_micro(kube_emulator, make, now):
    """A whole second (zero fraction) is where the typed client would send
    ``...+00:00`` and the API server (and the emulator) answer 400."""
    led, _ = make()
    kube_emulator.clear_requests()
    assert led.claim(plan("k"), holder="h", event_id="e", now=now, ttl=60,
                     target_window=300).won
    led.hold("k", holder="h", now=now + 1, expires_at=now + 600, signal={})  # a replace
    assert led.approve("k", approver="alice", now=now + 2).ok
    writes = [r for r in kube_emulator.requests if r.method in ("POST", "PUT")]
    assert len(writes) == 4 and all(r.status in (200, 201) for r in writes)
    for w in writes:
        spec = w.body["spec"]
        assert RFC3339_MICRO.match(spec["acquireTime"]) and RFC3339_MICRO.match(spec["renewTime"])
    stored = lease(kube_emulator, key_lease_name("k"))["spec"]
    assert stored["acquireTime"] == _micro_text(now)


def race(store: Interleaved, op: str, prefix: str, other: LeaseLedger, key: str,
         now: float, *, holder: str = "h", window: float = 300.0) -> list[Any]:
    """``other`` claims ``key`` at ``now`` just before ``store``'s next ``op``
    on a Lease named ``prefix``...; its ClaimResult lands in the list returned."""
    results: list[Any] = []
    store.before(op, prefix, lambda: results.append(
        other.claim(plan(key), holder=holder, event_id="e", now=now, ttl=60,
                    target_window=window)))
    return results


# -- optimistic concurrency, one interleaving at a time --------------------------------

def test_a_stale_resource_version_on_approve_gives_one_approval(kube_emulator, make):
    led, store = make()
    other, _ = make()
    led.claim(plan("k"), holder="h", event_id="e", now=100, ttl=60)
    led.hold("k", holder="h", now=101, expires_at=1000, signal={})
    rv = lease(kube_emulator, key_lease_name("k"))["metadata"]["resourceVersion"]
    # bob reads the pending Lease; alice approves before bob's replace lands
    store.before("replace", "rem-", lambda: other.approve("k", approver="alice", now=200))
    bob = led.approve("k", approver="bob", now=201)
    assert not bob.ok and bob.status == "approved"  # re-read after 409 Conflict
    assert bob.record.approved_by == "alice" and bob.record.approved_at == 200
    assert int(lease(kube_emulator, key_lease_name("k"))["metadata"]["resourceVersion"]) \
        == int(rv) + 1  # exactly one write: alice's
    won = led.claim(plan("k"), holder="h2", event_id="e", now=202, ttl=60)
    assert won.won and won.approved_by == "alice"


def test_a_stale_resource_version_on_retake_gives_one_winner(make):
    led, store = make()
    other, _ = make()
    led.claim(plan("k"), holder="dead", event_id="e", now=100, ttl=60)
    results = race(store, "replace", "rem-", other, "k", 200, holder="fast", window=0)
    slow = led.claim(plan("k"), holder="slow", event_id="e", now=200, ttl=60)
    assert results[0].won
    assert not slow.won and slow.status == "claimed" and slow.holder == "fast"
    assert led.get("k").holder == "fast"


def test_racing_creates_of_the_target_lease_give_one_winner(make):
    led, store = make()
    other, _ = make()
    # both read "no target Lease"; the other creates it (and its key) first
    results = race(store, "create", "remt-", other, "incident-b", 100)
    mine = led.claim(plan("incident-a"), holder="h", event_id="e", now=100, ttl=60,
                     target_window=300)
    assert results[0].won
    assert not mine.won and mine.status == "target-recent" and mine.other_key == "incident-b"
    assert led.get("incident-a") is None


def test_racing_replaces_of_a_free_target_lease_give_one_winner(make):
    led, store = make()
    other, _ = make()
    led.claim(plan("old"), holder="h", event_id="e", now=100, ttl=60, target_window=300)
    led.finish("old", "denied", now=100)  # the target Lease exists but is free
    results = race(store, "replace", "remt-", other, "incident-b", 200)
    mine = led.claim(plan("incident-a"), holder="h", event_id="e", now=200, ttl=60,
                     target_window=300)
    assert results[0].won
    assert not mine.won and mine.status == "target-recent" and mine.other_key == "incident-b"


def test_a_claimer_between_target_and_key_lease_counts_as_in_flight(make):
    """The gap: the target Lease names incident-a, whose key Lease is not
    created yet. A racer arriving then must lose, not see a free target."""
    led, store = make()
    other, _ = make()
    results = race(store, "create", "rem-", other, "incident-b", 100)
    assert led.claim(plan("incident-a"), holder="h", event_id="e", now=100, ttl=60,
                     target_window=300).won
    assert not results[0].won and results[0].status == "target-recent"
    assert results[0].other_key == "incident-a" and results[0].other_status == "claimed"


def dies_in_the_gap(led: LeaseLedger, store: Interleaved) -> None:
    """incident-a takes the target Lease at t=100, then the API fails on
    creating its key Lease: never a win, the target names it until its TTL."""
    def api_down() -> None:
        raise DependencyUnavailable("create lease: 503")
    store.before("create", "rem-", api_down)
    with pytest.raises(DependencyUnavailable):
        led.claim(plan("incident-a"), holder="h", event_id="e", now=100, ttl=60,
                  target_window=300)


def test_a_claimer_that_died_in_the_gap_blocks_the_target_for_one_ttl(make):
    led, store = make()
    other, _ = make()
    dies_in_the_gap(led, store)
    assert led.get("incident-a") is None  # never a win
    blocked = other.claim(plan("incident-b"), holder="h", event_id="e", now=160, ttl=60,
                          target_window=300)
    assert not blocked.won and blocked.other_key == "incident-a"
    assert other.claim(plan("incident-b"), holder="h", event_id="e", now=161, ttl=60,
                       target_window=300).won
    # had incident-a been redelivered instead, it would have won at once:
    assert not led.claim(plan("incident-a"), holder="h", event_id="e", now=162, ttl=60,
                         target_window=300).won  # (now b holds the target)


def test_the_failed_claimer_redelivered_takes_its_own_target_back(make):
    led, store = make()
    dies_in_the_gap(led, store)
    assert led.claim(plan("incident-a"), holder="h", event_id="e2", now=101, ttl=60,
                     target_window=300).won


def test_release_after_a_concurrent_write_still_releases(make):
    led, store = make()
    other, _ = make()
    led.claim(plan("k"), holder="h", event_id="e", now=100, ttl=60)
    # a write lands between release's read and its delete: the precondition fails
    store.before("delete", "rem-", lambda: other.record_verification(
        "k", "failed", detail="x", now=101))
    led.release("k", holder="h")
    assert led.get("k") is None


def claimed_a(make: Any, holder: str = "h") -> tuple[LeaseLedger, Interleaved, LeaseLedger]:
    """incident-a claimed at t=100 (TTL 60, window 300); and another ledger."""
    led, store = make()
    other, _ = make()
    assert led.claim(plan("incident-a"), holder=holder, event_id="e", now=100, ttl=60,
                     target_window=300).won
    return led, store, other


def release_racing(led: LeaseLedger, store: Interleaved, other: LeaseLedger, key: str,
                   now: float, holder: str = "h") -> Any:
    """Release incident-a while ``other`` claims ``key`` at ``now``, just
    before the release marks the target Lease; the racer's ClaimResult."""
    results = race(store, "replace", "remt-", other, key, now, holder="h2")
    led.release("incident-a", holder=holder)
    (result,) = results
    return result


def target_record(emu: Any) -> dict[str, Any]:
    tgt = lease(emu, target_lease_name(TARGET, "rollout-restart"))
    return json.loads(tgt["metadata"]["annotations"][RECORD_ANNOTATION])


def test_release_frees_the_target_at_once(make):
    led, store, other = claimed_a(make)
    # a claimer arriving mid-release (key Lease gone, target not yet marked)
    # sees incident-a in flight, as it was a moment before: it loses
    racer = release_racing(led, store, other, "incident-b", now=101)
    assert not racer.won and racer.other_key == "incident-a"
    # once release returns, the target is free (not blocked until the TTL)
    assert other.claim(plan("incident-b"), holder="h", event_id="e", now=102, ttl=60,
                       target_window=300).won


def test_a_late_release_never_marks_a_new_holder_released(kube_emulator, make):
    led, store, other = claimed_a(make)
    # incident-a's holder releases late (past its TTL); incident-b takes the
    # target between the release's read of the target Lease and its mark
    assert release_racing(led, store, other, "incident-b", now=161).won
    held = target_record(kube_emulator)
    assert (held["key"], held["status"]) == ("incident-b", "claimed")  # not marked released
    late = led.claim(plan("incident-c"), holder="h", event_id="e", now=162, ttl=60,
                     target_window=300)
    assert not late.won and late.other_key == "incident-b"


def test_a_release_leaves_alone_a_target_its_key_retook_meanwhile(kube_emulator, make):
    """The same key, redelivered, retakes the target between a release's
    delete and its mark: the mark must not land on the new take, or another
    incident could slip in before the redelivery creates its key Lease."""
    led, store, again = claimed_a(make, holder="h1")
    assert release_racing(led, store, again, "incident-a", now=101, holder="h1").won
    held = target_record(kube_emulator)
    assert (held["key"], held["status"], held["taken_at"]) == ("incident-a", "claimed", 101)


def test_finish_after_a_concurrent_write_keeps_both(make):
    led, store = make()
    other, _ = make()
    led.claim(plan("k"), holder="h", event_id="e", now=100, ttl=60)
    store.before("replace", "rem-", lambda: other.record_verification(
        "k", "succeeded", detail="ready", now=101))
    led.finish("k", "applied", now=102, reasons=["done"])
    rec = led.get("k")
    assert (rec.status, rec.reasons, rec.verification) == \
        ("applied", ("done",), "succeeded")


# -- the API failing -----------------------------------------------------------------

@pytest.mark.parametrize("status", [500, 503, 429])
def test_api_down_on_any_call_is_temporary_and_never_a_win(kube_emulator, make, status):
    led, _ = make()
    for method in ("GET", "POST"):
        kube_emulator.fail(status, times=None, method=method, retry_after=7)
        with pytest.raises(DependencyUnavailable) as err:
            led.claim(plan("k"), holder="h", event_id="e", now=100, ttl=60, target_window=300)
        assert err.value.delay == 7.0
        kube_emulator.clear_faults()
        assert led.get("k") is None
    assert led.claim(plan("k"), holder="h", event_id="e", now=100, ttl=60,
                     target_window=300).won


def test_api_down_on_approve_and_finish_is_temporary(kube_emulator, make):
    led, _ = make()
    led.claim(plan("k"), holder="h", event_id="e", now=100, ttl=60)
    led.hold("k", holder="h", now=101, expires_at=1000, signal={})
    kube_emulator.fail(503, times=None, method="PUT")
    with pytest.raises(DependencyUnavailable):
        led.approve("k", approver="alice", now=200)
    with pytest.raises(DependencyUnavailable):
        led.finish("k", "applied", now=200)
    kube_emulator.clear_faults()
    assert led.get("k").status == "pending"
    assert led.approve("k", approver="alice", now=201).ok


def test_a_slow_api_times_out_and_an_ambiguous_create_is_not_a_win(kube_emulator, make):
    """The create times out on our side but the server carries it out: we
    answer "retry", and the orphan claim is retaken once its TTL is over."""
    led, _ = make(timeout=0.5)
    kube_emulator.delay(1.5, times=1, method="POST")
    with pytest.raises(DependencyUnavailable):
        led.claim(plan("k"), holder="h", event_id="e", now=100, ttl=60)
    deadline = time.monotonic() + 5
    while led.get("k") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    busy = led.claim(plan("k"), holder="h", event_id="e", now=120, ttl=60)
    assert not busy.won and busy.status == "claimed"  # the orphan, until its TTL
    assert led.claim(plan("k"), holder="h", event_id="e", now=161, ttl=60).won


@pytest.mark.parametrize("window", [0.0, 300.0])
def test_a_missing_namespace_is_a_clear_retryable_error_not_a_conflict(window):
    """404 on create is the namespace, not a race: say so (the pipeline
    answers retry, the event is redelivered or dead-lettered), never loop or
    invent a target-recent."""
    from tests.kube_emulator import KubeEmulator

    emu = KubeEmulator(require_namespaces=True).start()
    try:
        led = LeaseLedger(KubeLeases(make_api_client(emu.url), "no-such-namespace", 5.0))
        with pytest.raises(DependencyUnavailable, match="ledger namespace 'no-such-namespace' "
                                                        "does not exist"):
            led.claim(plan("k"), holder="h", event_id="e", now=100, ttl=60,
                      target_window=window)
        assert len([r for r in emu.requests if r.method == "POST"]) == 1  # no loop
        led.close()
    finally:
        emu.close()


# -- what a claim costs (issue 18) -------------------------------------------------------

def test_a_racer_between_the_target_take_and_the_retake_of_a_denied_key_loses(make):
    """A key judged again (denied) retakes the target Lease, then its key
    Lease: a racer arriving in between sees it in flight, as for a new key."""
    led, store = make()
    other, _ = make()
    assert led.claim(plan("incident-a"), holder="h", event_id="e", now=100, ttl=60,
                     target_window=300).won
    led.finish("incident-a", "denied", now=100)
    results = race(store, "replace", "rem-", other, "incident-b", 200)
    assert led.claim(plan("incident-a"), holder="h", event_id="e", now=200, ttl=60,
                     target_window=300).won
    assert not results[0].won and results[0].status == "target-recent"
    assert results[0].other_key == "incident-a"


def lease_requests(emu: Any, since: int) -> list[tuple[str, str]]:
    return [(r.method, r.name) for r in emu.requests[since:] if r.resource == "leases"]


def seed_finished_records(led: LeaseLedger, n: int) -> None:
    """``n`` finished records of other targets (the ledger of a busy fleet)."""
    for i in range(n):
        key = f"other-{i}"
        assert led.claim(plan(key, f"engine-{i}"), holder="h", event_id="e", now=50,
                         ttl=60).won
        led.finish(key, "applied" if i % 2 else "denied", now=50)


@pytest.mark.parametrize("others", [10, 1000])
def test_a_claim_and_its_finish_cost_the_same_however_many_leases_exist(
        kube_emulator, make, others):
    """Claim = create, with no read of the new key's Lease; the finish
    replaces with the resourceVersion the claim got back: four requests
    (take the target: one list, a create; create the key; replace it),
    whether the ledger holds 10 or 1,000 other records."""
    led, _ = make()
    seed_finished_records(led, others)
    fresh, _ = make()  # another replica: nothing of the seeding in its memory
    fresh.prune(now=100)  # its first claim would prune (two lists, once per interval)
    fresh._pruned_at = 100
    mark = len(kube_emulator.requests)
    assert fresh.claim(plan("incident-a"), holder="h", event_id="e", now=100, ttl=60,
                       target_window=300).won
    fresh.finish("incident-a", "applied", now=101)
    fresh.record_verification("incident-a", "succeeded", detail="ok", now=102)
    got = lease_requests(kube_emulator, mark)
    # list the target Lease and the target's records, create the target
    # Lease, create the key Lease; finish and verification: one replace each
    assert [(m, bool(n)) for m, n in got] == [
        ("GET", False), ("POST", False), ("POST", False), ("PUT", True), ("PUT", True)], got
    assert fresh.get("incident-a").verification == "succeeded"


def test_a_redelivery_of_a_finished_key_is_answered_by_the_target_list(kube_emulator, make):
    led, _ = make()
    assert led.claim(plan("k"), holder="h", event_id="e", now=100, ttl=60,
                     target_window=300).won
    led.finish("k", "applied", now=100)
    mark = len(kube_emulator.requests)
    again = led.claim(plan("k"), holder="h2", event_id="e2", now=110, ttl=60,
                      target_window=300)
    assert not again.won and again.status == "applied"
    # the target's list, which shows the key applied
    assert [(m, bool(n)) for m, n in lease_requests(kube_emulator, mark)] == [("GET", False)]


def test_a_claim_without_a_window_is_one_create(kube_emulator, make):
    led, _ = make()
    led._pruned_at = 100  # pruned a moment ago (two lists, once per interval)
    mark = len(kube_emulator.requests)
    assert led.claim(plan("k"), holder="h", event_id="e", now=100, ttl=60).won
    assert [m for m, _ in lease_requests(kube_emulator, mark)] == ["POST"]
    again = led.claim(plan("k"), holder="h", event_id="e", now=101, ttl=60)
    assert not again.won and again.status == "claimed"  # AlreadyExists, then read


def test_an_approved_key_is_retaken_even_when_another_key_took_the_target(make):
    """As before create-first: an approved key is retaken without the
    target window (its approval was asked while it held the target)."""
    led, _ = make()
    assert led.claim(plan("k"), holder="h", event_id="e", now=100, ttl=60,
                     target_window=300).won
    led.hold("k", holder="h", now=100, expires_at=1000, signal={})
    assert led.approve("k", approver="alice", now=150).ok
    other, _ = make()
    assert other.claim(plan("b"), holder="h", event_id="e", now=160, ttl=60,
                       target_window=300).won
    won = led.claim(plan("k"), holder="h", event_id="e", now=170, ttl=60, target_window=300)
    assert won.won and won.approved_by == "alice"


def test_a_target_lease_written_without_its_labels_still_guards_the_target(kube_emulator,
                                                                          make):
    """A target Lease an earlier version wrote (labelled only as a target)
    is not in the list: the create meets it, then it is read as before."""
    led, store = make()
    held = {"key": "incident-old", "target": TARGET, "action": "rollout-restart",
            "status": "claimed", "holder": "incident-old", "claimed_at": 100,
            "expires_at": 160, "updated_at": 100, "taken_at": 100}
    store.store.create(target_lease_name(TARGET, "rollout-restart"),
                       labels={"inferenceremediation.io/ledger": "target"},
                       annotations={RECORD_ANNOTATION: json.dumps(held)},
                       spec={"holderIdentity": "incident-old"})
    busy = led.claim(plan("incident-a"), holder="h", event_id="e", now=120, ttl=60,
                     target_window=300)
    assert not busy.won and busy.other_key == "incident-old"  # in flight until 160
    assert led.claim(plan("incident-a"), holder="h", event_id="e", now=161, ttl=60,
                     target_window=300).won
    labels = lease(kube_emulator, target_lease_name(TARGET, "rollout-restart"))[
        "metadata"]["labels"]
    assert labels["inferenceremediation.io/status"] == "target"  # labelled when retaken
