"""The circuit breaker in an Xid storm (issue 18): fatal Xids on many GPU
nodes at once never cordon more nodes than the policy's
``max_cordoned_gpu_nodes_percent`` allows, whether the alerts come in one
Alertmanager group (one batch, whose facts are read once) or are delivered,
duplicated and interleaved, to several worker processes at once.

Each plan that adds a cordon is judged under the ``gpu-cordons`` fleet lock
on a count read again from the API (``guard.fleet_lock``). The outcome is
read back from the cluster: the nodes that are unschedulable, and the Node
writes the API accepted.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from remediation.app import create_app
from remediation.cli import demo_dir
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import new_event, to_binary
from remediation.guard.fleet_lock import LeaseFleetLock, LocalFleetLock, SQLiteFleetLock
from remediation.guard.sender_auth import sign_events
from remediation.runtime import build_pipeline, close_pipeline
from remediation.settings import (
    HTTPSettings,
    KubeSettings,
    PolicySettings,
    Secret,
    Settings,
    VerifySettings,
)

from tests.kube_emulator import KubeEmulator
from tests.plugins.app import write_kubeconfig
from tests.test_exactly_once import EVENT_KEY, Workers

GPU_NODES = 10
LIMIT_PERCENT = 30  # 3 of 10 GPU nodes may be cordoned
ALLOWED = 3
XID_NODES = 6
BEARER = "breaker-storm"


def gpu_node(name: str) -> dict[str, Any]:
    capacity = {"cpu": "96", "memory": "1024Gi", "pods": "110", "nvidia.com/gpu": "8"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": f"uid-{name}",
                         "labels": {"kubernetes.io/hostname": name,
                                    "nvidia.com/gpu.present": "true"}},
            "spec": {},
            "status": {"capacity": capacity, "allocatable": capacity,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def xid_alert(node: str, n: int) -> dict[str, Any]:
    body = json.loads((demo_dir() / "events" / "10-dcgm-xid79-fell-off-bus.json").read_text())
    alert = body["alerts"][0]
    alert["labels"]["Hostname"] = node
    alert["labels"].pop("cluster", None)
    alert["fingerprint"] = f"{n:016x}"
    return alert


def group(nodes: list[str]) -> dict[str, Any]:
    body = json.loads((demo_dir() / "events" / "10-dcgm-xid79-fell-off-bus.json").read_text())
    body["alerts"] = [xid_alert(n, i) for i, n in enumerate(nodes)]
    return body


def cordoned(emu: KubeEmulator) -> list[str]:
    return sorted(n["metadata"]["name"] for n in emu.list("nodes")
                  if (n.get("spec") or {}).get("unschedulable"))


def node_writes(emu: KubeEmulator) -> list[str]:
    return [r.name for r in emu.requests
            if r.method == "PATCH" and r.resource == "nodes" and r.status < 300]


def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"remediation_config": {
        "limits": {"cluster_max_per_window": 1000,
                   "max_cordoned_gpu_nodes_percent": LIMIT_PERCENT},
        "actions": {a: {"max_per_window": 1000}
                    for a in ("cordon-drain", "mark-reboot")}}}))
    return path


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[KubeEmulator]:
    emu = KubeEmulator().start()
    emu.add([gpu_node(f"gpu-{i:02d}") for i in range(GPU_NODES)])
    yield emu
    emu.close()


def test_one_alertmanager_group_of_xids_cordons_exactly_up_to_the_limit(fleet, tmp_path):
    """Six Xids in one group: the batch reads its facts once, yet the fourth
    cordon is judged on the count after the first three."""
    settings = Settings(dry_run=False, http=HTTPSettings(alertmanager_bearer=Secret(BEARER)),
                        kube=KubeSettings(kubeconfig=str(write_kubeconfig(
                            tmp_path / "kubeconfig", fleet.url)), timeout=5),
                        policy=PolicySettings(data_file=str(policy_file(tmp_path))),
                        verify=VerifySettings(deadline=0))
    pipeline = build_pipeline(settings)
    try:
        resp = create_app(settings, pipeline).test_client().post(
            "/webhooks/alertmanager", json=group([f"gpu-{i:02d}" for i in range(XID_NODES)]),
            headers={"Authorization": f"Bearer {BEARER}"})
    finally:
        close_pipeline(pipeline)
    outcomes = resp.get_json()["outcomes"]
    assert [o["status"] for o in outcomes] == ["applied"] * ALLOWED + ["denied"] * (
        XID_NODES - ALLOWED)
    for o in outcomes[ALLOWED:]:
        assert any(f"circuit breaker: {ALLOWED + 1} of {GPU_NODES} GPU nodes" in r
                   for r in o["reasons"]), o["reasons"]
    assert cordoned(fleet) == [f"gpu-{i:02d}" for i in range(ALLOWED)]
    assert sorted(node_writes(fleet)) == [f"gpu-{i:02d}" for i in range(ALLOWED)]


def signed(alert: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    body = group([])
    body["alerts"] = [alert]
    (event,) = alertmanager_to_events(body, routes=lambda n, _l: "drain-gpu-node")
    (event,) = sign_events([event], EVENT_KEY, now=time.time(), rebuild=new_event)
    return to_binary(event)


@pytest.mark.parametrize("ledger", ["sqlite", "kubernetes"])
def test_an_xid_storm_over_three_workers_never_passes_the_limit(fleet, tmp_path, ledger):
    """Xids on six nodes, each delivered five times, shuffled over three
    worker processes (one ledger): three nodes cordoned, never a fourth."""
    env = {**os.environ,
           "KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", fleet.url)),
           "REMEDIATION_DRY_RUN": "false",
           "REMEDIATION_LEDGER": "kubernetes" if ledger == "kubernetes"
           else str(tmp_path / "ledger.sqlite"),
           "REMEDIATION_POLICY_DATA": str(policy_file(tmp_path)),
           "REMEDIATION_VERIFY_DEADLINE": "0",
           "REMEDIATION_LOG_LEVEL": "WARNING", "REMEDIATION_EVENT_HMAC_KEY": EVENT_KEY}
    for var in ("OPA_URL", "VAULT_ADDR"):
        env.pop(var, None)
    deliveries = [signed(xid_alert(f"gpu-{i:02d}", i)) for i in range(XID_NODES)
                  for _ in range(5)]
    random.Random(18).shuffle(deliveries)
    workers = Workers(env)
    try:
        urls = [workers.start(f"w{n}") for n in range(3)]
        results = workers.deliver_all(urls, deliveries, threads=12)
    finally:
        workers.close()
    statuses = [s for s, _ in results]
    assert len(cordoned(fleet)) == ALLOWED, cordoned(fleet)
    assert len(node_writes(fleet)) == ALLOWED  # one cordon per node, never a fourth node
    assert statuses.count("applied") == ALLOWED
    assert statuses.count("denied") >= XID_NODES - ALLOWED


@pytest.mark.parametrize("kind", ["local", "sqlite", "lease"])
def test_a_fleet_lock_has_one_holder_until_released_or_expired(kind, tmp_path):
    emu = None
    if kind == "local":
        locks: list[Any] = [LocalFleetLock()]
    elif kind == "sqlite":
        locks = [SQLiteFleetLock(str(tmp_path / "l.sqlite")) for _ in range(2)]
    else:
        from remediation.clients.kube import KubeLeases
        from remediation.settings import KubeSettings as KS

        emu = KubeEmulator().start()
        kube = KS(kubeconfig=str(write_kubeconfig(tmp_path / "kc", emu.url)), timeout=5,
                  self_namespace="remediation")
        locks = [LeaseFleetLock(KubeLeases.from_settings(kube)) for _ in range(2)]
    a, b = locks[0], locks[-1]
    try:
        assert a.acquire("gpu-cordons", holder="a", now=100.0, ttl=60)
        assert not b.acquire("gpu-cordons", holder="b", now=101.0, ttl=60)
        assert b.acquire("other-limit", holder="b", now=101.0, ttl=60)  # limits are apart
        assert not b.acquire("gpu-cordons", holder="b", now=159.0, ttl=60)
        assert b.acquire("gpu-cordons", holder="b", now=161.0, ttl=60)  # a died: expired
        a.release("gpu-cordons", holder="a")  # not a's any more: no effect
        assert not a.acquire("gpu-cordons", holder="a", now=162.0, ttl=60)
        b.release("gpu-cordons", holder="b")
        assert a.acquire("gpu-cordons", holder="a", now=163.0, ttl=60)
    finally:
        for lock in locks:
            lock.close()
        if emu is not None:
            emu.close()


def test_a_copy_of_a_group_is_not_a_second_batch_of_cordons(fleet, tmp_path):
    """The same group again (Alertmanager's repeat) cordons nothing more."""
    settings = Settings(dry_run=False, http=HTTPSettings(alertmanager_bearer=Secret(BEARER)),
                        kube=KubeSettings(kubeconfig=str(write_kubeconfig(
                            tmp_path / "kubeconfig", fleet.url)), timeout=5),
                        policy=PolicySettings(data_file=str(policy_file(tmp_path))),
                        verify=VerifySettings(deadline=0))
    pipeline = build_pipeline(settings)
    body = group([f"gpu-{i:02d}" for i in range(XID_NODES)])
    try:
        client = create_app(settings, pipeline).test_client()
        for _ in range(2):
            client.post("/webhooks/alertmanager", json=copy.deepcopy(body),
                        headers={"Authorization": f"Bearer {BEARER}"})
    finally:
        close_pipeline(pipeline)
    assert cordoned(fleet) == [f"gpu-{i:02d}" for i in range(ALLOWED)]
    assert len(node_writes(fleet)) == ALLOWED
