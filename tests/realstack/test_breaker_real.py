"""The circuit breaker on a real API server: an Xid storm over four real
worker processes (``remediate serve``, Lease ledger) never cordons more GPU
nodes than the policy allows. The ``gpu-cordons`` fleet lock is a real Lease
taken under real optimistic concurrency; the count is what the real API
lists; the result is read back from the real Nodes and the audit log."""

from __future__ import annotations

import json
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml
from remediation.cli import demo_dir
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import new_event, to_binary
from remediation.guard.sender_auth import sign_events

from tests.realstack.components import ControlPlane, wait_until
from tests.realstack.conftest import node
from tests.test_circuit_breaker_storm import signed, xid_alert
from tests.test_exactly_once import EVENT_KEY, Workers

STORM_NODES = 10  # extra GPU nodes of this test
XIDS = 8  # of them hit by a fatal Xid at once
NEW_CORDONS = 3  # the limit leaves room for this many
WORKERS = 4


def gpu_nodes(plane: ControlPlane) -> list[dict[str, Any]]:
    return [n for n in plane.read("/api/v1/nodes")["items"]
            if "nvidia.com/gpu" in (n.get("status", {}).get("allocatable") or {})]


def test_an_xid_storm_over_four_workers_cordons_no_more_than_the_limit(
        control_plane, gpu_fleet, tmp_path: Path):
    plane = control_plane
    names = [f"cb-gpu-{i:02d}" for i in range(STORM_NODES)]
    for name in names:
        plane.create("/api/v1/nodes", node(name))
    try:
        wait_until("kwok to make the storm's nodes Ready", lambda: all(
            any(c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", []))
            for n in gpu_nodes(plane) if n["metadata"]["name"] in names), None, timeout=60)
        fleet = gpu_nodes(plane)
        total = len(fleet)
        before = sum(1 for n in fleet if n.get("spec", {}).get("unschedulable"))
        allowed = before + NEW_CORDONS
        percent = math.ceil(allowed * 100 / total)  # allowed fits, allowed + 1 does not
        assert allowed * 100 <= percent * total < (allowed + 1) * 100
        policy = tmp_path / "policy.yaml"
        policy.write_text(yaml.safe_dump({"remediation_config": {
            "limits": {"cluster_max_per_window": 1000,
                       "max_cordoned_gpu_nodes_percent": percent},
            "actions": {a: {"max_per_window": 1000} for a in ("cordon-drain", "mark-reboot")}}}))
        plane.apply_objects([{"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": "remediation"}}])
        env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig),
               "REMEDIATION_DRY_RUN": "false", "REMEDIATION_LEDGER": "kubernetes",
               "REMEDIATION_NAMESPACE": "remediation",
               "REMEDIATION_POLICY_DATA": str(policy), "REMEDIATION_VERIFY_DEADLINE": "0",
               "REMEDIATION_LOG_LEVEL": "WARNING", "REMEDIATION_EVENT_HMAC_KEY": EVENT_KEY}
        for var in ("OPA_URL", "VAULT_ADDR"):
            env.pop(var, None)
        deliveries = [signed(xid_alert(names[i], i)) for i in range(XIDS) for _ in range(4)]
        random.Random(18).shuffle(deliveries)
        workers = Workers(env)
        try:
            urls = [workers.start(f"w{n}") for n in range(WORKERS)]
            results = workers.deliver_all(urls, deliveries, threads=16)
        finally:
            workers.close()
        statuses = [s for s, _ in results]
        ours = [n["metadata"]["name"] for n in gpu_nodes(plane)
                if n["metadata"]["name"] in names and n.get("spec", {}).get("unschedulable")]
        writes = {e["objectRef"]["name"] for e in plane.audited("patch", "nodes")
                  if e.get("responseStatus", {}).get("code") == 200
                  and e["objectRef"]["name"] in names
                  # the workers' writes, not the node controllers' or kwok's
                  and not e["user"]["username"].startswith("system:")
                  and e["user"]["username"] != "kwok"}
        print(f"\nXid storm on the real API: {len(deliveries)} deliveries of {XIDS} Xids to "
              f"{WORKERS} workers, limit {percent}% of {total} GPU nodes: cordoned {sorted(ours)}; "
              f"replies { {s: statuses.count(s) for s in set(statuses)} }")
        assert len(ours) == NEW_CORDONS, ours
        assert writes == set(ours)  # no node was patched beyond those cordoned
        assert statuses.count("applied") == NEW_CORDONS
        leases = plane.read("/apis/coordination.k8s.io/v1/namespaces/remediation/leases")["items"]
        lock = [x for x in leases if x["metadata"]["name"] == "remediation-lock-gpu-cordons"]
        assert lock and not lock[0]["spec"].get("holderIdentity")  # taken, and let go
    finally:
        for name in names:
            plane.request("DELETE", f"/api/v1/nodes/{name}")
        plane.request("DELETE", "/apis/coordination.k8s.io/v1/namespaces/remediation/leases")
