"""Run every benchmark, print figures next to their in-run baselines, write
bench/results/latest.json and latest.md (pasted into the README).

Targets are reported, never asserted. All traffic stays on 127.0.0.1."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from remediation.cli import demo_dir  # noqa: E402
from remediation.events.alertmanager import alertmanager_to_events  # noqa: E402
from remediation.events.binding import new_event, to_binary  # noqa: E402
from remediation.guard.sender_auth import sign_events  # noqa: E402

BENCH_EVENT_KEY = "bench-event-key-0b7e"

EVENTS = demo_dir() / "events"
SNAPSHOT = demo_dir() / "cluster.yaml"
RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(target: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, float]:
    """waitress in its own process (8 threads), as in the plain container."""
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "waitress", "--host=127.0.0.1", f"--port={port}", "--threads=8",
         "--call", target],
        # the functions hear signed events only (README, Security): as deployed
        env={**os.environ, "REMEDIATION_EVENT_HMAC_KEY": BENCH_EVENT_KEY, **env,
             "PYTHONPATH": f"{ROOT}:{ROOT / 'functions'}"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/readiness", timeout=0.5).status_code == 200:
                return proc, url, time.perf_counter() - started
        except httpx.HTTPError:
            time.sleep(0.01)
    proc.kill()
    raise RuntimeError(f"{target} did not become ready")


#: where each request list was left off, so a list of fresh incidents is never
#: replayed by a later run (which would measure duplicates instead)
_CURSOR: dict[int, int] = {}


def load(url: str, requests: list[tuple[dict[str, str], bytes]], conc: int,
         seconds: float = 2.0) -> dict[str, Any]:
    """Closed-loop load for ``seconds`` at ``conc`` connections; walks ``requests``
    on from where the last run on the same list stopped. Records the outcome
    statuses the app answered, so a case shows it measured what it says."""
    lat: list[float] = []
    codes: set[int] = set()
    statuses: dict[str, int] = {}
    counter = iter(range(_CURSOR.get(id(requests), 0), 10**9))
    with httpx.Client(limits=httpx.Limits(max_connections=conc,
                                          max_keepalive_connections=conc)) as client:
        for _ in range(20):  # warm-up
            h, b = requests[next(counter) % len(requests)]
            client.post(url + "/", headers=h, content=b)
        stop = time.perf_counter() + seconds

        def worker(_: int) -> None:
            while time.perf_counter() < stop:
                h, b = requests[next(counter) % len(requests)]
                t = time.perf_counter()
                r = client.post(url + "/", headers=h, content=b)
                lat.append(time.perf_counter() - t)
                codes.add(r.status_code)
                status = r.headers.get("ce-remediationstatus", "-")
                statuses[status] = statuses.get(status, 0) + 1

        t0 = time.perf_counter()
        with ThreadPoolExecutor(conc) as ex:
            list(ex.map(worker, range(conc)))
        elapsed = time.perf_counter() - t0
    _CURSOR[id(requests)] = next(counter)
    lat.sort()
    return {"rps": len(lat) / elapsed, "p50_ms": lat[len(lat) // 2] * 1e3,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1e3, "n": len(lat), "codes": sorted(codes),
            "statuses": statuses}


def event_request(name: str, fingerprint: str | None = None,
                  deployment: str | None = None) -> tuple[dict[str, str], bytes]:
    doc = json.loads((EVENTS / f"{name}.json").read_text())
    if fingerprint:
        doc["alerts"][0]["fingerprint"] = fingerprint
    if deployment:
        doc["alerts"][0]["labels"] = {"alertname": "VLLMEngineHung", "namespace": "llm-serving",
                                      "deployment": deployment}
    (event,) = alertmanager_to_events(doc, routes=lambda n, _l: "restart-engine")
    (event,) = sign_events([event], BENCH_EVENT_KEY, now=time.time(), rebuild=new_event)
    return to_binary(event)


def engine(name: str) -> dict[str, Any]:
    """An inference-engine Deployment for the emulator (the storm's targets,
    and one per incident in the full-path case)."""
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "llm-serving", "uid": f"uid-{name}"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "e",
                                                           "image": "vllm/vllm-openai"}]}}}}


def unlimited_policy(tmp: Path) -> Path:
    """The default policy allows 20 restarts an hour, 3 per target: raised so
    a load test measures the path, not the rate limit (which holds: see the
    tests)."""
    path = tmp / "bench-policy.json"
    path.write_text(json.dumps({"remediation_config": {
        "limits": {"cluster_max_per_window": 10**6},
        "actions": {"rollout-restart": {"max_per_window": 10**6,
                                        "max_per_target_in_window": 10**6}}}}))
    return path


def bench_http(full_targets: int = 3000) -> list[dict[str, Any]]:
    """Each case is what its name says (the "answered" column shows it):

    - rejected: a malformed CloudEvent (400), on the snapshot app;
    - denied: a new incident each request (a protected namespace), planned,
      claimed and judged by the policy, on the snapshot app with the
      one-action-per-target window off (otherwise concurrent claims on the
      one target answer "duplicate" before the policy is asked);
    - duplicate: the same event again (the ledger answers);
    - full plan+apply: a new incident on a different Deployment each request,
      against the API emulator: plan, claim, decide, PATCH, Kubernetes Event,
      verification read, outcome.
    """
    from tests.kube_emulator import KubeEmulator
    from tests.plugins.app import write_kubeconfig

    rows = []
    emu = KubeEmulator().start()
    emu.load(SNAPSHOT)
    emu.add([engine(f"bench-{i:05d}") for i in range(full_targets)])
    tmp = Path(tempfile.mkdtemp())
    kubeconfig = write_kubeconfig(tmp / "kubeconfig", emu.url)
    noop, noop_url, _ = serve("bench.noop_app:create_app", {})
    snap, snap_url, _ = serve("remediation.app:create_app", {
        "REMEDIATION_SNAPSHOT": str(SNAPSHOT), "REMEDIATION_TARGET_WINDOW": "0"})
    live, live_url, _ = serve("remediation.app:create_app", {
        "KUBECONFIG": str(kubeconfig), "REMEDIATION_DRY_RUN": "false",
        "REMEDIATION_KUBE_TIMEOUT": "5", "REMEDIATION_POLICY_DATA": str(unlimited_policy(tmp))})
    try:
        rejected = [({"Content-Type": "application/cloudevents+json"}, b'{"specversion":"1.0"}')]
        denied = [event_request("04-vllm-hung-protected-namespace", f"{i:016x}")
                  for i in range(20000)]
        duplicate = [event_request("01-vllm-hung")]
        full = [event_request("01-vllm-hung", f"{i:016x}", f"bench-{i:05d}")
                for i in range(full_targets)]
        for conc in (1, 16):
            ceiling = load(noop_url, denied, conc)
            cases = {"rejected (400)": (snap_url, rejected), "denied": (snap_url, denied),
                     "duplicate": (snap_url, duplicate), "full plan+apply": (live_url, full)}
            rows.append({"case": "no-op Flask (ceiling)", "conc": conc, **ceiling, "ratio": 1.0})
            for name, (url, reqs) in cases.items():
                r = load(url, reqs, conc)
                rows.append({"case": name, "conc": conc, **r, "ratio": r["rps"] / ceiling["rps"]})
    finally:
        for p in (noop, snap, live):
            p.terminate()
        emu.close()
    return rows


def bench_metrics_cost(rounds: int = 3) -> list[dict[str, Any]]:
    """The deny path with metrics on and off (bench.metrics_off_app), and with
    tracing on too (bench.traced_app): three servers of the same snapshot app
    side by side, runs alternated ``rounds`` times per concurrency; the median
    of each, the cost of metrics (on vs off) and of tracing (traced vs on)."""
    on, on_url, _ = serve("remediation.app:create_app", {
        "REMEDIATION_SNAPSHOT": str(SNAPSHOT), "REMEDIATION_TARGET_WINDOW": "0"})
    off, off_url, _ = serve("bench.metrics_off_app:create_app", {
        "REMEDIATION_SNAPSHOT": str(SNAPSHOT), "REMEDIATION_TARGET_WINDOW": "0"})
    traced, traced_url, _ = serve("bench.traced_app:create_app", {
        "REMEDIATION_SNAPSHOT": str(SNAPSHOT), "REMEDIATION_TARGET_WINDOW": "0"})
    rows = []
    try:
        for conc in (1, 16):
            runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": [], "traced": []}
            for i in range(rounds):
                # fresh incidents for every run (the load cursor walks each list on)
                for side, (label, url) in enumerate((("off", off_url), ("on", on_url),
                                                     ("traced", traced_url))):
                    denied = [event_request("04-vllm-hung-protected-namespace",
                                            f"{conc:02x}{i:02x}{side:x}{n:011x}")
                              for n in range(5000)]
                    runs[label].append(load(url, denied, conc))
            med = {k: statistics.median(r["rps"] for r in v) for k, v in runs.items()}
            p99 = {k: statistics.median(r["p99_ms"] for r in v) for k, v in runs.items()}
            statuses = {k: v[-1].get("statuses", {}) for k, v in runs.items()}
            rows.append({"conc": conc, "rps_on": med["on"], "rps_off": med["off"],
                         "p99_on_ms": p99["on"], "p99_off_ms": p99["off"],
                         "cost": 1 - med["on"] / med["off"], "statuses": statuses,
                         "rps_traced": med["traced"], "p99_traced_ms": p99["traced"],
                         "tracing_cost": 1 - med["traced"] / med["on"]})
    finally:
        for p in (on, off, traced):
            p.terminate()
    return rows


def bench_storm(alerts: int = 20000, targets: int = 200) -> dict[str, Any]:
    """One Alertmanager group of ``alerts`` alerts over ``targets`` Deployments,
    against the emulator, through the webhook: one action per distinct target."""
    from tests.kube_emulator import KubeEmulator
    from tests.plugins.app import write_kubeconfig

    emu = KubeEmulator().start()
    # the engines' namespace, labelled as an inference namespace (issue 15's
    # allow list: restarts happen only there)
    emu.add([{"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": "llm-serving",
                           "labels": {"inferenceremediation.io/inference": "true"}}}]
            + [engine(f"vllm-{i}") for i in range(targets)])
    tmp = Path(tempfile.mkdtemp())
    kubeconfig = write_kubeconfig(tmp / "kubeconfig", emu.url)
    doc = json.loads((EVENTS / "01-vllm-hung.json").read_text())
    one = doc["alerts"][0]
    doc["alerts"] = []
    for i in range(alerts):  # many alerts per Deployment, one incident each Deployment
        a = copy.deepcopy(one)
        t = i % targets
        a["labels"] = {"alertname": "VLLMEngineHung", "namespace": "llm-serving",
                       "deployment": f"vllm-{t}", "replica": str(i)}
        # Alertmanager's fingerprint is a hash of the label set: one incident per alert
        a["fingerprint"] = hashlib.sha256(json.dumps(a["labels"], sort_keys=True)
                                          .encode()).hexdigest()[:16]
        doc["alerts"].append(a)
    body = json.dumps(doc).encode()
    limits = unlimited_policy(tmp)  # with the default (20 an hour) 180 of 200 are denied
    proc, url, _ = serve("remediation.app:create_app", {
        "REMEDIATION_POLICY_DATA": str(limits),
        "KUBECONFIG": str(kubeconfig), "REMEDIATION_DRY_RUN": "false",
        "ALERTMANAGER_BEARER_TOKEN": "bench", "REMEDIATION_MAX_BODY_BYTES": str(64 << 20)})
    try:
        t = time.perf_counter()
        resp = httpx.post(url + "/webhooks/alertmanager", content=body, timeout=900,
                          headers={"Authorization": "Bearer bench",
                                   "Content-Type": "application/json"})
        answered = time.perf_counter() - t
        rss_kb = int(subprocess.run(["ps", "-o", "rss=", "-p", str(proc.pid)],
                                    capture_output=True, text=True).stdout.strip() or 0)
        hwm_kb = 0
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm_kb = int(line.split()[1])
    finally:
        proc.terminate()
    patches = [r for r in emu.requests if r.method == "PATCH" and r.resource == "deployments"
               and r.status < 300]
    statuses: dict[str, int] = {}
    for o in resp.json().get("outcomes", []):
        statuses[o["status"]] = statuses.get(o["status"], 0) + 1
    emu.close()
    return {"alerts": alerts, "targets": targets, "http": resp.status_code,
            "answer_s": answered, "peak_rss_mb": hwm_kb / 1024, "rss_after_mb": rss_kb / 1024,
            "actions": len(patches), "distinct_patched": len({r.name for r in patches}),
            "statuses": statuses, "body_mb": len(body) / 1e6}


def bench_cold_start() -> dict[str, float]:
    def run(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "functions")})
        return time.perf_counter() - t

    base = statistics.median(run("pass") for _ in range(5))
    imp = statistics.median(run("import remediation.app") for _ in range(5))
    ready = []
    first = []
    req = event_request("01-vllm-hung")
    for _ in range(3):
        t = time.perf_counter()
        proc, url, _ = serve("remediation.app:create_app", {"REMEDIATION_SNAPSHOT": str(SNAPSHOT)})
        ready.append(time.perf_counter() - t)
        httpx.post(url + "/", headers=req[0], content=req[1], timeout=30)
        first.append(time.perf_counter() - t)
        proc.terminate()
    noop_ready = []
    for _ in range(3):
        t = time.perf_counter()
        proc, _, _ = serve("bench.noop_app:create_app", {})
        noop_ready.append(time.perf_counter() - t)
        proc.terminate()
    return {"python_start_s": base, "import_app_s": imp - base,
            "ready_s": statistics.median(ready), "first_event_s": statistics.median(first),
            "noop_ready_s": statistics.median(noop_ready)}


def bench_policy(n: int = 2000) -> dict[str, float]:
    from datetime import datetime
    from types import MappingProxyType

    from remediation.clients.rego import EmbeddedPolicyEngine
    from remediation.guard.policy import policy_input
    from remediation.model import TYPE_ALERT_FIRING, ObjectRef, Plan, Signal, Step

    plan = Plan("restart-engine", "rollout-restart", ObjectRef("Deployment", "llm", "v"),
                (Step("patch", "Deployment", "llm", "v", "why"),), key="k")
    sig = Signal(event_id="e", source="/s", type=TYPE_ALERT_FIRING, status="firing",
                 name="VLLMEngineHung", labels=MappingProxyType({"namespace": "llm"}))
    doc = policy_input(plan, sig, actor="a", via="trigger", cluster="", self_namespace="r",
                       dry_run=False, stats={}, now=datetime.now(UTC))
    engine = EmbeddedPolicyEngine()

    def timed(fn: Any) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        out.sort()
        return out

    def trivial() -> dict[str, Any]:
        return {"allow": doc["action"] == "rollout-restart", "reasons": []}

    emb = timed(lambda: engine.evaluate(doc))
    base = timed(trivial)
    engine.close()
    result = {"embedded_p50_us": emb[n // 2] * 1e6, "embedded_p99_us": emb[int(n * .99)] * 1e6,
              "baseline_call_p50_us": base[n // 2] * 1e6}
    try:
        from remediation.clients.opa import OpaServerPolicyEngine
        from remediation.settings import PolicySettings
        from tests.plugins.opa import OpaStandIn

        stand_in = OpaStandIn().start()
        server = OpaServerPolicyEngine(PolicySettings(opa_url=stand_in.url))
        srv = timed(lambda: server.evaluate(doc))[: n]
        result["server_p50_us"] = srv[len(srv) // 2] * 1e6
        result["server_p99_us"] = srv[int(len(srv) * .99)] * 1e6
        server.close()
        stand_in.stop()
        stand_in.close()
    except Exception as exc:  # noqa: BLE001 - report, don't fail the run
        result["server_error"] = str(exc)
    return result


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    print("policy decision ...", flush=True)
    policy = bench_policy()
    print("cold start ...", flush=True)
    cold = bench_cold_start()
    print("HTTP load (2 s per case) ...", flush=True)
    http = bench_http()
    print("alert storm (20,000 alerts) ...", flush=True)
    storm = bench_storm()
    print("deny path, metrics on and off ...", flush=True)
    metered = bench_metrics_cost()
    deny16 = next(r for r in http if r["case"] == "denied" and r["conc"] == 16)
    full16 = next(r for r in http if r["case"] == "full plan+apply" and r["conc"] == 16)
    deny1 = next(r for r in http if r["case"] == "denied" and r["conc"] == 1)
    full1 = next(r for r in http if r["case"] == "full plan+apply" and r["conc"] == 1)
    targets = [
        ("deny path >= 70% of ceiling (1 conn / 16 conns)",
         f"{deny1['ratio']:.0%} / {deny16['ratio']:.0%}",
         min(deny1["ratio"], deny16["ratio"]) >= .7),
        ("full path >= 50% of ceiling (1 / 16)", f"{full1['ratio']:.0%} / {full16['ratio']:.0%}",
         min(full1["ratio"], full16["ratio"]) >= .5),
        ("deny p99 < 10 ms at 16 conns", f"{deny16['p99_ms']:.1f} ms", deny16["p99_ms"] < 10),
        ("storm answered < 2 s", f"{storm['answer_s']:.2f} s", storm["answer_s"] < 2),
        ("storm peak memory < 200 MB", f"{storm['peak_rss_mb']:.1f} MB",
         storm["peak_rss_mb"] < 200),
        ("one action per distinct target",
         f"{storm['actions']} actions / {storm['targets']} targets",
         storm["actions"] == storm["targets"] == storm["distinct_patched"]),
        ("ready < 0.5 s", f"{cold['ready_s']:.2f} s (no-op app {cold['noop_ready_s']:.2f} s)",
         cold["ready_s"] < .5),
        ("embedded decision p50 <= 100 us", f"{policy['embedded_p50_us']:.0f} us",
         policy["embedded_p50_us"] <= 100),
        ("metrics cost <= 5% on the deny path (1 / 16)",
         " / ".join(f"{r['cost']:.1%}" for r in metered), max(r["cost"] for r in metered) <= .05),
    ]
    def answered(r: dict[str, Any]) -> str:
        seen = {k: v for k, v in r.get("statuses", {}).items() if k != "-"}
        if not seen:
            return "HTTP " + "/".join(str(c) for c in r["codes"])
        total = sum(seen.values())
        return ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(seen.items(),
                                                                    key=lambda kv: -kv[1]))

    md = ["| case | conns | req/s | p50 ms | p99 ms | vs no-op | answered |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['case']} | {r['conc']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
           f"| {r['ratio']:.0%} | {answered(r)} |" for r in http]
    md += ["",
           "| deny path | conns | req/s metrics on | req/s off | p99 ms on | p99 ms off | "
           "metrics cost | req/s + tracing | p99 ms + tracing | tracing cost |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| denied | {r['conc']} | {r['rps_on']:.0f} | {r['rps_off']:.0f} | "
           f"{r['p99_on_ms']:.2f} | {r['p99_off_ms']:.2f} | {r['cost']:.1%} | "
           f"{r['rps_traced']:.0f} | {r['p99_traced_ms']:.2f} | {r['tracing_cost']:.1%} |"
           for r in metered]
    md += ["", "| target | measured | |", "|---|---|---|"]
    md += [f"| {t} | {m} | {'PASS' if ok else 'MISS'} |" for t, m, ok in targets]
    md += ["", f"Storm: {storm['alerts']} alerts over {storm['targets']} Deployments, "
           f"{storm['body_mb']:.1f} MB body, HTTP {storm['http']}, answered in "
           f"{storm['answer_s']:.2f} s, peak RSS {storm['peak_rss_mb']:.1f} MB, outcomes "
           f"{storm['statuses']}.",
           f"Cold start: python itself {cold['python_start_s']*1e3:.0f} ms; importing "
           f"remediation.app adds {cold['import_app_s']*1e3:.0f} ms; waitress ready "
           f"{cold['ready_s']*1e3:.0f} ms (no-op Flask app {cold['noop_ready_s']*1e3:.0f} ms); "
           f"first event handled {cold['first_event_s']*1e3:.0f} ms after start.",
           f"Policy: embedded p50 {policy['embedded_p50_us']:.0f} us, p99 "
           f"{policy['embedded_p99_us']:.0f} us (a trivial Python call: "
           f"{policy['baseline_call_p50_us']:.1f} us); OPA REST server mode on loopback p50 "
           f"{policy.get('server_p50_us', float('nan')):.0f} us, p99 "
           f"{policy.get('server_p99_us', float('nan')):.0f} us."]
    text = "\n".join(md)
    print("\n" + text)
    (RESULTS / "latest.md").write_text(text + "\n")
    (RESULTS / "latest.json").write_text(json.dumps(
        {"http": http, "storm": storm, "cold_start": cold, "policy": policy,
         "metrics_cost": metered,
         "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
