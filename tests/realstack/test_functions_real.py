"""The four remediation functions against a real control plane.

Alerts go over HTTP to the real app (waitress-free werkzeug server on
loopback), the product talks to kube-apiserver through its own seam (the real
kubernetes client and a kubeconfig), the real controller-manager rolls pods
and enforces PodDisruptionBudgets, the real scheduler places pods on kwok's
fake GPU nodes. Every assertion reads the outcome back from the API server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from remediation.settings import (
    HTTPSettings,
    KubeSettings,
    PolicySettings,
    Secret,
    Settings,
    VerifySettings,
)

from tests.realstack.components import ControlPlane
from tests.realstack.fleet import (
    alert,
    deployment,
    pdb,
    ready_pods,
    rollout_complete,
    wait_for,
)

BEARER = "realstack-am-bearer"
AUTH = {"Authorization": f"Bearer {BEARER}"}
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def settings(plane: ControlPlane, tmp_path: Path, *, dry_run: bool = False,
             verify: float = 90.0, limits: dict[str, Any] | None = None,
             routes: dict[str, Any] | None = None) -> Settings:
    data = tmp_path / "policy-data.yaml"
    # Four GPU nodes: one cordoned node is 25%; allow two for the drain tests.
    data.write_text(yaml.safe_dump({"remediation_config": {"limits": {
        "max_cordoned_gpu_nodes_percent": 50, **(limits or {})}}}))
    routes_file = ""
    if routes is not None:
        routes_file = str(tmp_path / "routes.yaml")
        Path(routes_file).write_text(yaml.safe_dump(routes))
    return Settings(
        dry_run=dry_run, routes_file=routes_file,
        http=HTTPSettings(alertmanager_bearer=Secret(BEARER)),
        kube=KubeSettings(kubeconfig=str(plane.kubeconfig), timeout=10.0),
        policy=PolicySettings(data_file=str(data)),
        verify=VerifySettings(deadline=verify, interval=0.5),
    )


def post(app: Any, body: dict[str, Any]) -> dict[str, Any]:
    resp = app.post("/webhooks/alertmanager", json=body, headers=AUTH)
    assert resp.status_code in (200, 503), resp.text
    (outcome,) = resp.json()["outcomes"]
    outcome["http"] = resp.status_code
    return outcome


def read_deployment(plane: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    return plane.read(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")


def read_node(plane: ControlPlane, name: str) -> dict[str, Any]:
    return plane.read(f"/api/v1/nodes/{name}")


def uncordon(plane: ControlPlane, name: str) -> None:
    """Put a node back as the fixture made it (other tests share the fleet)."""
    n = read_node(plane, name)
    n["spec"]["unschedulable"] = False
    n["spec"]["taints"] = [t for t in n["spec"].get("taints") or []
                           if not t["key"].startswith("nvidia.com/")]
    for key in list(n["metadata"].get("labels", {})):
        if key.startswith("inferenceremediation.io/"):
            del n["metadata"]["labels"][key]
    for key in list(n["metadata"].get("annotations", {})):
        if key.startswith("inferenceremediation.io/"):
            del n["metadata"]["annotations"][key]
    r = plane.request("PUT", f"/api/v1/nodes/{name}", n)
    assert r.status_code == 200, r.text


# --- restart-engine ---------------------------------------------------------

def test_hung_vllm_is_rollout_restarted_and_verified(control_plane, gpu_fleet, namespace,
                                                     serve_app, tmp_path):
    plane, ns = control_plane, namespace
    plane.create(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment(ns, "vllm-a", 2))
    before = ready_pods(plane, ns, "vllm-a", 2)
    app = serve_app(settings(plane, tmp_path))

    out = post(app, alert("VLLMEngineHung", {"namespace": ns,
                                             "pod": before[0]["metadata"]["name"]}))

    assert out["status"] == "applied", out
    assert out["verification"]["result"] == "succeeded", out["verification"]
    dep = read_deployment(plane, ns, "vllm-a")
    assert RESTARTED_AT in dep["spec"]["template"]["metadata"]["annotations"]
    # Verified means what kubectl rollout status means, read back from the API:
    assert rollout_complete(dep), dep["status"]
    after = ready_pods(plane, ns, "vllm-a", 2)
    assert not {p["metadata"]["uid"] for p in before} & {p["metadata"]["uid"] for p in after}
    # Every new pod sits on a GPU node the scheduler chose by capacity.
    assert {p["spec"]["nodeName"] for p in after} <= set(gpu_fleet["gpu"])
    # The audit trail: a Kubernetes Event on the Deployment.
    events = plane.read(f"/api/v1/namespaces/{ns}/events")["items"]
    assert any(e["involvedObject"]["name"] == "vllm-a" for e in events), events

    # The same alert again: answered duplicate, no second restart.
    stamp = dep["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    again = post(app, alert("VLLMEngineHung", {"namespace": ns,
                                               "pod": before[0]["metadata"]["name"]}))
    assert again["status"] == "duplicate", again
    dep2 = read_deployment(plane, ns, "vllm-a")
    assert dep2["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == stamp
    assert dep2["metadata"]["generation"] == dep["metadata"]["generation"]


def test_server_side_dry_run_changes_nothing(control_plane, gpu_fleet, namespace, serve_app,
                                             tmp_path):
    plane, ns = control_plane, namespace
    plane.create(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment(ns, "vllm-dry", 1))
    (pod,) = ready_pods(plane, ns, "vllm-dry", 1)
    before = read_deployment(plane, ns, "vllm-dry")
    app = serve_app(settings(plane, tmp_path, dry_run=True))

    out = post(app, alert("VLLMEngineHung", {"namespace": ns, "pod": pod["metadata"]["name"]}))

    assert out["status"] == "planned", out
    after = read_deployment(plane, ns, "vllm-dry")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert RESTARTED_AT not in (after["spec"]["template"]["metadata"].get("annotations") or {})
    # The API server saw the write as a dry run (the audit log has it, nothing persisted).
    writes = plane.audited("patch", "deployments", namespace=ns)
    assert writes and all("dryRun=All" in e["requestURI"] for e in writes), writes


# --- scale-engine -----------------------------------------------------------

def test_kv_cache_saturation_scales_out_onto_free_gpus(control_plane, gpu_fleet, namespace,
                                                       serve_app, tmp_path):
    plane, ns = control_plane, namespace
    plane.create(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment(
        ns, "vllm-kv", 1, annotations={"inferenceremediation.io/max-replicas": "3"}))
    (pod,) = ready_pods(plane, ns, "vllm-kv", 1)
    app = serve_app(settings(plane, tmp_path))

    out = post(app, alert("VLLMKVCacheSaturated", {
        "namespace": ns, "pod": pod["metadata"]["name"], "kv_cache_usage": "0.97",
        "num_requests_waiting": "12"}))

    assert out["status"] == "applied", out
    assert read_deployment(plane, ns, "vllm-kv")["spec"]["replicas"] == 2
    both = ready_pods(plane, ns, "vllm-kv", 2)
    assert all(p["spec"]["nodeName"] in gpu_fleet["gpu"] for p in both)
    assert out["verification"]["result"] == "succeeded", out


# --- drain-gpu-node ---------------------------------------------------------

def test_fatal_xid_cordons_taints_and_drains_through_a_real_pdb(control_plane, gpu_fleet,
                                                                namespace, serve_app, tmp_path):
    plane, ns = control_plane, namespace
    allowed_nodes = gpu_fleet["gpu"][:3]
    # Two replicas on two of three GPU nodes (required anti-affinity), a PDB
    # keeping one available; the Xid hits the node of one of them.
    dep = deployment(ns, "vllm-x", 2)
    dep["spec"]["template"]["spec"]["affinity"] = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{
                "key": "kubernetes.io/hostname", "operator": "In", "values": allowed_nodes}]}]}},
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {"app": "vllm-x"}}}]}}
    plane.create(f"/apis/apps/v1/namespaces/{ns}/deployments", dep)
    plane.create(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
                 pdb(ns, "vllm-x", "vllm-x", 1))
    running = ready_pods(plane, ns, "vllm-x", 2)
    victim = running[0]
    node = victim["spec"]["nodeName"]
    free = (set(allowed_nodes) - {p["spec"]["nodeName"] for p in running}).pop()
    wait_for("the disruption controller to compute the PDB", lambda: plane.read(
        f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/vllm-x"
    ).get("status", {}).get("disruptionsAllowed") == 1)
    app = serve_app(settings(plane, tmp_path))
    try:
        out = post(app, alert("GPUXidError", {"Hostname": node, "xid": "79", "gpu": "0"}))

        assert out["status"] == "applied", out
        n = read_node(plane, node)
        assert n["spec"]["unschedulable"] is True
        assert "nvidia.com/gpu-xid" in [t["key"] for t in n["spec"]["taints"]]
        # The victim was evicted through the Eviction API; the scheduler placed
        # its replacement on the one allowed GPU node left free, never on `node`.
        now = ready_pods(plane, ns, "vllm-x", 2)
        assert victim["metadata"]["uid"] not in {p["metadata"]["uid"] for p in now}
        assert free in {p["spec"]["nodeName"] for p in now}, now
        assert all(p["spec"]["nodeName"] != node for p in now), now
        assert out["verification"]["result"] == "succeeded", out["verification"]
        evictions = plane.audited("create", "pods", namespace=ns, subresource="eviction")
        assert evictions and evictions[-1]["responseStatus"]["code"] == 201, evictions
    finally:
        uncordon(plane, node)


def test_pdb_blocks_the_drain_until_its_deadline(control_plane, gpu_fleet, namespace, serve_app,
                                                 tmp_path):
    """minAvailable equal to the replicas: the real disruption controller
    answers 429 to every eviction, the drain ends partial, the pod stays."""
    plane, ns = control_plane, namespace
    node = gpu_fleet["gpu"][1]
    dep = deployment(ns, "vllm-p", 1)
    dep["spec"]["template"]["spec"]["nodeName"] = node  # bypass the scheduler: on `node`
    plane.create(f"/apis/apps/v1/namespaces/{ns}/deployments", dep)
    plane.create(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
                 pdb(ns, "vllm-p", "vllm-p", 1))
    (pod,) = ready_pods(plane, ns, "vllm-p", 1)
    wait_for("the PDB status", lambda: "disruptionsAllowed" in plane.read(
        f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/vllm-p").get("status", {}))
    routes = yaml.safe_load(Path(__file__).resolve().parents[2].joinpath(
        "functions/remediation/defaults/routes.yaml").read_text())
    routes["options"]["drain-gpu-node"]["evict_deadline_seconds"] = 3
    app = serve_app(settings(plane, tmp_path, routes=routes, verify=0))
    try:
        out = post(app, alert("GPUXidError", {"Hostname": node, "xid": "79", "gpu": "1"}))

        assert out["status"] == "partial", out
        assert read_node(plane, node)["spec"]["unschedulable"] is True
        still = plane.get(f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}")
        assert still.status_code == 200 and not still.json()["metadata"].get("deletionTimestamp")
        refused = plane.audited("create", "pods", namespace=ns, subresource="eviction")
        assert refused and {e["responseStatus"]["code"] for e in refused} == {429}, refused
    finally:
        uncordon(plane, node)


def test_xid_on_a_cpu_or_control_plane_node_acts_on_nothing(control_plane, gpu_fleet,
                                                            serve_app, tmp_path):
    plane = control_plane
    app = serve_app(settings(plane, tmp_path))
    for name in gpu_fleet["cpu"] + gpu_fleet["control-plane"]:
        before = read_node(plane, name)
        out = post(app, alert("GPUXidError", {"Hostname": name, "xid": "79", "gpu": "0"}))
        assert out["status"] in ("denied", "skipped", "rejected"), out
        after = read_node(plane, name)
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        assert not after["spec"].get("unschedulable")


# --- rebalance-gpu-pods -----------------------------------------------------

def test_hot_node_evicts_a_gpu_pod_and_verification_tells_where_it_went(
        control_plane, gpu_fleet, namespace, serve_app, tmp_path):
    """Rebalance does not cordon the hot node (documented). A workload that
    prefers that node is placed back on it by the real scheduler, and the
    verification says the fix did not take, instead of calling it a success
    (the emulator has no scheduler and never showed this)."""
    plane, ns = control_plane, namespace
    node = gpu_fleet["gpu"][2]
    dep = deployment(ns, "vllm-hot", 1)
    dep["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
            "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                  "values": gpu_fleet["gpu"][2:]}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": {
            "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                  "values": [node]}]}}]}}
    plane.create(f"/apis/apps/v1/namespaces/{ns}/deployments", dep)
    (pod,) = ready_pods(plane, ns, "vllm-hot", 1)
    assert pod["spec"]["nodeName"] == node
    app = serve_app(settings(plane, tmp_path, verify=8))

    out = post(app, alert("GPUNodeHot", {"Hostname": node, "gpu": "0",
                                         "DCGM_FI_DEV_GPU_TEMP": "92"}))

    assert out["status"] == "applied", out
    evictions = plane.audited("create", "pods", namespace=ns, subresource="eviction")
    assert len(evictions) == 1 and evictions[0]["responseStatus"]["code"] == 201, evictions
    (moved,) = ready_pods(plane, ns, "vllm-hot", 1)
    assert moved["metadata"]["uid"] != pod["metadata"]["uid"]
    assert moved["spec"]["nodeName"] == node  # the scheduler's choice: back where preferred
    assert out["verification"]["result"] == "failed", out["verification"]
    assert f"off {node}" in out["verification"]["detail"], out["verification"]
