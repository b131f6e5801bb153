"""Issue 15, findings 2 and 8, end to end: an alert that names the wrong
node or workload is refused by the shipped policy, from facts the pipeline
reads from the (emulated) cluster, and nothing in the cluster changes.

- An Xid alert naming a CPU node, or a control-plane node (even one with
  GPUs), cordons and drains nothing.
- A hung-engine alert naming a workload outside an inference namespace
  (istio-system), or a workload that is not an inference engine (a payments
  service in an inference namespace), restarts nothing.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediation.cli import demo_dir
from remediation.settings import PolicySettings

from tests.plugins.app import BEARER

EVENTS = demo_dir() / "events"
AUTH = {"Authorization": f"Bearer {BEARER}"}


def payload(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def writes(emu: Any) -> list[Any]:
    return [r for r in emu.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")
            and r.resource != "events"]


def send(app: Any, doc: dict[str, Any]) -> dict[str, Any]:
    resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    assert resp.status_code == 200, resp.text
    (outcome,) = resp.json()["outcomes"]
    return outcome


@pytest.fixture
def app(fleet: Any, make_settings: Any, serve_app: Any, tmp_path: Path) -> Any:
    data = tmp_path / "policy-data.yaml"  # room in the circuit breaker: only the rule decides
    data.write_text(yaml.safe_dump({"remediation_config": {"limits": {
        "max_cordoned_gpu_nodes_percent": 100}}}))
    return serve_app(make_settings(policy=PolicySettings(data_file=str(data))))


def xid_on(node: str) -> dict[str, Any]:
    doc = payload("10-dcgm-xid79-fell-off-bus")
    doc["alerts"][0]["labels"]["Hostname"] = node
    doc["alerts"][0]["fingerprint"] = f"{abs(hash(node)):016x}"[:16]
    return doc


def test_xid_alert_on_a_gpu_node_still_drains_it(app, fleet):
    out = send(app, xid_on("gpu-node-5"))
    assert out["status"] == "applied", out
    assert fleet.get("nodes", "gpu-node-5")["spec"]["unschedulable"] is True


def test_xid_alert_naming_a_cpu_node_cordons_nothing(app, fleet):
    before = copy.deepcopy(fleet.get("nodes", "cpu-node-1"))
    out = send(app, xid_on("cpu-node-1"))
    # the planner sees it first (nothing to drain); the policy's own rule for
    # a plan that did reach it is exercised in the Rego tests and test_opa_real
    assert out["status"] == "skipped", out
    assert "no nvidia.com/gpu capacity" in out["reasons"][0]
    assert writes(fleet) == []
    assert fleet.get("nodes", "cpu-node-1") == before


def test_xid_alert_naming_a_control_plane_node_cordons_nothing(app, fleet):
    node = fleet.get("nodes", "gpu-node-5")
    node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = ""
    fleet.add(node)
    before = copy.deepcopy(fleet.get("nodes", "gpu-node-5"))
    out = send(app, xid_on("gpu-node-5"))
    assert out["status"] == "denied", out
    assert "node gpu-node-5 is a control-plane node: never touched" in out["reasons"]
    assert writes(fleet) == []
    assert fleet.get("nodes", "gpu-node-5") == before
    assert not [r for r in fleet.requests if r.resource == "pods/eviction"]


def hung(namespace: str, deployment: str) -> dict[str, Any]:
    doc = payload("01-vllm-hung")
    labels = doc["alerts"][0]["labels"]
    labels.pop("pod", None)
    labels.update(namespace=namespace, deployment=deployment)
    doc["alerts"][0]["fingerprint"] = f"{abs(hash((namespace, deployment))):016x}"[:16]
    return doc


def deployment(namespace: str, name: str, image: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "main", "image": image}]}}}}


def test_restart_outside_an_inference_namespace_is_refused(app, fleet):
    fleet.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}})
    fleet.add(deployment("istio-system", "istiod", "docker.io/istio/pilot:1.24"))
    before = copy.deepcopy(fleet.get("deployments", "istio-system", "istiod"))
    out = send(app, hung("istio-system", "istiod"))
    assert out["status"] == "denied", out
    assert any("istio-system is not an inference namespace" in r for r in out["reasons"])
    assert writes(fleet) == []
    assert fleet.get("deployments", "istio-system", "istiod") == before


def test_restart_of_a_non_engine_in_an_inference_namespace_is_refused(app, fleet):
    fleet.add(deployment("llm-serving", "payments", "registry.example/payments:4.2"))
    before = copy.deepcopy(fleet.get("deployments", "llm-serving", "payments"))
    out = send(app, hung("llm-serving", "payments"))
    assert out["status"] == "denied", out
    assert any("Deployment/llm-serving/payments is not an inference engine" in r
               for r in out["reasons"]), out["reasons"]
    assert writes(fleet) == []
    assert fleet.get("deployments", "llm-serving", "payments") == before


def test_restart_of_an_engine_in_an_inference_namespace_still_works(app, fleet):
    out = send(app, hung("llm-serving", "vllm-llama-7b"))
    assert out["status"] == "applied", out
