"""What only the Lease ledger has: real Lease objects, races between threads
through the API emulator, the API down."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from remediation.clients.kube import KubeLeases
from remediation.errors import DependencyUnavailable
from remediation.guard.lease_ledger import LeaseLedger, key_lease_name, target_lease_name
from remediation.model import ObjectRef, Plan

from tests.plugins.kube import make_api_client

NS = "remediation"


def plan(key: str, name: str = "vllm") -> Plan:
    return Plan("restart-engine", "rollout-restart", ObjectRef("Deployment", "llm", name), (),
                key=key)


def ledger(emu: Any) -> LeaseLedger:
    return LeaseLedger(KubeLeases(make_api_client(emu.url), NS, 5.0))


def test_a_claim_is_a_lease_with_a_deterministic_name(kube_emulator):
    led = ledger(kube_emulator)
    assert led.claim(plan("k/with:odd chars"), holder="pod-a:1", event_id="e", now=100,
                     ttl=60).won
    lease = kube_emulator.get("leases", NS, key_lease_name("k/with:odd chars"))
    assert lease["spec"]["holderIdentity"] == "pod-a:1"
    assert lease["spec"]["leaseDurationSeconds"] == 60
    assert lease["metadata"]["labels"]["inferenceremediation.io/status"] == "claimed"
    rec = json.loads(lease["metadata"]["annotations"]["inferenceremediation.io/record"])
    assert rec["target"] == "Deployment/llm/vllm" and rec["plan"]["action"] == "rollout-restart"
    led.finish("k/with:odd chars", "applied", now=101, reasons=["ok"])
    lease = kube_emulator.get("leases", NS, key_lease_name("k/with:odd chars"))
    assert lease["metadata"]["labels"]["inferenceremediation.io/status"] == "applied"


def test_eight_threads_racing_for_one_key_give_one_winner(kube_emulator):
    ledgers = [ledger(kube_emulator) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(lambda i: ledgers[i].claim(plan("same"), holder=f"h{i}",
                                                         event_id="e", now=100, ttl=60).won,
                             range(8)))
    assert sum(wins) == 1


def test_racing_incidents_on_one_target_give_one_winner(kube_emulator):
    ledgers = [ledger(kube_emulator) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(
            lambda i: ledgers[i].claim(plan(f"incident-{i}"), holder=f"h{i}", event_id="e",
                                       now=100, ttl=60, target_window=300), range(8)))
    assert sum(r.won for r in results) == 1
    assert {r.status for r in results if not r.won} <= {"target-recent", "claimed"}
    assert kube_emulator.get("leases", NS, target_lease_name("Deployment/llm/vllm",
                                                             "rollout-restart")) is not None


def test_racing_approvals_grant_once(kube_emulator):
    led = ledger(kube_emulator)
    led.claim(plan("k"), holder="h", event_id="e", now=100, ttl=60)
    led.hold("k", holder="h", now=101, expires_at=1000, signal={"id": "e"})
    ledgers = [ledger(kube_emulator) for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: ledgers[i].approve("k", approver=f"a{i}", now=200),
                                range(6)))
    granted = [r for r in results if r.ok]
    assert len(granted) == 1
    assert led.get("k").approved_by == granted[0].record.approved_by


def test_api_down_is_a_temporary_error_and_never_a_win(kube_emulator):
    led = ledger(kube_emulator)
    kube_emulator.fail(503, times=None)
    with pytest.raises(DependencyUnavailable):
        led.claim(plan("k"), holder="h", event_id="e", now=100, ttl=60)
    kube_emulator.clear_faults()
    assert led.get("k") is None
    assert led.claim(plan("k"), holder="h", event_id="e", now=100, ttl=60).won
