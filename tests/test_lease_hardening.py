"""Issue 15, findings 4 (approval state in Leases is integrity-protected)
and 6 (the Lease ledger reads by label selector and prunes).

- A pod with Lease write rights rewrites a pending remediation's Lease to
  ``approved`` by someone: the next delivery must not act on it.
- Thousands of finished (denied) Leases, as a storm of forged alerts leaves
  them, must not make a claim read more: the requests per claim and the
  Leases each claim reads stay what they are on an empty ledger.
- Finished records past the retention are pruned; records in play are not.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from collections.abc import Mapping

import pytest
import yaml

from remediation.clients.kube import KubeLeases
from remediation.events.binding import to_binary
from remediation.guard.lease_ledger import (LEDGER_LABEL, RECORD_ANNOTATION, STATUS_LABEL,
                                            TARGET_LABEL, ACTION_LABEL, LeaseLedger, _digest,
                                            key_lease_name)
from remediation.model import ObjectRef, Plan
from remediation.settings import (ApprovalSettings, LedgerSettings,
                                  PolicySettings, Secret, VerifySettings)

from tests.plugins.kube import make_api_client
from tests.test_approval_e2e import alert_event, approval_event, patches, restarted_at

NS = "remediation"
SECRET = "approval-hmac-key-31f9"


# --------------------------------------------------------------------------- finding 4


@pytest.fixture
def lease_app(fleet, make_settings, serve_app, tmp_path: Path) -> Any:
    data = {"remediation_config": {"actions": {"rollout-restart": {"approval": True}}}}
    f = tmp_path / "approval-policy.yaml"
    f.write_text(yaml.safe_dump(data))
    base = make_settings(policy=PolicySettings(data_file=str(f)),
                         ledger=LedgerSettings(path="kubernetes"),
                         approval=ApprovalSettings(ttl=600.0, secret=Secret(SECRET)),
                         verify=VerifySettings(deadline=5.0, interval=0.05))
    return serve_app(base)


def post(app: Any, event: Any) -> Any:
    headers, body = to_binary(event)
    return app.post("/", headers=headers, content=body)


def test_a_forged_approval_in_a_lease_releases_nothing(lease_app, fleet):
    resp = post(lease_app, alert_event())
    assert resp.json()["status"] == "pending", resp.text
    key = resp.json()["approval"]["id"]
    # the attacker: write rights on Leases in the ledger's namespace
    lease = fleet.get("leases", NS, key_lease_name(key))
    rec = json.loads(lease["metadata"]["annotations"][RECORD_ANNOTATION])
    rec.update(status="approved", approved_by="mallory", approved_at=time.time(),
               approval_mac="0" * 64)
    lease["metadata"]["annotations"][RECORD_ANNOTATION] = json.dumps(rec)
    lease["metadata"]["labels"][STATUS_LABEL] = "approved"
    fleet.add(lease)

    again = post(lease_app, alert_event())
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "pending"  # asks a human again
    assert restarted_at(fleet) is None and patches(fleet) == []


def test_a_signed_approval_through_the_lease_ledger_still_applies(lease_app, fleet):
    request = post(lease_app, alert_event()).json()["approval"]
    key = request["id"]
    resp = post(lease_app, approval_event(key, "alice", expires_at=request["expires_at"]))
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "applied"
    assert resp.json()["approval"]["approved_by"] == "alice"
    rec = json.loads(fleet.get("leases", NS, key_lease_name(key))["metadata"]["annotations"][
        RECORD_ANNOTATION])
    assert len(rec["approval_mac"]) == 64
    assert len(patches(fleet)) == 1


# --------------------------------------------------------------------------- finding 6


class Counting:
    """A LeaseStore proxy counting requests and the Leases lists return."""

    def __init__(self, store: KubeLeases) -> None:
        self.store = store
        self.requests = 0
        self.listed = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name in ("create", "get", "replace", "delete"):
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.requests += 1
                return attr(*args, **kwargs)
            return counted
        return attr

    def list(self, labels: Mapping[str, str], **kwargs: Any) -> list[dict[str, Any]]:
        self.requests += 1
        items = self.store.list(labels, **kwargs)
        self.listed += len(items)
        return items


def plan(key: str, name: str = "vllm") -> Plan:
    return Plan("restart-engine", "rollout-restart", ObjectRef("Deployment", "llm", name), (),
                key=key)


def denied_lease(i: int, target: str, now: float) -> dict[str, Any]:
    key = f"forged-{i}"
    rec = {"key": key, "function": "restart-engine", "action": "rollout-restart",
           "target": target, "status": "denied", "holder": "h", "claimed_at": now,
           "expires_at": now + 60, "updated_at": now, "event_id": key, "plan": {},
           "decision": {}, "reasons": [], "signal": {}, "approved_by": "",
           "approved_at": 0.0, "verification": "", "verification_detail": ""}
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": key_lease_name(key), "namespace": NS,
                         "labels": {LEDGER_LABEL: "claim", STATUS_LABEL: "denied",
                                    TARGET_LABEL: _digest(target),
                                    ACTION_LABEL: _digest("rollout-restart", 16)},
                         "annotations": {RECORD_ANNOTATION: json.dumps(rec)}},
            "spec": {"holderIdentity": "h", "leaseDurationSeconds": 60}}


def one_claim(store: Counting, key: str, now: float) -> tuple[int, int]:
    led = LeaseLedger(store, approval_key=SECRET, retention=86400.0)
    led._pruned_at = now  # pruning is measured on its own below
    before = (store.requests, store.listed)
    p = plan(key)
    assert led.claim(p, holder="h", event_id=key, now=now, ttl=60, target_window=300).won
    led.stats(p, now=now, window=3600, exclude_key=key)
    led.history(target=str(p.target), statuses=("claimed", "applied", "planned", "partial"))
    cost = (store.requests - before[0], store.listed - before[1])
    led.release(key, holder="h")  # nothing done: the next claim starts from the same state
    return cost


def test_thousands_of_denied_leases_do_not_grow_a_claim(kube_emulator):
    kube_emulator.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    store = Counting(KubeLeases(make_api_client(kube_emulator.url), NS, 10.0))
    now = time.time()
    # the target Lease exists from an earlier claim in both measurements (a
    # claim's list returns it with the target's records)
    one_claim(store, "earlier", now - 400)
    baseline = one_claim(store, "first", now)
    target = str(plan("x").target)
    kube_emulator.add([denied_lease(i, target, now) for i in range(3000)])
    after = one_claim(store, "second", now + 400)  # another incident, past the window
    assert after[0] == baseline[0], (baseline, after)  # requests per claim
    assert after[1] == baseline[1], (baseline, after)  # Leases read per claim


def test_finished_records_past_the_retention_are_pruned(kube_emulator):
    kube_emulator.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    led = LeaseLedger(KubeLeases(make_api_client(kube_emulator.url), NS, 10.0),
                      approval_key=SECRET, retention=3600.0, prune_interval=300.0)
    led._pruned_at = 0.0
    t0 = 10_000.0
    for i in range(5):
        assert led.claim(plan(f"old-{i}", f"e{i}"), holder="h", event_id="e", now=t0,
                         ttl=60, target_window=300).won
        led.finish(f"old-{i}", "denied", now=t0)
    assert led.claim(plan("in-flight", "busy"), holder="h", event_id="e", now=t0,
                     ttl=60).won  # claimed, never finished: still in play
    led.hold("in-flight", holder="h", now=t0, expires_at=t0 + 10 ** 6, signal={})
    leases_before = len(kube_emulator.list("leases", NS))
    # a claim after the retention prunes (once per interval)
    assert led.claim(plan("new", "fresh"), holder="h", event_id="e", now=t0 + 7200,
                     ttl=60).won
    names = {lease["metadata"]["name"] for lease in kube_emulator.list("leases", NS)}
    assert not any(key_lease_name(f"old-{i}") in names for i in range(5))
    assert key_lease_name("in-flight") in names and key_lease_name("new") in names
    assert len(names) < leases_before
