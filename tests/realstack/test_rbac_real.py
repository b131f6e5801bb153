"""Least privilege, judged by the real RBAC authorizer.

The ServiceAccounts, ClusterRoles and bindings of ``eventing/base`` are
applied to the real API server. Each function then runs its remediation
with a token of its own ServiceAccount (TokenRequest): what its plans need
succeeds, and everything else (other functions' writes, Secrets) is 403,
asked both by SubjectAccessReview and by sending the request.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from remediation.settings import (
    HTTPSettings,
    KubeSettings,
    PolicySettings,
    Secret,
    Settings,
    VerifySettings,
)

from tests.realstack.components import ControlPlane, kubeconfig_for
from tests.realstack.fleet import alert, deployment, ready_pods
from tests.realstack.test_functions_real import BEARER, post, uncordon

ROOT = Path(__file__).resolve().parents[2]
NS = "remediation"
RBAC_KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
              "RoleBinding"}
FUNCTIONS = ("restart-engine", "drain-gpu-node", "rebalance-gpu-pods", "scale-engine")

# (verb, group, resource, subresource) a function's plans need, on any namespace.
NEEDS: dict[str, list[tuple[str, str, str, str]]] = {
    "restart-engine": [("patch", "apps", "deployments", ""), ("patch", "apps", "statefulsets", ""),
                       ("delete", "", "pods", ""), ("create", "", "events", "")],
    "drain-gpu-node": [("patch", "", "nodes", ""), ("create", "", "pods", "eviction"),
                       ("patch", "apps", "deployments", ""), ("create", "", "events", "")],
    "rebalance-gpu-pods": [("create", "", "pods", "eviction"), ("create", "", "events", "")],
    "scale-engine": [("patch", "apps", "deployments", "scale"), ("create", "", "events", "")],
}
# What no function may do, and what each must not borrow from the others.
NEVER = [("get", "", "secrets", ""), ("list", "", "secrets", ""),
         ("create", "rbac.authorization.k8s.io", "clusterrolebindings", ""),
         ("delete", "", "nodes", ""), ("delete", "", "namespaces", "")]
NOT_MINE: dict[str, list[tuple[str, str, str, str]]] = {
    "restart-engine": [("create", "", "pods", "eviction"), ("patch", "", "nodes", "")],
    "drain-gpu-node": [("patch", "apps", "deployments", "scale")],
    "rebalance-gpu-pods": [("patch", "", "nodes", ""), ("patch", "apps", "deployments", ""),
                           ("delete", "", "pods", "")],
    "scale-engine": [("patch", "", "nodes", ""), ("create", "", "pods", "eviction"),
                     ("delete", "", "pods", "")],
}


@pytest.fixture(scope="module")
def rbac_applied(control_plane: ControlPlane) -> list[dict[str, Any]]:
    rendered = subprocess.run(["kubectl", "kustomize", "eventing/base"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=True).stdout
    objects = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in RBAC_KINDS]
    objects.sort(key=lambda o: o["kind"] != "Namespace")
    for r, obj in zip(control_plane.apply_objects(objects), objects):
        assert r.status_code in (200, 201), f"{obj['kind']}/{obj['metadata']['name']}: {r.text}"
    return objects


def allowed(plane: ControlPlane, sa: str, verb: str, group: str, resource: str, sub: str,
            namespace: str = "llm-serving") -> bool:
    attrs = {"verb": verb, "group": group, "resource": resource}
    if sub:
        attrs["subresource"] = sub
    if resource not in ("nodes", "namespaces", "clusterrolebindings"):
        attrs["namespace"] = namespace
    review = plane.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": f"system:serviceaccount:{NS}:{sa}",
                 "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NS}"],
                 "resourceAttributes": attrs}})
    return bool(review["status"].get("allowed"))


def sa_token(plane: ControlPlane, sa: str) -> str:
    tr = plane.create(f"/api/v1/namespaces/{NS}/serviceaccounts/{sa}/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600}})
    return tr["status"]["token"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_may_do_what_its_plans_need_and_nothing_else(control_plane, rbac_applied,
                                                                   function):
    granted = {n: allowed(control_plane, function, *n) for n in NEEDS[function]}
    assert all(granted.values()), granted
    refused = {n: allowed(control_plane, function, *n) for n in NEVER + NOT_MINE[function]}
    assert not any(refused.values()), {k: v for k, v in refused.items() if v}
    # The ledger's Leases: only in the project's own namespace.
    assert allowed(control_plane, function, "create", "coordination.k8s.io", "leases", "", NS)
    assert not allowed(control_plane, function, "create", "coordination.k8s.io", "leases", "",
                       "llm-serving")


def settings_as(plane: ControlPlane, tmp_path: Path, sa: str, token: str,
                routes_fn: str) -> Settings:
    cfg = tmp_path / f"kubeconfig-{sa}"
    cfg.write_text(yaml.safe_dump(kubeconfig_for(plane.url, plane.ca, token, sa)))
    data = tmp_path / "policy-data.yaml"
    data.write_text(yaml.safe_dump({"remediation_config": {"limits": {
        "max_cordoned_gpu_nodes_percent": 50}}}))
    return Settings(dry_run=False, functions=(routes_fn,),
                    http=HTTPSettings(alertmanager_bearer=Secret(BEARER)),
                    kube=KubeSettings(kubeconfig=str(cfg), timeout=10.0),
                    policy=PolicySettings(data_file=str(data)),
                    verify=VerifySettings(deadline=90, interval=0.5))


def test_restart_engine_acts_with_its_own_token_and_is_refused_the_rest(
        control_plane, gpu_fleet, rbac_applied, namespace, serve_app, tmp_path):
    plane, ns = control_plane, namespace
    plane.create(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment(ns, "vllm-sa", 1))
    (pod,) = ready_pods(plane, ns, "vllm-sa", 1)
    token = sa_token(plane, "restart-engine")
    app = serve_app(settings_as(plane, tmp_path, "restart-engine", token, "restart-engine"))

    out = post(app, alert("VLLMEngineHung", {"namespace": ns, "pod": pod["metadata"]["name"]}))

    assert out["status"] == "applied", out
    assert out["verification"]["result"] == "succeeded", out
    # The write was made as the function's ServiceAccount (the audit log says who).
    patches = plane.audited("patch", "deployments", namespace=ns)
    assert patches and patches[-1]["user"]["username"] == \
        "system:serviceaccount:remediation:restart-engine", patches[-1]["user"]
    # The same token may not evict, cordon or read Secrets.
    evict = plane.request("POST", f"/api/v1/namespaces/{ns}/pods/"
                          f"{ready_pods(plane, ns, 'vllm-sa', 1)[0]['metadata']['name']}/eviction",
                          {"apiVersion": "policy/v1", "kind": "Eviction",
                           "metadata": {"name": "x", "namespace": ns}}, token=token)
    cordon = plane.request("PATCH", f"/api/v1/nodes/{gpu_fleet['gpu'][3]}",
                           {"spec": {"unschedulable": True}}, token=token,
                           content_type="application/merge-patch+json")
    secrets = plane.request("GET", f"/api/v1/namespaces/{ns}/secrets", token=token)
    assert (evict.status_code, cordon.status_code, secrets.status_code) == (403, 403, 403)
    assert not plane.read(f"/api/v1/nodes/{gpu_fleet['gpu'][3]}")["spec"].get("unschedulable")


def engine_and_drain_app(plane: ControlPlane, ns: str, name: str, node: str, serve_app: Any,
                         tmp_path: Path) -> Any:
    """A ready one-pod engine pinned to ``node``, and the app serving
    drain-gpu-node with a token of that function's own ServiceAccount."""
    dep = deployment(ns, name, 1)
    dep["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    plane.create(f"/apis/apps/v1/namespaces/{ns}/deployments", dep)
    ready_pods(plane, ns, name, 1)
    token = sa_token(plane, "drain-gpu-node")
    return serve_app(settings_as(plane, tmp_path, "drain-gpu-node", token, "drain-gpu-node"))


def test_drain_acts_with_its_own_token(control_plane, gpu_fleet, rbac_applied, namespace,
                                       serve_app, tmp_path):
    plane, ns = control_plane, namespace
    node = gpu_fleet["gpu"][3]
    app = engine_and_drain_app(plane, ns, "vllm-dn", node, serve_app, tmp_path)
    try:
        out = post(app, alert("GPUXidError", {"Hostname": node, "xid": "79", "gpu": "2"}))
        assert out["status"] in ("applied", "partial"), out
        assert plane.read(f"/api/v1/nodes/{node}")["spec"]["unschedulable"] is True
        writers = {e["user"]["username"] for e in plane.audited("patch", "nodes", name=node)}
        assert "system:serviceaccount:remediation:drain-gpu-node" in writers, writers
        assert "admin" not in writers
    finally:
        uncordon(plane, node)


def test_an_application_xid_restarts_the_workload_with_the_drain_functions_token(
        control_plane, gpu_fleet, rbac_applied, namespace, serve_app, tmp_path):
    """Xid 13 restarts the GPU pod's Deployment: the drain function's own
    ServiceAccount needs the restart's rights (the emulator does not enforce
    RBAC; this test found them missing and 403 on a real cluster)."""
    plane, ns = control_plane, namespace
    node = gpu_fleet["gpu"][3]
    app = engine_and_drain_app(plane, ns, "vllm-x13", node, serve_app, tmp_path)

    out = post(app, alert("GPUXidError", {"Hostname": node, "xid": "13", "gpu": "0"}))

    assert out["status"] == "applied", out
    dep = plane.read(f"/apis/apps/v1/namespaces/{ns}/deployments/vllm-x13")
    assert "kubectl.kubernetes.io/restartedAt" in dep["spec"]["template"]["metadata"]["annotations"]
    assert not plane.read(f"/api/v1/nodes/{node}")["spec"].get("unschedulable")

