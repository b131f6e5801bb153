"""Fleet-scale bench on a real control plane (``make bench-scale``).

Builds, with kwok, a small fleet (10 GPU nodes) and a large one
(``SCALE_NODES``, default 1,000 GPU nodes with 8 GPUs each, about 10 pods a
node from vLLM Deployments and a dcgm-exporter DaemonSet, PodDisruptionBudgets)
on the realstack tier's real kube-apiserver, then for each function sends
alerts through the app (the real kubernetes client, the Lease ledger,
verification off) and counts, from the API server's audit log, the requests
the product made for each remediation, by verb and resource; with each
alert's latency (p50/p99) and the process's peak RSS. The same alerts run on
the API emulator as the baseline. Results: bench/results/scale.json, and a
table printed for the README.

Targets are reported, never asserted. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.__main__ import serve  # noqa: E402
from remediation.app import create_app  # noqa: E402
from remediation.events.alertmanager import alertmanager_to_events  # noqa: E402
from remediation.events.binding import new_event, to_binary  # noqa: E402
from remediation.guard.sender_auth import sign_events  # noqa: E402
from remediation.runtime import build_pipeline, close_pipeline  # noqa: E402
from remediation.settings import (  # noqa: E402
    HTTPSettings,
    KubeSettings,
    LedgerSettings,
    PolicySettings,
    Secret,
    Settings,
    VerifySettings,
)
from tests.kube_emulator import KubeEmulator  # noqa: E402
from tests.plugins.app import write_kubeconfig  # noqa: E402
from tests.realstack.components import (  # noqa: E402
    REMEDIATOR_TOKEN,
    ControlPlane,
    kubeconfig_for,
    wait_until,
)
from tests.realstack.conftest import node  # noqa: E402
from tests.realstack.fleet import alert, deployment  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BEARER = "scale-bench"
NS = "llm-serving"
ENGINES_PER_NODE = 9  # plus one dcgm-exporter pod: about 10 pods a node
ALERTS = int(os.environ.get("SCALE_ALERTS", "20"))
#: the alert storms: alerts per storm, over this many Deployments
STORMS = [int(x) for x in os.environ.get("SCALE_STORMS", "1000,20000").split(",") if x]
STORM_TARGETS = 200
#: a namespace that is not an inference namespace: restarts there are denied
PROTECTED_NS = "gpu-operator"


def fleet_objects(nodes: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Nodes, and the workloads: Deployments of four replicas, 9 engine pods a
    node on average (two in three with one GPU: 6 of a node's 8 GPUs taken),
    each with a PDB, and a dcgm-exporter DaemonSet pod on every node."""
    node_objs = [node(f"gpu-{i:04d}") for i in range(nodes)]
    workloads: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",  # restarts happen in inference namespaces
         "metadata": {"name": NS, "labels": {"inferenceremediation.io/inference": "true"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PROTECTED_NS}},
        # the ledgers of the storms, one namespace each (their own claims)
        *({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"storm-{k}"}}
          for k in ("0", "1", "xid")),
        # an engine in a namespace that is not an inference namespace
        deployment(PROTECTED_NS, "protected-engine", replicas=1, gpus=0),
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "dcgm-exporter", "namespace": "gpu-operator"},
         "spec": {"selector": {"matchLabels": {"app": "dcgm-exporter"}},
                  "template": {"metadata": {"labels": {"app": "dcgm-exporter"}},
                               "spec": {"containers": [{"name": "dcgm", "image": "dcgm"}],
                                        "tolerations": [{"operator": "Exists"}]}}}},
    ]
    for i in range(nodes * ENGINES_PER_NODE // 4):
        dep = deployment(NS, f"vllm-{i:05d}", replicas=4, gpus=0 if i % 3 == 0 else 1,
                         annotations={"inferenceremediation.io/max-replicas": "8"})
        workloads.append(dep)
        workloads.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                          "metadata": {"name": f"vllm-{i:05d}", "namespace": NS},
                          "spec": {"maxUnavailable": 1,
                                   "selector": {"matchLabels": {"app": f"vllm-{i:05d}"}}}})
    return node_objs, workloads


def path_for(obj: dict[str, Any]) -> str:
    kind = obj["kind"]
    ns = obj["metadata"].get("namespace")
    plural = {"Namespace": "namespaces", "Node": "nodes", "DaemonSet": "daemonsets",
              "Deployment": "deployments", "PodDisruptionBudget": "poddisruptionbudgets"}[kind]
    group = {"DaemonSet": "/apis/apps/v1", "Deployment": "/apis/apps/v1",
             "PodDisruptionBudget": "/apis/policy/v1"}.get(kind, "/api/v1")
    return f"{group}/namespaces/{ns}/{plural}" if ns else f"{group}/{plural}"


def settings_for(kubeconfig: Path, workdir: Path) -> Settings:
    data = workdir / "policy.yaml"
    data.write_text(yaml.safe_dump({"remediation_config": {
        "limits": {"cluster_max_per_window": 100000, "max_cordoned_gpu_nodes_percent": 50},
        "actions": {a: {"max_per_window": 100000} for a in
                    ("rollout-restart", "cordon-drain", "mark-reboot", "evict-pods",
                     "scale-out")}}}))
    return Settings(dry_run=False, http=HTTPSettings(alertmanager_bearer=Secret(BEARER)),
                    kube=KubeSettings(kubeconfig=str(kubeconfig), timeout=30),
                    policy=PolicySettings(data_file=str(data)),
                    ledger=LedgerSettings(path="kubernetes"),
                    verify=VerifySettings(deadline=0))


class Target:
    """Where alerts go and how requests are counted."""

    def __init__(self, name: str) -> None:
        self.name = name

    def mark(self) -> int: ...
    def requests_since(self, mark: int) -> Counter[str]: ...
    def writes_since(self, mark: int) -> list[tuple[str, str, str, str, int]]: ...
    def nodes(self) -> list[dict[str, Any]]: ...


class RealTarget(Target):
    def __init__(self, plane: ControlPlane) -> None:
        super().__init__("real")
        self.plane = plane

    def writes_since(self, mark: int) -> list[tuple[str, str, str, str, int]]:
        """(verb, resource[/sub], namespace, name, code) of the product's writes."""
        with open(self.plane.audit_log, "rb") as f:
            f.seek(mark)
            lines = f.read().decode().splitlines()
        out = []
        for line in lines:
            e = json.loads(line)
            if e["user"]["username"] != "remediator" or e["verb"] in ("get", "list", "watch"):
                continue
            ref = e.get("objectRef", {})
            res = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource")
                                               else "")
            out.append((e["verb"], res, ref.get("namespace", ""), ref.get("name", ""),
                        int(e.get("responseStatus", {}).get("code", 0))))
        return out

    def nodes(self) -> list[dict[str, Any]]:
        return self.plane.read("/api/v1/nodes")["items"]

    def mark(self) -> int:
        return self.plane.audit_log.stat().st_size

    def requests_since(self, mark: int) -> Counter[str]:
        with open(self.plane.audit_log, "rb") as f:
            f.seek(mark)
            lines = f.read().decode().splitlines()
        out: Counter[str] = Counter()
        for line in lines:
            e = json.loads(line)
            if e["user"]["username"] != "remediator":
                continue
            ref = e.get("objectRef", {})
            res = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource")
                                               else "")
            out[f"{e['verb']} {res}"] += 1
        return out


class EmulatorTarget(Target):
    def __init__(self, emu: KubeEmulator) -> None:
        super().__init__("emulator")
        self.emu = emu

    def writes_since(self, mark: int) -> list[tuple[str, str, str, str, int]]:
        verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
        return [(verbs[r.method], r.resource, r.namespace or "", r.name or "", r.status)
                for r in self.emu.requests[mark:] if r.method in verbs]

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.emu.list("nodes"))

    def mark(self) -> int:
        return len(self.emu.requests)

    def requests_since(self, mark: int) -> Counter[str]:
        out: Counter[str] = Counter()
        for r in self.emu.requests[mark:]:
            verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete"}[r.method]
            if verb == "get" and not r.name:
                verb = "list"
            out[f"{verb} {r.resource}"] += 1
        return out


def measure(target: Target, settings: Settings, cases: list[tuple[str, dict[str, Any]]]
            ) -> dict[str, dict[str, Any]]:
    pipeline = build_pipeline(settings)
    client = create_app(settings, pipeline).test_client()
    out: dict[str, dict[str, Any]] = {}
    try:
        for function, body in cases:
            mark = target.mark()
            t0 = time.perf_counter()
            resp = client.post("/webhooks/alertmanager", json=body,
                               headers={"Authorization": f"Bearer {BEARER}"})
            ms = (time.perf_counter() - t0) * 1000
            time.sleep(0.3)  # the audit log is written as the request completes
            status = resp.get_json()["outcomes"][0]["status"]
            row = out.setdefault(function, {"latencies": [], "requests": [], "statuses": Counter(),
                                            "by_verb": Counter()})
            counted = target.requests_since(mark)
            row["latencies"].append(ms)
            row["requests"].append(sum(counted.values()))
            row["by_verb"] += counted
            row["statuses"][status] += 1
    finally:
        close_pipeline(pipeline)
    for row in out.values():
        lat = sorted(row.pop("latencies"))
        reqs = row.pop("requests")
        n = len(lat)
        row.update(p50_ms=round(statistics.median(lat), 1),
                   p99_ms=round(lat[min(n - 1, int(n * 0.99))], 1),
                   api_requests=round(statistics.mean(reqs), 1),
                   api_requests_max=max(reqs), alerts=n,
                   statuses=dict(row["statuses"]),
                   by_verb={k: round(v / n, 2) for k, v in sorted(row["by_verb"].items())})
    return out


def storm_body(alerts: int, names: list[str]) -> bytes:
    """One Alertmanager group: ``alerts`` alerts over the Deployments ``names``
    (many per target, each its own incident), one in a hundred about an engine in
    a namespace that is not an inference namespace (denied by policy)."""
    doc = alert("VLLMEngineHung", {"namespace": NS, "deployment": names[0]})
    one = doc["alerts"][0]
    doc["alerts"] = []
    for i in range(alerts):
        labels = {"alertname": "VLLMEngineHung", "severity": "critical", "namespace": NS,
                  "deployment": names[i % len(names)], "replica": str(i)}
        if i % 100 == 99:
            labels.update(namespace=PROTECTED_NS, deployment="protected-engine")
        a = dict(one, labels=labels)
        a["fingerprint"] = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()
                                          ).hexdigest()[:16]
        doc["alerts"].append(a)
    return json.dumps(doc).encode()


def storm_policy(root: Path, name: str, **limits: Any) -> Path:
    path = root / f"policy-{name}.yaml"
    path.write_text(yaml.safe_dump({"remediation_config": {
        "limits": {"cluster_max_per_window": 10**6, **limits},
        "actions": {a: {"max_per_window": 10**6, "max_per_target_in_window": 10**6}
                    for a in ("rollout-restart", "cordon-drain", "mark-reboot", "evict-pods",
                              "scale-out")}}}))
    return path


def hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def alert_storm(target: Target, kubeconfig: Path, root: Path, alerts: int,
                names: list[str], ledger_ns: str) -> dict[str, Any]:
    """The storm through the webhook of one server (waitress, 8 threads), the
    Lease ledger in ``ledger_ns``: one action per target expected."""
    body = storm_body(alerts, names)
    proc, url, _ = serve("remediation.app:create_app", {
        "KUBECONFIG": str(kubeconfig), "REMEDIATION_DRY_RUN": "false",
        "REMEDIATION_LEDGER": "kubernetes", "REMEDIATION_NAMESPACE": ledger_ns,
        "REMEDIATION_POLICY_DATA": str(storm_policy(root, f"storm-{ledger_ns}")),
        "REMEDIATION_VERIFY_DEADLINE": "0", "REMEDIATION_KUBE_TIMEOUT": "30",
        "ALERTMANAGER_BEARER_TOKEN": BEARER, "REMEDIATION_MAX_BODY_BYTES": str(64 << 20),
        "REMEDIATION_LOG_LEVEL": "WARNING"})
    mark = target.mark()
    try:
        t0 = time.perf_counter()
        resp = httpx.post(url + "/webhooks/alertmanager", content=body, timeout=1800,
                          headers={"Authorization": f"Bearer {BEARER}",
                                   "Content-Type": "application/json"})
        seconds = time.perf_counter() - t0
        peak = hwm_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    time.sleep(0.5)  # the audit log is written as each request completes
    writes = target.writes_since(mark)
    restarts = [w for w in writes if w[0] == "patch" and w[1] == "deployments" and w[4] < 300]
    statuses = Counter(o["status"] for o in resp.json().get("outcomes", []))
    return {"alerts": alerts, "targets": len(names), "http": resp.status_code,
            "seconds": round(seconds, 2), "peak_rss_mb": round(peak, 1),
            "actions": len(restarts), "targets_acted": len({w[3] for w in restarts}),
            "protected_acted": sum(1 for w in restarts if w[2] == PROTECTED_NS),
            "api_writes": len(writes), "api_requests": sum(target.requests_since(mark).values()),
            "statuses": dict(statuses), "body_mb": round(len(body) / 1e6, 1)}


def xid_storm(target: Target, kubeconfig: Path, root: Path, hit: list[str],
              ledger_ns: str, workers: int = 4, copies: int = 2) -> dict[str, Any]:
    """Fatal Xids (79) on the nodes ``hit`` at once, each delivered ``copies``
    times, shuffled over ``workers`` worker processes sharing the Lease
    ledger; the breaker's limit leaves room for half of them."""
    from tests.test_exactly_once import EVENT_KEY, Workers

    def gpu(n: dict[str, Any]) -> bool:
        return "nvidia.com/gpu" in ((n.get("status") or {}).get("allocatable") or {})

    fleet = [n for n in target.nodes() if gpu(n)]
    before = {n["metadata"]["name"] for n in fleet if (n.get("spec") or {}).get("unschedulable")}
    room = max(1, len(hit) // 2)
    allowed = len(before) + room
    percent = (allowed + 0.5) * 100 / len(fleet)  # allowed fit, allowed + 1 do not
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "REMEDIATION_DRY_RUN": "false",
           "REMEDIATION_LEDGER": "kubernetes", "REMEDIATION_NAMESPACE": ledger_ns,
           "REMEDIATION_POLICY_DATA": str(storm_policy(
               root, f"xid-{ledger_ns}", max_cordoned_gpu_nodes_percent=percent)),
           "REMEDIATION_VERIFY_DEADLINE": "0", "REMEDIATION_KUBE_TIMEOUT": "30",
           "REMEDIATION_LOG_LEVEL": "WARNING", "REMEDIATION_EVENT_HMAC_KEY": EVENT_KEY,
           "PYTHONPATH": f"{ROOT}:{ROOT / 'functions'}"}
    for var in ("OPA_URL", "VAULT_ADDR"):
        env.pop(var, None)

    def event(name: str, i: int) -> tuple[dict[str, str], bytes]:
        body = alert("GPUXidError", {"Hostname": name, "xid": "79", "gpu": "0"},
                     fingerprint=f"x{i:015d}")
        (ev,) = alertmanager_to_events(body, routes=lambda _n, _l: "drain-gpu-node")
        (ev,) = sign_events([ev], EVENT_KEY, now=time.time(), rebuild=new_event)
        return to_binary(ev)

    deliveries = [event(n, i) for i, n in enumerate(hit) for _ in range(copies)]
    random.Random(18).shuffle(deliveries)
    codes: Counter[int] = Counter()
    statuses: Counter[str] = Counter()

    def deliver(d: tuple[dict[str, str], bytes], urls: list[str], client: httpx.Client) -> None:
        rng = random.Random(hash(d[1]))
        for _ in range(600):  # as Knative redelivers a 503, for up to about 5 minutes
            resp = client.post(rng.choice(urls) + "/", headers=d[0], content=d[1])
            codes[resp.status_code] += 1
            if resp.status_code != 503:
                if resp.status_code == 200:
                    statuses[resp.json()["status"]] += 1
                return
            time.sleep(0.5)

    mark = target.mark()
    pool_workers = Workers(env)
    try:
        urls = [pool_workers.start(f"w{n}") for n in range(workers)]
        t0 = time.perf_counter()
        with httpx.Client(timeout=600) as client, ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda d: deliver(d, urls, client), deliveries))
        seconds = time.perf_counter() - t0
    finally:
        pool_workers.close()
    time.sleep(0.5)
    after = {n["metadata"]["name"] for n in target.nodes()
             if gpu(n) and (n.get("spec") or {}).get("unschedulable")}
    cordons = {w[3] for w in target.writes_since(mark)
               if w[0] == "patch" and w[1] == "nodes" and w[4] < 300}
    return {"gpu_nodes": len(fleet), "xid_nodes": len(hit), "deliveries": len(deliveries),
            "workers": workers, "limit_percent": round(percent, 3),
            "limit_nodes": allowed, "cordoned_before": len(before),
            "cordoned_after": len(after), "new_cordons": len(after - before),
            "nodes_patched": len(cordons), "seconds": round(seconds, 1),
            "http_codes": {str(k): v for k, v in sorted(codes.items())},
            "statuses": dict(statuses),
            "held": len(after) <= allowed}


def cases_for(pods: list[dict[str, Any]], nodes: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """ALERTS alerts per function on distinct targets."""
    by_node: dict[str, list[dict[str, Any]]] = {}
    for p in pods:
        by_node.setdefault(p["spec"].get("nodeName", ""), []).append(p)
    engines = [p for p in pods if p["metadata"]["namespace"] == NS]
    step = max(1, len(engines) // ALERTS)
    chosen = engines[::step][:ALERTS]
    cases: list[tuple[str, dict[str, Any]]] = []
    for i, p in enumerate(chosen):
        cases.append(("restart-engine", alert("VLLMEngineHung", {
            "namespace": NS, "pod": p["metadata"]["name"]}, fingerprint=f"r{i:015d}")))
    for i, p in enumerate(chosen):
        cases.append(("scale-engine", alert("VLLMKVCacheSaturated", {
            "namespace": NS, "pod": p["metadata"]["name"], "kv_cache_usage": "0.97",
            "num_requests_waiting": "9"}, fingerprint=f"s{i:015d}")))
    busy = [n for n in nodes if by_node.get(n)]
    for i, n in enumerate(busy[: min(ALERTS // 2, len(busy) // 2)]):
        cases.append(("rebalance-gpu-pods", alert("GPUNodeHot", {
            "Hostname": n, "gpu": "0"}, fingerprint=f"b{i:015d}")))
    for i, n in enumerate(busy[-min(5, max(1, len(busy) // 10)):]):
        cases.append(("drain-gpu-node", alert("GPUXidError", {
            "Hostname": n, "xid": "79", "gpu": "0"}, fingerprint=f"d{i:015d}")))
    return cases


def build_real(nodes: int, root: Path) -> tuple[ControlPlane, list[dict[str, Any]], float]:
    plane = ControlPlane(root, audit_reads=True, controller_qps=400).start()
    t0 = time.monotonic()
    node_objs, workloads = fleet_objects(nodes)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: plane.create("/api/v1/nodes", n), node_objs))
        for obj in workloads[:3]:
            plane.create(path_for(obj), obj)
        list(pool.map(lambda o: plane.create(path_for(o), o), workloads[3:]))
    want = sum(o["spec"]["replicas"] for o in workloads
               if o["kind"] == "Deployment" and o["metadata"]["namespace"] == NS)

    progress = {"available": -1, "since": time.monotonic()}

    def all_ready() -> bool:
        """Every engine available, or no progress for two minutes: the run
        goes on with what the fleet has, and the report says how many were
        available. (At 1,000 nodes on two cores kwok's pod-ready stage failed
        for about 2,700 pods: "status.podIPs: may specify no more than one IP
        for each IP family", a second pod IP allocated on a retried patch.)"""
        deps = plane.read(f"/apis/apps/v1/namespaces/{NS}/deployments")["items"]
        available = sum(d.get("status", {}).get("availableReplicas", 0) for d in deps)
        if available != progress["available"]:
            progress.update(available=available, since=time.monotonic())
            print(f"   {available} of {want} engine pods available "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)
        stalled = time.monotonic() - progress["since"] > 120
        return available >= want or stalled

    wait_until(f"{want} engine pods ready", all_ready, None, timeout=2400, interval=5)
    pods = plane.read("/api/v1/pods")["items"]
    plane.engines_available = (progress["available"], want)  # type: ignore[attr-defined]
    return plane, pods, time.monotonic() - t0


def run_size(nodes: int, workdir: Path) -> dict[str, Any]:
    root = workdir / f"real-{nodes}"
    root.mkdir()
    plane, pods, built = build_real(nodes, root)
    try:
        names = [f"gpu-{i:04d}" for i in range(nodes)]
        cases = cases_for(pods, names)
        kubeconfig = root / "kubeconfig-remediator"
        kubeconfig.write_text(yaml.safe_dump(kubeconfig_for(plane.url, plane.ca,
                                                            REMEDIATOR_TOKEN, "remediator")))
        plane.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": "remediation"}})
        # The baseline: the same objects, as the real API serves them before
        # any remediation, in the emulator.
        objects = []
        for path in ("/api/v1/nodes", "/api/v1/pods", "/apis/apps/v1/deployments",
                     "/apis/apps/v1/replicasets", "/apis/apps/v1/daemonsets",
                     "/apis/policy/v1/poddisruptionbudgets", "/api/v1/namespaces"):
            listed = plane.read(path)
            for item in listed["items"]:
                item.setdefault("kind", listed["kind"].removesuffix("List"))
                item.setdefault("apiVersion", listed["apiVersion"])
                objects.append(item)
        deps = sorted(d["metadata"]["name"] for d in objects
                      if d.get("kind") == "Deployment" and d["metadata"]["namespace"] == NS)
        per_storm = min(STORM_TARGETS, len(deps) // 2)
        storm_sets = [deps[-per_storm:], deps[-2 * per_storm:-per_storm]]
        # Xids on 5% of the nodes (at least 2), none of them cordoned before
        hit = names[:max(2, nodes // 20)]

        def storms(target: Target, kubeconfig: Path) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for k, alerts in enumerate(STORMS[:2]):
                print(f"   {target.name}: storm of {alerts} alerts over {per_storm} "
                      "Deployments ...", flush=True)
                out[str(alerts)] = alert_storm(target, kubeconfig, root, alerts,
                                               storm_sets[k], f"storm-{k}")
                print(f"     {out[str(alerts)]}", flush=True)
            if os.environ.get("SCALE_XID", "1") == "0":  # a quicker run: no Xid storm
                return out
            print(f"   {target.name}: Xid storm on {len(hit)} nodes, 4 workers ...", flush=True)
            out["xid"] = xid_storm(target, kubeconfig, root, hit, "storm-xid")
            print(f"     {out['xid']}", flush=True)
            return out

        real = measure(RealTarget(plane), settings_for(kubeconfig, root), cases)
        real_storms = storms(RealTarget(plane), kubeconfig)
        emu = KubeEmulator().start()
        try:
            emu.add(objects)
            emu_kubeconfig = write_kubeconfig(root / "kubeconfig-emu", emu.url)
            emulated = measure(EmulatorTarget(emu), settings_for(emu_kubeconfig, root),
                               cases_for(pods, names))
            emu_storms = storms(EmulatorTarget(emu), emu_kubeconfig)
        finally:
            emu.close()
        available, wanted = plane.engines_available  # type: ignore[attr-defined]
        return {"nodes": nodes, "pods": len(pods), "build_seconds": round(built, 1),
                "engine_pods_available": available, "engine_pods": wanted,
                "functions": real, "emulator": emulated, "storms": real_storms,
                "emulator_storms": emu_storms}
    finally:
        plane.close()


def main() -> int:
    sizes = [int(x) for x in os.environ.get("SCALE_NODES", "10,1000").split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    report: dict[str, Any] = {"runs": []}
    for n in sizes:
        print(f"-- {n} GPU nodes", flush=True)
        run = run_size(n, workdir)
        report["runs"].append(run)
        for fn, row in run["functions"].items():
            emu = run["emulator"].get(fn, {})
            print(f"{n:>5} nodes {run['pods']:>6} pods  {fn:<20} api requests "
                  f"{row['api_requests']:>5} (emulator {emu.get('api_requests', '-')})  "
                  f"p50 {row['p50_ms']:>7} ms  p99 {row['p99_ms']:>7} ms  {row['statuses']}",
                  flush=True)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    big = report["runs"][-1]
    report.update(nodes=big["nodes"], pods=big["pods"], functions={
        fn: {k: row[k] for k in ("api_requests", "p50_ms", "p99_ms")}
        for fn, row in big["functions"].items()})
    largest = max((k for k in big["storms"] if k.isdigit()), key=int, default=None)
    if largest is not None:
        st = big["storms"][largest]
        report["storm"] = {"alerts": st["alerts"], "seconds": st["seconds"],
                           "peak_rss_mb": st["peak_rss_mb"], "actions": st["actions"],
                           "targets": st["targets"]}
    if "xid" in big["storms"]:
        report["xid_storm"] = big["storms"]["xid"]
    for run in report["runs"]:
        for side in ("storms", "emulator_storms"):
            for name, st in run[side].items():
                print(f"{run['nodes']:>5} nodes  {side:<16} {name:>6}: {st}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(report, indent=2, default=dict))
    print(f"peak RSS of the bench process {report['peak_rss_mb']} MB; "
          f"written {RESULTS / 'scale.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
