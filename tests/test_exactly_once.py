"""Exactly once across processes: several real worker processes
(``remediate serve``) share one ledger file and one (emulated) cluster.
Hundreds of duplicated, interleaved deliveries of 20 alerts go to random
workers; the emulator counts the restarts. Then a worker is killed between
claim and apply (blocked in a slow policy server), or between apply and
record (blocked in a slow PATCH the API still carries out), and the event is
redelivered to another worker: still exactly one restart.

Figures are printed (``pytest -s``)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from collections.abc import Iterator

import httpx
import pytest
import yaml

from remediation.cli import demo_dir
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import new_event, to_binary
from remediation.guard.sender_auth import sign_events

from tests.kube_emulator import KubeEmulator
from tests.plugins.app import write_kubeconfig

EVENT_KEY = "exactly-once-event-key-41b7"

NS = "llm-serving"
KEYS = 20
COPIES = 15
WORKERS = 3


def fleet(emu: KubeEmulator, n: int) -> None:
    emu.add({"apiVersion": "v1", "kind": "Namespace",  # an inference namespace
             "metadata": {"name": NS, "labels": {"inferenceremediation.io/inference": "true"}}})
    for i in range(n):
        name = f"engine-{i:02d}"
        emu.add({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": name, "namespace": NS, "uid": f"dep-{i}"},
                 "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                          "template": {"metadata": {"labels": {"app": name}},
                                       "spec": {"containers": [{"name": "vllm",
                                                                "image": "vllm/vllm-openai"}]}}},
                 "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                            "readyReplicas": 1, "availableReplicas": 1}})
        emu.add({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                 "metadata": {"name": f"{name}-rs", "namespace": NS, "uid": f"rs-{i}",
                              "labels": {"app": name},
                              "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                   "name": name, "uid": f"dep-{i}",
                                                   "controller": True}]},
                 "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}}})
        emu.add({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": f"{name}-rs-p0", "namespace": NS, "uid": f"pod-{i}",
                              "labels": {"app": name},
                              "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                   "name": f"{name}-rs", "uid": f"rs-{i}",
                                                   "controller": True}]},
                 "spec": {"nodeName": "gpu-node-1",
                          "containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
                 "status": {"phase": "Running",
                            "conditions": [{"type": "Ready", "status": "True"}]}})


def event_for(i: int) -> tuple[dict[str, str], bytes]:
    body = json.loads((demo_dir() / "events" / "01-vllm-hung.json").read_text())
    alert = body["alerts"][0]
    alert["labels"]["pod"] = f"engine-{i:02d}-rs-p0"
    alert["fingerprint"] = f"{i:016x}"
    body["alerts"] = [alert]
    (event,) = alertmanager_to_events(body, routes=lambda n, _l: "restart-engine")
    # signed as the webhook adapter signs (the workers admit only signed events)
    (event,) = sign_events([event], EVENT_KEY, now=time.time(), rebuild=new_event)
    return to_binary(event)


def generation(emu: KubeEmulator, i: int) -> int:
    return int(emu.get("deployments", NS, f"engine-{i:02d}")["metadata"].get("generation", 1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Workers:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, **extra: str) -> str:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "remediation.cli", "serve", "--port", str(port)],
            env={**self.env, **extra}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited with {proc.returncode}")
            try:
                if httpx.get(url + "/health/readiness", timeout=1).status_code == 200:
                    self.procs[url] = proc
                    return url
            except httpx.HTTPError:
                time.sleep(0.1)
        proc.kill()
        raise RuntimeError(f"worker {name} not ready in 30 s")

    def deliver_all(self, urls: list[str], deliveries: list[tuple[dict[str, str], bytes]],
                    threads: int, timeout: float = 60) -> list[tuple[str, int]]:
        """Every delivery at once over ``threads``, each to random workers and
        redelivered on 503 (:func:`deliver`): (final status, attempts) each."""
        with httpx.Client(timeout=timeout) as client, ThreadPoolExecutor(threads) as pool:
            return list(pool.map(
                lambda d: deliver(client, urls, d[0], d[1], random.Random(hash(d[1]))),
                deliveries))

    def kill(self, url: str) -> None:
        proc = self.procs.pop(url)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[KubeEmulator, dict[str, str]]]:
    emu = KubeEmulator().start()
    fleet(emu, KEYS)
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"remediation_config": {
        "limits": {"cluster_max_per_window": 1000},
        "actions": {"rollout-restart": {"max_per_window": 1000}}}}))
    env = {**os.environ,
           "KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", emu.url)),
           "REMEDIATION_DRY_RUN": "false",
           "REMEDIATION_LEDGER": str(tmp_path / "ledger.sqlite"),
           "REMEDIATION_POLICY_DATA": str(policy),
           "REMEDIATION_CLAIM_TTL": "2",
           "REMEDIATION_VERIFY_DEADLINE": "5", "REMEDIATION_VERIFY_INTERVAL": "0.05",
           "REMEDIATION_LOG_LEVEL": "WARNING", "REMEDIATION_EVENT_HMAC_KEY": EVENT_KEY}
    env.pop("OPA_URL", None)
    env.pop("VAULT_ADDR", None)
    try:
        yield emu, env
    finally:
        emu.close()


def deliver(client: httpx.Client, urls: list[str], headers: dict[str, str], body: bytes,
            rng: random.Random, attempts: int = 40) -> tuple[str, int]:
    """Deliver like Knative: redeliver a 503 (to any worker) after a pause."""
    for n in range(attempts):
        resp = client.post(rng.choice(urls) + "/", headers=headers, content=body)
        if resp.status_code != 503:
            assert resp.status_code == 200, resp.text
            return resp.json()["status"], n + 1
        time.sleep(0.2)
    raise AssertionError("still 503 after every redelivery")


@pytest.mark.parametrize("ledger", ["sqlite", "kubernetes"])
def test_hundreds_of_duplicated_deliveries_to_several_workers_act_once_per_key(cluster, ledger):
    emu, env = cluster
    if ledger == "kubernetes":
        env = {**env, "REMEDIATION_LEDGER": "kubernetes"}  # Leases in the emulator
    workers = Workers(env)
    try:
        urls = [workers.start(f"w{n}") for n in range(WORKERS)]
        deliveries = [event_for(i) for i in range(KEYS) for _ in range(COPIES)]
        rng = random.Random(7)
        rng.shuffle(deliveries)
        start = time.monotonic()
        results = workers.deliver_all(urls, deliveries, threads=16, timeout=30)
        wall = time.monotonic() - start
    finally:
        workers.close()
    statuses = [s for s, _ in results]
    redeliveries = sum(n - 1 for _, n in results)
    restarts = {i: generation(emu, i) - 1 for i in range(KEYS)}
    patches = [r for r in emu.requests if r.method == "PATCH" and r.resource == "deployments"]
    leases = len(emu.list("leases", "remediation"))
    print(f"\nexactly-once ({ledger} ledger, {leases} Leases): {len(deliveries)} deliveries of {KEYS} distinct keys to "
          f"{WORKERS} worker processes (+{redeliveries} redeliveries of 503s) in {wall:.1f}s: "
          f"{sum(restarts.values())} restarts, {len(patches)} PATCHes; replies "
          f"{ {s: statuses.count(s) for s in sorted(set(statuses))} }")
    assert restarts == {i: 1 for i in range(KEYS)}  # exactly one action per key
    assert len(patches) == KEYS
    assert statuses.count("applied") == KEYS
    assert statuses.count("duplicate") == len(deliveries) - KEYS


@pytest.mark.parametrize("ledger", ["sqlite", "kubernetes"])
def test_a_worker_killed_between_claim_and_apply_leaves_one_action(cluster, ledger, opa_server):
    emu, env = cluster
    if ledger == "kubernetes":
        env = {**env, "REMEDIATION_LEDGER": "kubernetes"}
    workers = Workers(env)
    opa_server.mode, opa_server.slow_seconds = "slow", 30.0
    try:
        stuck = workers.start("stuck", OPA_URL=opa_server.url, OPA_TIMEOUT="60",
                              OPA_RETRIES="0")
        healthy = workers.start("healthy")
        headers, body = event_for(3)
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.post, stuck + "/", headers=headers, content=body)
            deadline = time.monotonic() + 20
            while opa_server.requests == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert opa_server.requests == 1  # claimed, now deciding: nothing applied yet
            workers.kill(stuck)
            with pytest.raises(httpx.HTTPError):
                pending.result()
            first = client.post(healthy + "/", headers=headers, content=body)
            assert first.status_code == 503  # the dead worker's claim has not expired
            assert generation(emu, 3) == 1
            time.sleep(2.2)  # REMEDIATION_CLAIM_TTL
            status, _ = deliver(client, [healthy], headers, body, random.Random(1))
            assert status == "applied"
            assert deliver(client, [healthy], headers, body, random.Random(1))[0] == "duplicate"
    finally:
        workers.close()
    assert generation(emu, 3) == 2  # exactly one restart


@pytest.mark.parametrize("ledger", ["sqlite", "kubernetes"])
def test_a_worker_killed_between_apply_and_record_leaves_one_action(cluster, ledger):
    emu, env = cluster
    if ledger == "kubernetes":
        env = {**env, "REMEDIATION_LEDGER": "kubernetes"}
    workers = Workers(env)
    try:
        stuck = workers.start("stuck")
        healthy = workers.start("healthy")
        headers, body = event_for(5)
        emu.delay(5.0, method="PATCH", path_contains="deployments/engine-05")
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.post, stuck + "/", headers=headers, content=body)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any(
                    r.method == "GET" and r.name == "engine-05" for r in emu.requests):
                time.sleep(0.02)  # planning has read the Deployment ...
            time.sleep(1.5)  # ... and the worker now waits on its PATCH, held by the API
            assert not pending.done() and generation(emu, 5) == 1
            workers.kill(stuck)
            with pytest.raises(httpx.HTTPError):
                pending.result()
            deadline = time.monotonic() + 15
            while generation(emu, 5) == 1 and time.monotonic() < deadline:
                time.sleep(0.05)  # the API carries the request out after the delay
            assert generation(emu, 5) == 2
            time.sleep(2.2)  # the dead worker's claim expires
            status, _ = deliver(client, [healthy], headers, body, random.Random(2))
            assert status == "duplicate"  # the incident mark on the Deployment says done
    finally:
        workers.close()
    assert generation(emu, 5) == 2
    assert len([r for r in emu.requests if r.method == "PATCH"
                and r.resource == "deployments"]) == 1
