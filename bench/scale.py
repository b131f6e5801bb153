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

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from remediation.app import create_app  # noqa: E402
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


def fleet_objects(nodes: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Nodes, and the workloads: Deployments of four replicas, 9 engine pods a
    node on average (two in three with one GPU: 6 of a node's 8 GPUs taken),
    each with a PDB, and a dcgm-exporter DaemonSet pod on every node."""
    node_objs = [node(f"gpu-{i:04d}") for i in range(nodes)]
    workloads: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",  # restarts happen in inference namespaces
         "metadata": {"name": NS, "labels": {"inferenceremediation.io/inference": "true"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gpu-operator"}},
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


class RealTarget(Target):
    def __init__(self, plane: ControlPlane) -> None:
        super().__init__("real")
        self.plane = plane

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
    want = sum(o["spec"]["replicas"] for o in workloads if o["kind"] == "Deployment")

    def all_ready() -> bool:
        deps = plane.read(f"/apis/apps/v1/namespaces/{NS}/deployments")["items"]
        return sum(d.get("status", {}).get("availableReplicas", 0) for d in deps) >= want

    wait_until(f"{want} engine pods ready", all_ready, None, timeout=1800, interval=2)
    pods = plane.read("/api/v1/pods")["items"]
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
        real = measure(RealTarget(plane), settings_for(kubeconfig, root), cases)
        emu = KubeEmulator().start()
        try:
            emu.add(objects)
            emu_kubeconfig = write_kubeconfig(root / "kubeconfig-emu", emu.url)
            emulated = measure(EmulatorTarget(emu), settings_for(emu_kubeconfig, root),
                               cases_for(pods, names))
        finally:
            emu.close()
        return {"nodes": nodes, "pods": len(pods), "build_seconds": round(built, 1),
                "functions": real, "emulator": emulated}
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
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(report, indent=2, default=dict))
    print(f"peak RSS of the bench process {report['peak_rss_mb']} MB; "
          f"written {RESULTS / 'scale.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
