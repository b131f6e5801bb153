"""Error-budget-aware policy against a real Prometheus (issue 16, §2).

Known series (Sloth's recording rules) are written as OpenMetrics, turned
into TSDB blocks by ``promtool tsdb create-blocks-from openmetrics`` and
served by ``prometheus`` on loopback. Burn rates and budgets sit on both
sides of each threshold (14.4x on 5m and 1h; a budget at or below 0). The
policy input is read with the shipped client, and the decisions are read
back end to end through the HTTP app and the Kubernetes API emulator:
a spent budget sends a drain to approval, a fast burn lets a restart through
its cooldown, and with Prometheus stopped the cooldown holds and says why.

Like the other real-Prometheus tests, these are skipped when ``prometheus``
or ``promtool`` is not on PATH, and FAIL under ``CI=true``.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from remediation.clients.prometheus import PrometheusSLOSource
from remediation.cli import demo_dir
from remediation.guard.slo import load_slo_config
from remediation.model import ObjectRef
from remediation.settings import LedgerSettings, PolicySettings, SLOSettings, VerifySettings

from tests.plugins.app import BEARER
from tests.prometheus_tools import tool

NS = "llm-serving"
AUTH = {"Authorization": f"Bearer {BEARER}"}
HUNG = json.loads((demo_dir() / "events" / "01-vllm-hung.json").read_text())
XID = json.loads((demo_dir() / "events" / "10-dcgm-xid79-fell-off-bus.json").read_text())
#: a power of two, so the burn rates below are exact in floating point
BUDGET_RATIO = 0.0625
#: service -> (error ratio per window, remaining budget); burn = ratio / BUDGET_RATIO
SERIES = {
    "engine-fast": ({"5m": 1.25, "1h": 0.9375, "6h": 0.125}, 0.5),  # 20x, 15x: fast
    "engine-edge": ({"5m": 0.9, "1h": 0.9, "6h": 0.125}, 0.5),  # 14.4x exactly: fast
    "engine-slow": ({"5m": 1.25, "1h": 0.89, "6h": 0.125}, 0.5),  # 1h at 14.24x: not fast
    "gpu-node-5": ({"5m": 0.0625, "1h": 0.0625, "6h": 0.0625}, -0.25),  # spent
    "gpu-node-1": ({"5m": 0.0625, "1h": 0.0625, "6h": 0.0625}, 0.0),  # spent, exactly
    "gpu-node-2": ({"5m": 0.0625, "1h": 0.0625, "6h": 0.0625}, 0.01),  # some left
}
WINDOWS = ("5m", "1h", "6h")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openmetrics(now: int) -> str:
    """Every series from an hour ago to ten minutes ahead, every 30 s."""
    lines: list[str] = []
    families: dict[str, list[str]] = {}
    for service, (ratios, remaining) in SERIES.items():
        sel = f'sloth_id="{service}-availability",sloth_service="{service}",' \
              'sloth_slo="availability"'
        for window, ratio in ratios.items():
            families.setdefault(f"slo:sli_error:ratio_rate{window}", []).append(
                f"{{{sel}}} {ratio}")
        families.setdefault("slo:error_budget:ratio", []).append(f"{{{sel}}} {BUDGET_RATIO}")
        families.setdefault("slo:period_error_budget_remaining:ratio", []).append(
            f"{{{sel}}} {remaining}")
    for name, samples in families.items():
        lines.append(f"# TYPE {name} gauge")
        for t in range(now - 3600, now + 600, 30):
            lines.extend(f"{name}{sample} {t}" for sample in samples)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@dataclass
class Prom:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@pytest.fixture
def prom(tmp_path: Path) -> Iterator[Prom]:
    promtool, prometheus = tool("promtool"), tool("prometheus")
    (tmp_path / "slo.om").write_text(openmetrics(int(time.time())))
    tsdb = tmp_path / "tsdb"
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics",
                    str(tmp_path / "slo.om"), str(tsdb)], check=True, timeout=60,
                   capture_output=True)
    (tmp_path / "prometheus.yml").write_text("global: {}\n")
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tsdb}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    server = Prom(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{server.url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"prometheus did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        yield server
    finally:
        server.stop()


def slo_file(tmp_path: Path) -> Path:
    slos: list[dict[str, Any]] = []
    for service in SERIES:
        match = {"kind": "Node", "name": service} if service.startswith("gpu-node") \
            else {"namespace": NS, "name": service}
        slos.append({"service": service, "match": match,
                     "sloth": {"service": service, "slo": "availability"}})
    slos.append({"service": "engine-nodata", "match": {"namespace": NS, "name": "engine-nodata"},
                 "sloth": {"service": "engine-nodata", "slo": "availability"}})
    path = tmp_path / "slos.yaml"
    path.write_text(yaml.safe_dump({"windows": list(WINDOWS), "slos": slos}))
    return path


def slo_settings(prom: Prom, tmp_path: Path, **over: Any) -> SLOSettings:
    return SLOSettings(**{"prometheus_url": prom.url, "file": str(slo_file(tmp_path)),
                          "timeout": 2.0, "cache_seconds": 0.0, **over})


# -- the client reads what Prometheus holds -----------------------------------------------

def test_the_client_reads_burn_rates_and_budgets_from_prometheus(prom, tmp_path):
    settings = slo_settings(prom, tmp_path)
    source = PrometheusSLOSource(settings, load_slo_config(yaml.safe_load(
        Path(settings.file).read_text())))
    try:
        now = time.time()
        fast = source.read(ObjectRef("Deployment", NS, "engine-fast"), at=now)
        assert fast == {"available": True, "service": "engine-fast", "source": "prometheus",
                        "burn_rates": {"5m": 20.0, "1h": 15.0, "6h": 2.0},
                        "error_budget_remaining": 0.5}
        edge = source.read(ObjectRef("Deployment", NS, "engine-edge"), at=now)
        assert edge is not None and edge["burn_rates"]["1h"] == 14.4
        spent = source.read(ObjectRef("Node", "", "gpu-node-5"), at=now)
        assert spent is not None and spent["error_budget_remaining"] == -0.25
        # mapped but no series: unavailable, naming what is missing
        nodata = source.read(ObjectRef("Deployment", NS, "engine-nodata"), at=now)
        assert nodata is not None and nodata["available"] is False
        assert nodata["reason"].startswith("no data for burn_rate:5m")
        # not mapped: no input at all
        assert source.read(ObjectRef("Deployment", NS, "unmapped"), at=now) is None
        prom.stop()
        down = source.read(ObjectRef("Deployment", NS, "engine-fast"), at=now)
        assert down is not None and down["available"] is False
        assert down["reason"] == f"prometheus: {prom.url} unreachable (ConnectError)"
    finally:
        source.close()


def test_a_slow_prometheus_is_cut_off_by_the_timeout(tmp_path):
    """A listener that accepts and never answers: the read ends in the
    configured timeout with the SLO unavailable."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        path = tmp_path / "slos.yaml"
        path.write_text(yaml.safe_dump({"slos": [{
            "service": "s", "match": {"name": "*"}, "sloth": {"service": "s", "slo": "a"}}]}))
        source = PrometheusSLOSource(SLOSettings(prometheus_url=url, file=str(path),
                                                 timeout=0.3),
                                     load_slo_config(yaml.safe_load(path.read_text())))
        try:
            got = source.read(ObjectRef("Deployment", NS, "x"), at=time.time())
        finally:
            source.close()
    assert got == {"available": False, "service": "s",
                   "reason": f"prometheus: {url} timed out after 0.3s"}


# -- decisions end to end -----------------------------------------------------------------

def deployment(name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "engine", "image": "vllm"}]}}}}


def hung(name: str, incident: str) -> dict[str, Any]:
    doc = copy.deepcopy(HUNG)
    alert = doc["alerts"][0]
    alert["labels"] = {"alertname": "VLLMEngineHung", "namespace": NS, "deployment": name,
                       "severity": "critical"}
    alert["fingerprint"] = f"{abs(hash((name, incident))):016x}"[:16]
    doc["alerts"] = [alert]
    return doc


def xid(node: str) -> dict[str, Any]:
    doc = copy.deepcopy(XID)
    alert = doc["alerts"][0]
    alert["labels"]["Hostname"] = node
    alert["fingerprint"] = f"{abs(hash(('xid', node))):016x}"[:16]
    doc["alerts"] = [alert]
    return doc


def send(app: Any, doc: dict[str, Any]) -> dict[str, Any]:
    resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    assert resp.status_code == 200, resp.text
    (outcome,) = resp.json()["outcomes"]
    return outcome


def generation(emu: Any, name: str) -> int:
    return int(emu.get("deployments", NS, name)["metadata"]["generation"])


@pytest.fixture
def slo_app(fleet, make_settings, serve_app, prom, tmp_path):
    # the demo fleet's llm-serving is an inference namespace already
    for name in ("engine-fast", "engine-edge", "engine-slow"):
        fleet.add(deployment(name))
    data = tmp_path / "policy-data.json"
    data.write_text(json.dumps({"remediation_config": {
        "limits": {"max_cordoned_gpu_nodes_percent": 100},  # the demo fleet has some already
        "actions": {"rollout-restart": {"max_per_target_in_window": 1}}}}))
    return serve_app(make_settings(
        policy=PolicySettings(data_file=str(data)),
        # the ledger's own one-action-per-target window off: the policy's cooldown decides
        ledger=LedgerSettings(target_window=0),
        verify=VerifySettings(deadline=5.0, interval=0.05),
        slo=slo_settings(prom, tmp_path)))


def test_a_spent_error_budget_sends_a_drain_to_approval(slo_app, fleet):
    spent, zero, left = (send(slo_app, xid(n)) for n in ("gpu-node-5", "gpu-node-1",
                                                          "gpu-node-2"))
    assert spent["status"] == "pending", spent
    assert spent["reasons"][0] == "allowed: mark-reboot on Node/gpu-node-5"
    assert any(r.startswith("slo: gpu-node-5 error budget exhausted (-0.25 remaining)")
               for r in spent["reasons"])
    assert zero["status"] == "pending"
    assert left["status"] == "applied", left  # 1% of the budget left: no human needed
    assert not any(r.startswith("slo:") for r in left["reasons"])
    # the pending ones did not touch their nodes; the other one is cordoned
    assert not fleet.get("nodes", "", "gpu-node-5")["spec"].get("unschedulable")
    assert not fleet.get("nodes", "", "gpu-node-1")["spec"].get("unschedulable")
    assert fleet.get("nodes", "", "gpu-node-2")["spec"].get("unschedulable") is True


def test_a_fast_burn_lets_a_restart_through_its_cooldown_and_prometheus_down_does_not(
        slo_app, fleet, prom):
    firsts = {n: send(slo_app, hung(n, "first")) for n in ("engine-fast", "engine-edge",
                                                            "engine-slow")}
    assert {n: o["status"] for n, o in firsts.items()} == dict.fromkeys(firsts, "applied")
    before = {n: generation(fleet, n) for n in firsts}
    again = {n: send(slo_app, hung(n, "second")) for n in firsts}
    assert again["engine-fast"]["status"] == "applied", again["engine-fast"]
    assert "slo: engine-fast burning fast (5m, 1h at 14.4 or more): cooldown bypassed" in \
        again["engine-fast"]["reasons"]
    assert again["engine-edge"]["status"] == "applied"  # 14.4x exactly is a fast burn
    assert again["engine-slow"]["status"] == "denied"  # 1h at 14.24x is not
    assert again["engine-slow"]["reasons"] == [
        "cooldown: engine-slow already acted on 1 time(s) in the window (limit 1)"]
    assert generation(fleet, "engine-fast") > before["engine-fast"]
    assert generation(fleet, "engine-slow") == before["engine-slow"]

    restarted = generation(fleet, "engine-fast")
    prom.stop()
    down = send(slo_app, hung("engine-fast", "third"))
    assert down["status"] == "denied", down
    assert down["reasons"] == [
        "cooldown: engine-fast already acted on 2 time(s) in the window (limit 1)",
        f"slo: unavailable (prometheus: {prom.url} unreachable (ConnectError)): "
        "cooldown not relaxed"]
    assert generation(fleet, "engine-fast") == restarted  # not restarted a third time
