"""What a remediation costs the API does not grow with the fleet (issue 18).

Each function's alert runs through the app over the API emulator (the real
client, the Lease ledger, verification off, as ``bench.scale`` runs it) on
a fleet of 10 GPU nodes and of 200, and with 10 or 1,000 records in the
ledger; the requests each remediation made are read back from the
emulator's request log, by verb and resource, and must be the same. The
counts themselves are bounded too (restart-engine's plan, claim, apply and
record). Outcomes only: no timing is asserted.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediation.app import create_app
from remediation.guard.lease_ledger import RECORD_ANNOTATION, LeaseLedger, key_lease_name
from remediation.runtime import build_pipeline, close_pipeline
from remediation.settings import (
    HTTPSettings,
    KubeSettings,
    LedgerSettings,
    PolicySettings,
    Secret,
    Settings,
    VerifySettings,
)
from tests.kube_emulator import KubeEmulator
from tests.plugins.app import write_kubeconfig
from tests.realstack.fleet import alert, deployment

BEARER = "constant-cost"
NS = "llm-serving"
ENGINES_PER_NODE = 9
GPU_LABELS = {"nvidia.com/gpu.present": "true"}


def node(name: str) -> dict[str, Any]:
    capacity = {"cpu": "96", "memory": "1024Gi", "pods": "110", "nvidia.com/gpu": "8"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                  **GPU_LABELS}},
            "spec": {},
            "status": {"capacity": capacity, "allocatable": capacity,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str, node_name: str, owner: dict[str, Any], labels: dict[str, str],
        template: dict[str, Any], ns: str = NS) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "ownerReferences": [{**owner, "controller": True}]},
            "spec": {**template["spec"], "nodeName": node_name},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def fleet(nodes: int) -> list[dict[str, Any]]:
    """``nodes`` GPU nodes, 9 engine pods a node from Deployments of four
    replicas (each through its ReplicaSet, each with a PDB), a dcgm-exporter
    DaemonSet pod on every node, as bench.scale builds it on kwok."""
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": NS, "labels": {"inferenceremediation.io/inference": "true"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gpu-operator"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "remediation"}},
    ]
    names = [f"gpu-{i:04d}" for i in range(nodes)]
    objs += [node(n) for n in names]
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet",
          "metadata": {"name": "dcgm-exporter", "namespace": "gpu-operator"},
          "spec": {"selector": {"matchLabels": {"app": "dcgm-exporter"}},
                   "template": {"metadata": {"labels": {"app": "dcgm-exporter"}},
                                "spec": {"containers": [{"name": "dcgm", "image": "dcgm"}]}}}}
    objs.append(ds)
    for n in names:
        objs.append(pod(f"dcgm-exporter-{n}", n, {"apiVersion": "apps/v1",
                                                   "kind": "DaemonSet",
                                                   "name": "dcgm-exporter"},
                        {"app": "dcgm-exporter"}, ds["spec"]["template"], ns="gpu-operator"))
    placed = 0
    for i in range(nodes * ENGINES_PER_NODE // 4):
        name = f"vllm-{i:05d}"
        dep = deployment(NS, name, replicas=4, gpus=0 if i % 3 == 0 else 1,
                         annotations={"inferenceremediation.io/max-replicas": "8"})
        dep["status"] = {"replicas": 4, "readyReplicas": 4, "availableReplicas": 4,
                         "updatedReplicas": 4, "observedGeneration": 1}
        template_hash = f"h{i:05d}"
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": f"{name}-{template_hash}", "namespace": NS,
                           "labels": {"app": name, "pod-template-hash": template_hash},
                           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": name, "controller": True}]},
              "spec": {"replicas": 4,
                       "selector": {"matchLabels": {"app": name,
                                                    "pod-template-hash": template_hash}},
                       "template": dep["spec"]["template"]}}
        objs += [dep, rs,
                 {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                  "metadata": {"name": name, "namespace": NS},
                  "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": name}}}}]
        for j in range(4):
            objs.append(pod(f"{rs['metadata']['name']}-p{j}", names[placed % nodes],
                            {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                             "name": rs["metadata"]["name"]},
                            {"app": name, "pod-template-hash": template_hash,
                             "app.kubernetes.io/name": "vllm"}, dep["spec"]["template"]))
            placed += 1
    return objs


def ledger_records(n: int) -> list[dict[str, Any]]:
    """``n`` finished records of other targets, as the Lease ledger writes them."""
    labels = LeaseLedger(store=None, approval_key="x")._labels  # type: ignore[arg-type]
    out = []
    for i in range(n):
        rec = {"key": f"elsewhere/{i}", "function": "restart-engine",
               "action": "rollout-restart", "target": f"Deployment/other/engine-{i}",
               "status": "applied" if i % 2 else "denied", "holder": "h", "claimed_at": 1.0,
               "expires_at": 2.0, "updated_at": 1.0e12, "event_id": f"e{i}", "plan": {},
               "decision": {}, "reasons": [], "signal": {}, "approved_by": "",
               "approved_at": 0.0, "verification": "", "verification_detail": ""}
        out.append({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": key_lease_name(rec["key"]), "namespace": "remediation",
                                 "labels": labels(rec),
                                 "annotations": {RECORD_ANNOTATION: json.dumps(rec)}},
                    "spec": {"holderIdentity": "h"}})
    return out


def settings(kubeconfig: Path, workdir: Path) -> Settings:
    data = workdir / "policy.yaml"
    data.write_text(yaml.safe_dump({"remediation_config": {
        "limits": {"cluster_max_per_window": 100000, "max_cordoned_gpu_nodes_percent": 50},
        "actions": {a: {"max_per_window": 100000} for a in
                    ("rollout-restart", "cordon-drain", "mark-reboot", "evict-pods",
                     "scale-out")}}}))
    return Settings(dry_run=False, http=HTTPSettings(alertmanager_bearer=Secret(BEARER)),
                    kube=KubeSettings(kubeconfig=str(kubeconfig), timeout=10),
                    policy=PolicySettings(data_file=str(data)),
                    ledger=LedgerSettings(path="kubernetes"),
                    verify=VerifySettings(deadline=0))


def alerts() -> list[tuple[str, dict[str, Any]]]:
    """One alert per function; the same objects at every fleet size."""
    # Deployment i's pods are on gpu-(4i..4i+3): the engines restarted and
    # scaled are on nodes 0-7, the nodes rebalanced and drained are 8 and 9
    engine = "vllm-00001-h00001-p0"  # a one-GPU engine on gpu-0004
    return [
        ("warm-up", alert("VLLMEngineHung", {"namespace": NS, "pod": "vllm-00000-h00000-p0"},
                          fingerprint="w000000000000000")),
        ("restart-engine", alert("VLLMEngineHung", {"namespace": NS, "pod": engine},
                                 fingerprint="r000000000000000")),
        ("scale-engine", alert("VLLMKVCacheSaturated", {
            "namespace": NS, "pod": engine, "kv_cache_usage": "0.97",
            "num_requests_waiting": "9"}, fingerprint="s000000000000000")),
        ("rebalance-gpu-pods", alert("GPUNodeHot", {"Hostname": "gpu-0008", "gpu": "0"},
                                     fingerprint="b000000000000000")),
        ("drain-gpu-node", alert("GPUXidError", {"Hostname": "gpu-0009", "xid": "79",
                                                 "gpu": "0"}, fingerprint="d000000000000000")),
    ]


def cost(nodes: int, leases: int, tmp_path: Path) -> dict[str, tuple[str, Counter[str]]]:
    """Per function: its outcome and the requests its remediation made."""
    emu = KubeEmulator().start()
    workdir = tmp_path / f"{nodes}-{leases}"
    workdir.mkdir()
    pipeline = None
    try:
        emu.add(fleet(nodes))
        emu.add(ledger_records(leases))
        pipeline = build_pipeline(settings(write_kubeconfig(workdir / "kubeconfig", emu.url),
                                           workdir))
        client = create_app(pipeline.settings, pipeline).test_client()
        out: dict[str, tuple[str, Counter[str]]] = {}
        for function, body in alerts():
            mark = len(emu.requests)
            resp = client.post("/webhooks/alertmanager", json=body,
                               headers={"Authorization": f"Bearer {BEARER}"})
            assert resp.status_code == 200, resp.get_data(as_text=True)
            counted: Counter[str] = Counter()
            for r in emu.requests[mark:]:
                verb = {"GET": "get" if r.name else "list", "POST": "create", "PUT": "update",
                        "PATCH": "patch", "DELETE": "delete"}[r.method]
                counted[f"{verb} {r.resource}"] += 1
            out[function] = (resp.get_json()["outcomes"][0]["status"], counted)
        return out
    finally:
        if pipeline is not None:
            close_pipeline(pipeline)
        emu.close()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Counter[str]]]:
    return cost(10, 10, tmp_path_factory.mktemp("cost"))


FUNCTIONS = ["restart-engine", "scale-engine", "rebalance-gpu-pods", "drain-gpu-node"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_acts(small, function):
    status, counted = small[function]
    assert status == "applied", (function, status, counted)


def test_requests_per_remediation_do_not_grow_with_the_fleet(small, tmp_path):
    """200 GPU nodes (1,800 engine pods, 450 Deployments and PDBs) cost each
    remediation the requests 10 nodes do, verb by verb."""
    big = cost(200, 10, tmp_path)
    for function in FUNCTIONS:
        assert big[function] == small[function], function


def test_requests_per_remediation_do_not_grow_with_the_ledger(small, tmp_path):
    """1,000 records in the ledger (other targets' actions and denials) cost
    a claim, its stats and its record what 10 do."""
    crowded = cost(10, 1000, tmp_path)
    for function in FUNCTIONS:
        assert crowded[function] == small[function], function


def test_restart_engine_costs_a_bounded_number_of_requests(small):
    """Plan (pod, ReplicaSet, Deployment, the target's history), claim (the
    target Lease and the target's records in one list, the target Lease
    created, the key Lease created), policy facts (the namespace) and stats
    (one list), apply (one patch, one Event) and record (one replace): 12, no
    Lease read by name."""
    _, counted = small["restart-engine"]
    assert counted == Counter({
        "get pods": 1, "get replicasets": 1, "get deployments": 1, "get namespaces": 1,
        "list leases": 3, "create leases": 2, "update leases": 1,
        "patch deployments": 1, "create events": 1}), counted


@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_function_reads_an_object_twice_or_lists_all_pods_per_owner(small, function):
    _, counted = small[function]
    assert counted["get deployments"] <= 2 and counted["get replicasets"] <= 9, counted
    # a drain that adds a cordon takes the circuit breaker's fleet lock: its
    # Lease is created by a process's first take, read and updated by later
    # ones, and let go by an update of what the take wrote
    assert counted["get leases"] <= (1 if function == "drain-gpu-node" else 0), counted


def test_a_second_drain_in_one_group_counts_the_first_cordon(tmp_path):
    """The batch's memo answers a plan's reads once per Alertmanager group;
    after a drain cordoned a node, the next drain of the group reads the
    nodes again, so the circuit breaker (here: one of four GPU nodes) holds."""
    emu = KubeEmulator().start()
    pipeline = None
    try:
        emu.add(fleet(4))
        cfg = settings(write_kubeconfig(tmp_path / "kubeconfig", emu.url), tmp_path)
        data = yaml.safe_load(Path(cfg.policy.data_file).read_text())
        data["remediation_config"]["limits"]["max_cordoned_gpu_nodes_percent"] = 25
        Path(cfg.policy.data_file).write_text(yaml.safe_dump(data))
        pipeline = build_pipeline(cfg)
        client = create_app(cfg, pipeline).test_client()
        group = alert("GPUXidError", {"Hostname": "gpu-0002", "xid": "79", "gpu": "0"},
                      fingerprint="d000000000000002")
        group["alerts"] += alert("GPUXidError", {"Hostname": "gpu-0003", "xid": "79",
                                                 "gpu": "0"},
                                 fingerprint="d000000000000003")["alerts"]
        resp = client.post("/webhooks/alertmanager", json=group,
                           headers={"Authorization": f"Bearer {BEARER}"})
        outcomes = resp.get_json()["outcomes"]
        assert [o["status"] for o in outcomes] == ["applied", "denied"], outcomes
        assert "circuit breaker: 2 of 4 GPU nodes" in " ".join(outcomes[1]["reasons"])
        cordoned = [n for n in ("gpu-0002", "gpu-0003")
                    if (emu.get("nodes", None, n) or {}).get("spec", {}).get("unschedulable")]
        assert cordoned == ["gpu-0002"]
    finally:
        if pipeline is not None:
            close_pipeline(pipeline)
        emu.close()
