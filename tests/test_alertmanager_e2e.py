"""End to end with the real things (issue 13, §4): a real Prometheus and a real
Alertmanager on loopback, the shipped rules (windows shortened) and the
shipped receiver example, in front of ``remediate serve`` (a subprocess,
started as a user would, with its default persistent ledger) acting on the
Kubernetes API emulator.

A fake vLLM and dcgm-exporter endpoint is scraped; a metric goes bad, the
rule fires, Alertmanager groups and posts, the function acts once; re-sends
are answered ``duplicate``; with the function down, Alertmanager's retries
fail until it is back and then it acts once; the resolved Xid alert is
answered at once and the sweep uncordons the node after the healthy delay.

Everything is bounded in time; every process is stopped after; their logs
are kept in tmp_path and printed when something fails. The figures (how long
each step took, and the time Alertmanager waited for the function's answer)
are printed (``-s``) and kept in ``tmp_path/figures.json``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from remediation.cli import demo_dir

from remediation.events.alertmanager import BYTES_PER_ALERT, GROUP_OVERHEAD_BYTES

from tests.plugins.app import write_kubeconfig
from tests.prometheus_tools import tool

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "eventing" / "components" / "monitoring" / "inference-remediation.rules.yaml"
RECEIVER = ROOT / "eventing" / "examples" / "alertmanager-receiver.yaml"
NS, POD, DEPLOY = "llm-serving", "vllm-llama-7b-6d4f8b9c7-x2x9k", "vllm-llama-7b"
XID_NODE = "gpu-node-5"
TOKEN = "e2e-bearer-3c9d"
#: the shipped windows and `for`, and what the test runs them at
WINDOW, FOR = ("5m", "15s"), ("5m", "5s")
HEALTHY_DELAY = 3
DEADLINE = 90.0  # seconds any one step may take


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the fake exporter ------------------------------------------------------------------

@dataclass
class Exporter:
    """A vLLM engine and a dcgm-exporter, as Prometheus scrapes them."""

    hung: bool = False
    xid_count: int = 0
    xids_growing: bool = False  # a faulty GPU keeps reporting its Xid
    tokens: float = 1000.0
    success: float = 10.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def text(self) -> str:
        with self.lock:
            if not self.hung:  # a busy, healthy engine
                self.tokens += 50
                self.success += 1
            if self.xids_growing:
                self.xid_count += 1
            running, waiting = (1, 3) if self.hung else (2, 0)
            pod = f'namespace="{NS}",pod="{POD}",model_name="llama"'
            gpu = f'kubernetes_node="{XID_NODE}",gpu="0",UUID="GPU-e2e-0"'
            return "\n".join([
                "# TYPE vllm:num_requests_running gauge",
                f"vllm:num_requests_running{{{pod}}} {running}",
                "# TYPE vllm:num_requests_waiting gauge",
                f"vllm:num_requests_waiting{{{pod}}} {waiting}",
                "# TYPE vllm:kv_cache_usage_perc gauge",
                f"vllm:kv_cache_usage_perc{{{pod}}} 0.4",
                "# TYPE vllm:generation_tokens_total counter",
                f"vllm:generation_tokens_total{{{pod}}} {self.tokens}",
                "# TYPE vllm:request_success_total counter",
                f'vllm:request_success_total{{{pod},finished_reason="stop"}} {self.success}',
                "# TYPE DCGM_FI_DEV_GPU_TEMP gauge",
                f"DCGM_FI_DEV_GPU_TEMP{{{gpu}}} 61",
                "# TYPE DCGM_EXP_XID_ERRORS_TOTAL counter",
                f'DCGM_EXP_XID_ERRORS_TOTAL{{{gpu},xid="48"}} {self.xid_count}',
                ""])


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    state = Exporter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            body = state.text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    thread.join(timeout=5)


# -- processes --------------------------------------------------------------------------

class Stand:
    """The processes of one test, their logs, and a clock of what happened."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.marks: dict[str, float] = {}
        self.client = httpx.Client(timeout=5)

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              ready: str = "") -> None:
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        handle = log.open("ab")
        self.procs[name] = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT,
                                            env=env, cwd=self.tmp, start_new_session=True)
        handle.close()
        if ready:
            self.wait(f"{name} ready", lambda: self._ok(ready), timeout=30)

    def _ok(self, url: str) -> bool:
        try:
            return self.client.get(url).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        self.client.close()

    def dump(self) -> str:
        out = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace") if path.exists() else ""
            out.append(f"----- {name} ({path}) -----\n" + "\n".join(text.splitlines()[-60:]))
        return "\n".join(out)

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float = DEADLINE) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = predicate()
            if got:
                self.marks.setdefault(what, time.time())
                return got
            time.sleep(0.2)
        pytest.fail(f"timed out after {timeout:g}s waiting for: {what}\n{self.dump()}",
                    pytrace=False)

    def mark(self, what: str) -> float:
        self.marks[what] = time.time()
        return self.marks[what]


@pytest.fixture
def stand(tmp_path: Path) -> Iterator[Stand]:
    s = Stand(tmp_path)
    try:
        yield s
    finally:
        s.close()


def outcomes(stand: Stand, name: str = "serve") -> list[dict[str, Any]]:
    """The function's outcome log lines, with their time."""
    found = []
    for log in sorted(stand.tmp.glob(f"{name}*.log")):
        for line in log.read_text(errors="replace").splitlines():
            m = re.match(r"(\S+ \S+) \w+ remediation\.outcome: (\{.*\})$", line)
            if m:
                rec = json.loads(m.group(2))
                rec["at"] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                found.append(rec)
    return found


def am_metric(stand: Stand, am: str, name: str) -> float:
    text = stand.client.get(f"{am}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and 'integration="webhook"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def firing(stand: Stand, prom: str, alertname: str, state: str = "firing") -> bool:
    try:
        alerts = stand.client.get(f"{prom}/api/v1/alerts").json()["data"]["alerts"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return any(a["labels"].get("alertname") == alertname and a["state"] == state
               for a in alerts)


def webhook_alert_sizes(stand: Stand, am: str) -> list[int]:
    """Each active alert as Alertmanager's webhook carries it (compact JSON):
    what the receiver's max_alerts is sized by (BYTES_PER_ALERT)."""
    sizes = []
    for a in stand.client.get(f"{am}/api/v2/alerts").json():
        alert = {"status": "firing", "labels": a["labels"], "annotations": a["annotations"],
                 "startsAt": a["startsAt"], "endsAt": a["endsAt"],
                 "generatorURL": a["generatorURL"], "fingerprint": a["fingerprint"]}
        sizes.append(len(json.dumps(alert, separators=(",", ":")).encode()))
    assert sizes, "Alertmanager holds no alert"
    return sizes


def node_writes(emu: Any, name: str) -> list[Any]:
    return [r for r in emu.requests if r.method == "PATCH" and r.resource == "nodes"
            and r.name == name]


def deployment_writes(emu: Any) -> list[Any]:
    return [r for r in emu.requests if r.method == "PATCH" and r.resource == "deployments"]


# -- the test ---------------------------------------------------------------------------

def test_prometheus_alertmanager_and_the_function_end_to_end(kube_emulator, exporter, stand,
                                                              tmp_path):
    prometheus, alertmanager = tool("prometheus"), tool("alertmanager")
    kube_emulator.load(demo_dir() / "cluster.yaml")
    prom_port, am_port, fn_port = free_port(), free_port(), free_port()
    prom, am = f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}"
    fn = f"http://127.0.0.1:{fn_port}"

    # the shipped rules, windows shortened (the only change)
    rules = RULES.read_text()
    rules = rules.replace(f"[{WINDOW[0]}]", f"[{WINDOW[1]}]").replace(
        f"for: {FOR[0]}", f"for: {FOR[1]}")
    (tmp_path / "rules.yaml").write_text(rules)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": "engines", "honor_labels": True,
                            "static_configs": [{"targets": [exporter.url]}]}]}))
    # the shipped receiver example: our URL and token file, and short intervals
    config = yaml.safe_load(RECEIVER.read_text())
    hook = config["receivers"][0]["webhook_configs"][0]
    hook["url"] = f"{fn}/webhooks/alertmanager"
    (tmp_path / "token").write_text(TOKEN)
    hook["http_config"]["authorization"]["credentials_file"] = str(tmp_path / "token")
    for route in config["route"]["routes"]:
        route.update(group_wait="1s", group_interval="2s", repeat_interval="6s")
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    # the function's own routes file: the packaged one, a short healthy delay
    routes = yaml.safe_load((ROOT / "functions/remediation/defaults/routes.yaml").read_text())
    routes["options"]["drain-gpu-node"].update(healthy_delay_seconds=HEALTHY_DELAY,
                                               evict_deadline_seconds=5)
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump(routes))
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump({"remediation_config": {
        "limits": {"max_cordoned_gpu_nodes_percent": 60}}}))
    env = {**os.environ,
           "KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", kube_emulator.url)),
           "XDG_STATE_HOME": str(tmp_path / "state"),  # serve's default ledger lives here
           "REMEDIATION_DRY_RUN": "false",
           "ALERTMANAGER_BEARER_TOKEN": TOKEN,
           "REMEDIATION_ROUTES_FILE": str(tmp_path / "routes.yaml"),
           "REMEDIATION_POLICY_DATA": str(tmp_path / "policy.yaml"),
           "REMEDIATION_VERIFY_DEADLINE": "10", "REMEDIATION_VERIFY_INTERVAL": "0.2"}
    for key in ("REMEDIATION_LEDGER", "OPA_URL", "VAULT_ADDR", "REMEDIATION_CLUSTER",
                "REMEDIATION_CLUSTERS"):
        env.pop(key, None)
    serve = [sys.executable, "-m", "remediation.cli", "serve", "--port", str(fn_port),
             "--sweep-every", "1"]

    stand.start("alertmanager", [alertmanager, f"--config.file={tmp_path / 'alertmanager.yml'}",
                                 f"--storage.path={tmp_path / 'am-data'}",
                                 f"--web.listen-address=127.0.0.1:{am_port}",
                                 "--cluster.listen-address=", "--log.level=debug"],
                ready=f"{am}/-/ready")
    stand.start("serve", serve, env=env, ready=f"{fn}/health/readiness")
    stand.start("prometheus", [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                               f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                               f"--web.listen-address=127.0.0.1:{prom_port}",
                               "--rules.alert.resend-delay=1s"],
                ready=f"{prom}/-/ready")
    started = (tmp_path / "serve.log").read_text()
    assert f'"ledger":"sqlite:{tmp_path / "state"}' in started, started[-2000:]

    # 1. the engine wedges: the rule fires, Alertmanager posts, one restart
    stand.wait("prometheus scrapes the engine",
               lambda: firing(stand, prom, "VLLMEngineHung", "inactive") or
               stand.client.get(f"{prom}/api/v1/query",
                                params={"query": "vllm:num_requests_running"}).json()
               ["data"]["result"], timeout=30)
    time.sleep(2)
    exporter.hung = True
    bad_at = stand.mark("vLLM wedged")
    stand.wait("VLLMEngineHung firing", lambda: firing(stand, prom, "VLLMEngineHung"))
    applied = stand.wait("the restart applied", lambda: [
        o for o in outcomes(stand) if o["alertname"] == "VLLMEngineHung"
        and o["status"] == "applied"])
    assert applied[0]["target"] == f"Deployment/{NS}/{DEPLOY}"
    alert_sizes = webhook_alert_sizes(stand, am)
    assert applied[0]["verification"] == "succeeded"
    restarted = kube_emulator.get("deployments", NS, DEPLOY)["spec"]["template"]["metadata"]
    assert restarted["annotations"].get("kubectl.kubernetes.io/restartedAt")
    # re-sends (repeat_interval) are answered duplicate, and act no more
    stand.wait("a re-send answered duplicate", lambda: [
        o for o in outcomes(stand) if o["alertname"] == "VLLMEngineHung"
        and o["status"] == "duplicate" and o["event_id"] == applied[0]["event_id"]])
    assert len(deployment_writes(kube_emulator)) == 1
    exporter.hung = False

    # 2. the function is down when a GPU fails; back later, it acts once
    stand.stop("serve")
    failed_before = am_metric(stand, am, "alertmanager_notifications_failed_total")
    exporter.xids_growing = True
    xid_at = stand.mark("Xid 48 counted")
    stand.wait("GPUXidError firing", lambda: firing(stand, prom, "GPUXidError"))
    stand.wait("Alertmanager's notifications fail while the function is down",
               lambda: am_metric(stand, am, "alertmanager_notifications_failed_total")
               > failed_before)
    time.sleep(3)  # down for a while: more failed attempts
    assert node_writes(kube_emulator, XID_NODE) == []
    back_at = stand.mark("function back")
    stand.start("serve-2", serve, env=env, ready=f"{fn}/health/readiness")
    drained = stand.wait("the node drained", lambda: [
        o for o in outcomes(stand) if o["alertname"] == "GPUXidError"
        and o["status"] == "applied"])
    node = kube_emulator.get("nodes", "", XID_NODE)
    assert node["spec"]["unschedulable"] is True
    assert node["metadata"]["annotations"]["inferenceremediation.io/cordoned-by"]
    assert len(drained) == 1
    assert len(node_writes(kube_emulator, XID_NODE)) == 1
    # the first process's restart is remembered by the second (same ledger)
    assert len(deployment_writes(kube_emulator)) == 1

    # 3. the fault clears: the resolved alert is answered at once, the sweep
    #    uncordons after the healthy delay
    exporter.xids_growing = False  # the counter stops: the alert resolves one window later
    cleared_at = stand.mark("Xid counter stops")
    failed_after = am_metric(stand, am, "alertmanager_notifications_failed_total")
    stand.wait("GPUXidError resolved in Prometheus",
               lambda: not firing(stand, prom, "GPUXidError"))
    scheduled = stand.wait("the resolved alert answered scheduled", lambda: [
        o for o in outcomes(stand) if o["alertname"] == "GPUXidError"
        and o["status"] == "scheduled"])
    uncordoned = stand.wait("the sweep uncordons", lambda: [
        o for o in outcomes(stand) if o["status"] == "applied" and o.get("via") == "sweep"])
    node = kube_emulator.get("nodes", "", XID_NODE)
    assert not node["spec"].get("unschedulable")
    assert "inferenceremediation.io/cordoned-by" not in (node["metadata"].get("annotations")
                                                         or {})
    # not before the healthy delay counted from the alert's endsAt
    assert f"waiting for {HEALTHY_DELAY}s before uncordoning" in " ".join(scheduled[0]["reasons"])
    due = re.search(r"the sweep acts at (\S+Z)", " ".join(scheduled[0]["reasons"])).group(1)
    due_at = datetime.strptime(due, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert uncordoned[0]["at"] >= due_at.timestamp() - 1  # the reason rounds to the second
    assert len(node_writes(kube_emulator, XID_NODE)) == 2  # cordon, uncordon
    # the recovery never made Alertmanager retry
    assert am_metric(stand, am, "alertmanager_notifications_failed_total") == failed_after
    assert len(deployment_writes(kube_emulator)) == 1

    # figures: what the project adds against the rules' own windows
    latency_sum = am_metric(stand, am, "alertmanager_notification_latency_seconds_sum")
    latency_n = am_metric(stand, am, "alertmanager_notification_latency_seconds_count")
    fired = stand.marks["VLLMEngineHung firing"]
    figures = {
        "rule window and for (as run)": f"{WINDOW[1]} + {FOR[1]} "
                                        f"(shipped: {WINDOW[0]} + {FOR[0]})",
        "wedge -> VLLMEngineHung firing (s)": round(fired - bad_at, 2),
        "firing -> restart applied, verified (s)": round(applied[0]["at"] - fired, 2),
        "Xid counted -> GPUXidError firing (s)": round(stand.marks["GPUXidError firing"]
                                                       - xid_at, 2),
        "function back -> node drained (s)": round(drained[0]["at"] - back_at, 2),
        "Xid counter stops -> resolved answered scheduled (s)": round(
            scheduled[0]["at"] - cleared_at, 2),
        "scheduled -> uncordoned by the sweep (s)": round(uncordoned[0]["at"]
                                                          - scheduled[0]["at"], 2),
        "Alertmanager waiting for the function, mean per notification (ms)":
            round(1000 * latency_sum / latency_n, 1) if latency_n else None,
        "notifications": int(latency_n),
    }
    sizes = [json.loads(m.group(1)) for log in sorted(tmp_path.glob("serve*.log"))
             for m in re.finditer(r"remediation\.app: (\{\"webhook\".*\})", log.read_text())]
    figures["largest one-alert notification (bytes)"] = max(
        s["bytes"] for s in sizes if s["alerts"] == 1)
    figures["largest alert in a notification, shipped rules (bytes)"] = max(alert_sizes)
    assert max(alert_sizes) <= BYTES_PER_ALERT, "the receiver's max_alerts would not fit"
    assert max(s["bytes"] for s in sizes) <= GROUP_OVERHEAD_BYTES + BYTES_PER_ALERT * max(
        s["alerts"] for s in sizes)
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=2))
    print("\nend-to-end figures:\n" + json.dumps(figures, indent=2))
