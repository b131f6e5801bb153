"""Exactly once on a real API server, with the Lease ledger.

Four real worker processes (``remediate serve``, ``REMEDIATION_LEDGER=
kubernetes``) share the real kube-apiserver: their claims are Leases created
and replaced under real optimistic concurrency. Hundreds of duplicated,
interleaved deliveries of 20 alerts give exactly one restart per Deployment,
counted in the API server's audit log (every PATCH, whoever sent it) and by
each Deployment's generation. A worker SIGKILLed between claim and apply
(blocked in a real OPA server stopped with SIGSTOP) still leaves exactly one
restart after redelivery.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import new_event, to_binary
from remediation.guard.sender_auth import sign_events

from tests.realstack.components import ControlPlane
from tests.realstack.fleet import alert, deployment, wait_for
from tests.realstack.opa_server import OpaServer, opa_binary
from tests.test_exactly_once import EVENT_KEY, Workers, deliver

KEYS = 20
COPIES = 15
WORKERS = 4


def event_for(ns: str, i: int) -> tuple[dict[str, str], bytes]:
    body = alert("VLLMEngineHung", {"namespace": ns, "deployment": f"engine-{i:02d}"},
                 fingerprint=f"{i:016x}")
    (event,) = alertmanager_to_events(body, routes=lambda n, _l: "restart-engine")
    # signed as the webhook adapter signs: the workers admit only signed events
    (event,) = sign_events([event], EVENT_KEY, now=time.time(), rebuild=new_event)
    return to_binary(event)


def generation(plane: ControlPlane, ns: str, i: int) -> int:
    return int(plane.read(f"/apis/apps/v1/namespaces/{ns}/deployments/engine-{i:02d}")
               ["metadata"]["generation"])


def patches(plane: ControlPlane, ns: str) -> list[str]:
    """Deployments PATCHed (and accepted) in ``ns``, one entry per write."""
    return [e["objectRef"]["name"] for e in plane.audited("patch", "deployments", namespace=ns)
            if e.get("responseStatus", {}).get("code") == 200
            and "dryRun" not in e.get("requestURI", "")]


@pytest.fixture
def workers_env(control_plane: ControlPlane, gpu_fleet: dict[str, list[str]], namespace: str,
                tmp_path: Path) -> Iterator[dict[str, str]]:
    plane, ns = control_plane, namespace
    plane.apply_objects([{"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": "remediation"}}])
    for i in range(KEYS):
        dep = deployment(ns, f"engine-{i:02d}", 1, gpus=0)
        plane.create(f"/apis/apps/v1/namespaces/{ns}/deployments", dep)
    wait_for("20 rolled-out engines", lambda: all(
        d.get("status", {}).get("availableReplicas") == 1
        for d in plane.read(f"/apis/apps/v1/namespaces/{ns}/deployments")["items"]), 90)
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"remediation_config": {
        "limits": {"cluster_max_per_window": 1000},
        "actions": {"rollout-restart": {"max_per_window": 1000}}}}))
    env = {**os.environ,
           "KUBECONFIG": str(plane.kubeconfig),
           "REMEDIATION_DRY_RUN": "false",
           "REMEDIATION_LEDGER": "kubernetes",
           "REMEDIATION_NAMESPACE": "remediation",
           "REMEDIATION_POLICY_DATA": str(policy),
           "REMEDIATION_CLAIM_TTL": "3",
           "REMEDIATION_VERIFY_DEADLINE": "20", "REMEDIATION_VERIFY_INTERVAL": "0.2",
           "REMEDIATION_LOG_LEVEL": "WARNING", "REMEDIATION_EVENT_HMAC_KEY": EVENT_KEY}
    for var in ("OPA_URL", "VAULT_ADDR"):
        env.pop(var, None)
    yield env
    # The ledger's Leases of this test go with it (the namespace is shared).
    plane.request("DELETE", "/apis/coordination.k8s.io/v1/namespaces/remediation/leases")


def test_hundreds_of_duplicated_deliveries_to_four_workers_write_once_per_key(
        control_plane, namespace, workers_env):
    plane, ns = control_plane, namespace
    workers = Workers(workers_env)
    try:
        urls = [workers.start(f"w{n}") for n in range(WORKERS)]
        deliveries = [event_for(ns, i) for i in range(KEYS) for _ in range(COPIES)]
        rng = random.Random(11)
        rng.shuffle(deliveries)
        start = time.monotonic()
        results = workers.deliver_all(urls, deliveries, threads=16)
        wall = time.monotonic() - start
    finally:
        workers.close()
    statuses = [s for s, _ in results]
    written = patches(plane, ns)
    leases = plane.read("/apis/coordination.k8s.io/v1/namespaces/remediation/leases")["items"]
    print(f"\nexactly-once on the real API server (Lease ledger, {len(leases)} Leases): "
          f"{len(deliveries)} deliveries of {KEYS} keys to {WORKERS} workers in {wall:.1f}s: "
          f"{len(written)} PATCHes; replies { {s: statuses.count(s) for s in set(statuses)} }")
    assert sorted(written) == [f"engine-{i:02d}" for i in range(KEYS)]  # one write per key
    assert all(generation(plane, ns, i) == 2 for i in range(KEYS))
    assert statuses.count("applied") == KEYS
    assert statuses.count("duplicate") == len(deliveries) - KEYS


def test_a_worker_killed_between_claim_and_apply_leaves_one_action(
        control_plane, namespace, workers_env, tmp_path):
    plane, ns = control_plane, namespace
    opa = OpaServer(opa_binary(), tmp_path / "opa.log").start()
    workers = Workers(workers_env)
    try:
        stuck = workers.start("stuck", OPA_URL=opa.url, OPA_TIMEOUT="60", OPA_RETRIES="0")
        healthy = workers.start("healthy")
        headers, body = event_for(ns, 3)
        opa.pause()  # the stuck worker claims, then waits on its decision
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.post, stuck + "/", headers=headers, content=body)
            wait_for("the stuck worker's claim (a Lease)", lambda: plane.read(
                "/apis/coordination.k8s.io/v1/namespaces/remediation/leases")["items"], 20)
            workers.kill(stuck)
            with pytest.raises(httpx.HTTPError):
                pending.result()
            first = client.post(healthy + "/", headers=headers, content=body)
            assert first.status_code == 503, first.text  # the dead worker's claim holds
            assert generation(plane, ns, 3) == 1
            time.sleep(3.2)  # REMEDIATION_CLAIM_TTL
            status, _ = deliver(client, [healthy], headers, body, random.Random(1))
            assert status == "applied"
            assert deliver(client, [healthy], headers, body, random.Random(1))[0] == "duplicate"
    finally:
        workers.close()
        opa.stop()
    assert generation(plane, ns, 3) == 2  # exactly one restart
    assert patches(plane, ns) == ["engine-03"]
