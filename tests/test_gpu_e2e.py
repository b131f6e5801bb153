"""GPU fleet scenarios end to end: demo events over real HTTP to the app, the
real kubernetes client against the API emulator (eviction with PDB
arithmetic, field selectors), the embedded policy. Assertions are on the
fleet's end state and the outcomes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediation.cli import demo_dir
from remediation.routing import Routes, load_routes
from remediation.settings import PolicySettings, VerifySettings

from tests.plugins.app import BEARER

EVENTS = demo_dir() / "events"
AUTH = {"Authorization": f"Bearer {BEARER}"}
NS = "llm-serving"
QWEN = "vllm-qwen-14b-7c6b5a4d3-k5j6h"
LLAMA70 = "llama-70b-predictor-7b8c9d6f5-m3n4b"


def payload(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def post(app: Any, name: str) -> dict[str, Any]:
    doc = payload(name)
    if "sid" in doc:
        from tests.plugins.app import SPLUNK_TOKEN

        resp = app.post(f"/webhooks/splunk/{SPLUNK_TOKEN}", json=doc)
    else:
        resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    assert resp.status_code in (200, 503), resp.text
    (outcome,) = resp.json()["outcomes"]
    outcome["http"] = resp.status_code
    return outcome


def policy_with(tmp_path: Path, **limits: Any) -> PolicySettings:
    f = tmp_path / "policy-data.yaml"
    f.write_text(yaml.safe_dump({"remediation_config": {"limits": limits}}))
    return PolicySettings(data_file=str(f))


def routes_with(function: str, **options: Any) -> Routes:
    base = load_routes()
    data = {"alerts": dict(base.alerts), "searches": dict(base.searches),
            "options": {k: dict(v) for k, v in base.options.items()}}
    data["options"].setdefault(function, {}).update(options)
    return Routes.from_mapping(data)


def node(emu: Any, name: str) -> dict[str, Any]:
    return emu.get("nodes", name)


def taint_keys(n: dict[str, Any]) -> list[str]:
    return [t["key"] for t in n["spec"].get("taints") or []]


def test_fatal_xid_cordons_taints_marks_and_drains_only_gpu_workloads(fleet, make_settings,
                                                                      serve_app, tmp_path):
    ds_pod = fleet.get("pods", "gpu-operator", "nvidia-device-plugin-daemonset-00004")
    ds_pod["metadata"].update(name="nvidia-device-plugin-daemonset-00005", uid="ds-5")
    ds_pod["spec"]["nodeName"] = "gpu-node-5"
    fleet.add(ds_pod)
    app = serve_app(make_settings(policy=policy_with(tmp_path, max_cordoned_gpu_nodes_percent=50)))
    out = post(app, "10-dcgm-xid79-fell-off-bus")
    assert out["status"] == "applied", out
    n = node(fleet, "gpu-node-5")
    assert n["spec"]["unschedulable"] is True
    assert "nvidia.com/gpu-xid" in taint_keys(n)
    assert n["metadata"]["labels"]["inferenceremediation.io/reboot-required"] == "true"
    assert "inferenceremediation.io/cordoned-by" in n["metadata"]["annotations"]
    assert fleet.get("pods", NS, QWEN) is None  # evicted
    remaining = {p["metadata"]["name"]
                 for p in fleet.list("pods", field_selector="spec.nodeName=gpu-node-5")}
    assert "debug-cuda" in remaining  # no controller: needs consent
    assert "embed-bge-6f5e4d3c2-w7v6u" in remaining  # emptyDir: needs consent
    assert "nvidia-device-plugin-daemonset-00005" in remaining  # DaemonSet pod: skipped
    evictions = [r for r in fleet.requests if r.resource == "pods/eviction"]
    assert [r.name for r in evictions] == [QWEN]



def test_a_pod_whose_namespace_is_being_deleted_does_not_fail_the_drain(fleet, make_settings,
                                                                       serve_app, tmp_path):
    """Found by the realstack tier: the API server refuses an Eviction in a
    terminating namespace (403, cause NamespaceTerminating); the pod goes with
    its namespace, so the drain goes on, as kubectl drain does."""
    namespace = fleet.get("namespaces", "", NS)
    namespace["status"] = {"phase": "Terminating"}
    fleet.add(namespace)
    app = serve_app(make_settings(policy=policy_with(tmp_path, max_cordoned_gpu_nodes_percent=50),
                                  verify=VerifySettings(deadline=0)))
    out = post(app, "10-dcgm-xid79-fell-off-bus")
    assert out["status"] == "applied", out
    assert node(fleet, "gpu-node-5")["spec"]["unschedulable"] is True
    refused = [r for r in fleet.requests if r.resource == "pods/eviction"]
    assert [(r.name, r.status) for r in refused] == [(QWEN, 403)]
    assert any("namespace terminating" in reason for reason in out["reasons"]), out

def test_circuit_breaker_refuses_the_node_that_would_cross_the_limit(fleet, make_settings,
                                                                     serve_app, tmp_path):
    # 7 GPU nodes, 2 already cordoned: a third is 43% (allowed at 50%), a fourth 57%.
    app = serve_app(make_settings(policy=policy_with(tmp_path, max_cordoned_gpu_nodes_percent=50)))
    assert post(app, "10-dcgm-xid79-fell-off-bus")["status"] == "applied"
    before = node(fleet, "gpu-node-4")
    out = post(app, "12-splunk-xid48-kernel-log")
    assert out["status"] == "denied"
    assert any("circuit breaker: 4 of 7 GPU nodes" in r for r in out["reasons"]), out["reasons"]
    assert node(fleet, "gpu-node-4") == before
    assert fleet.get("pods", NS, LLAMA70) is not None


def test_pdb_blocking_past_the_deadline_is_reported_partial(fleet, make_settings, serve_app,
                                                           tmp_path):
    fleet.add({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "llama-70b", "namespace": NS},
               "spec": {"minAvailable": 1, "selector": {"matchLabels": {
                   "app": "llama-70b-predictor"}}}})
    app = serve_app(make_settings(policy=policy_with(tmp_path, max_cordoned_gpu_nodes_percent=50)),
                    routes=routes_with("drain-gpu-node", evict_deadline_seconds=1.5))
    out = post(app, "12-splunk-xid48-kernel-log")
    assert out["status"] == "partial", out
    assert any("disruption budget" in r.lower() for r in out["reasons"]), out["reasons"]
    assert node(fleet, "gpu-node-4")["spec"]["unschedulable"] is True  # cordoned first
    assert fleet.get("pods", NS, LLAMA70) is not None  # the PDB held
    tries = [r for r in fleet.requests if r.resource == "pods/eviction"]
    assert len(tries) >= 2 and all(r.status == 429 for r in tries)  # retried with backoff


def test_recovery_uncordons_only_our_node(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    theirs = node(fleet, "gpu-node-6")
    out = post(app, "15-dcgm-xid48-resolved-uncordon")
    assert out["status"] == "applied", out
    ours = node(fleet, "gpu-node-7")
    assert not ours["spec"].get("unschedulable")
    assert "nvidia.com/gpu-xid" not in taint_keys(ours)
    assert "inferenceremediation.io/cordoned-by" not in (ours["metadata"].get("annotations") or {})
    assert node(fleet, "gpu-node-6") == theirs  # someone else's cordon: untouched
    out = post(app, "14-dcgm-xid95-node-cordoned-by-someone-else")
    assert out["status"] == "skipped"
    assert node(fleet, "gpu-node-6") == theirs


def test_rebalance_moves_a_gpu_pod_off_the_hot_node_within_its_pdb(fleet, make_settings,
                                                                   serve_app):
    app = serve_app(make_settings())
    out = post(app, "16-gpu-node-hot")
    assert out["status"] == "applied", out
    assert fleet.get("pods", NS, QWEN) is None
    assert not node(fleet, "gpu-node-5")["spec"].get("unschedulable")


def test_kv_cache_saturation_scales_out_by_a_step_up_to_the_maximum(fleet, make_settings,
                                                                    serve_app):
    app = serve_app(make_settings())
    before = fleet.get("deployments", NS, "vllm-mistral-chat")["spec"]["replicas"]
    out = post(app, "17-vllm-kv-cache-saturated")
    assert out["status"] == "applied", out
    assert fleet.get("deployments", NS, "vllm-mistral-chat")["spec"]["replicas"] == before + 1
    out = post(app, "18-vllm-kv-cache-no-maximum")
    assert out["status"] == "skipped" and "no maximum" in " ".join(out["reasons"])
    assert fleet.get("deployments", NS, "vllm-llama-7b")["spec"]["replicas"] == 2


def test_a_scale_out_that_landed_unanswered_is_not_repeated(fleet, make_settings, serve_app):
    """The API applies the scale but the answer never comes (a timeout): the
    claim is kept with its plan, and a redelivery (before or after the claim
    expires) reads it and sees the scale took effect: one scale-out. Released
    instead, the redelivery would have planned from the new replica count and
    scaled again."""
    import time
    from dataclasses import replace as _replace

    from remediation.settings import LedgerSettings

    settings = make_settings()
    app = serve_app(_replace(settings, ledger=LedgerSettings(claim_ttl=2.0)))
    before = fleet.get("deployments", NS, "vllm-mistral-chat")["spec"]["replicas"]
    fleet.delay(3.0, times=1, method="PATCH", path_contains="vllm-mistral-chat/scale")
    out = post(app, "17-vllm-kv-cache-saturated")
    assert out["status"] == "retry" and "claim is kept" in " ".join(out["reasons"])
    deadline = time.monotonic() + 10
    while fleet.get("deployments", NS, "vllm-mistral-chat")["spec"]["replicas"] == before \
            and time.monotonic() < deadline:
        time.sleep(0.05)  # the API carries the scale out after the delay
    assert fleet.get("deployments", NS, "vllm-mistral-chat")["spec"]["replicas"] == before + 1
    for wait in (0.0, 2.1):  # Knative redelivers at once; again after the claim expired
        time.sleep(wait)
        out = post(app, "17-vllm-kv-cache-saturated")
        assert out["status"] == "duplicate", out
        assert "earlier attempt for this incident scaled it to" in " ".join(out["reasons"])
    assert fleet.get("deployments", NS, "vllm-mistral-chat")["spec"]["replicas"] == before + 1
    scales = [r for r in fleet.requests if r.method == "PATCH" and r.resource ==
              "deployments/scale" and r.name == "vllm-mistral-chat"]
    assert len(scales) == 1


def test_a_scale_out_refused_with_429_is_released_and_retried_at_once(fleet, make_settings,
                                                                     serve_app):
    """A 429 says the write did not happen: nothing to keep, the claim is
    released and Knative's redelivery scales (once)."""
    app = serve_app(make_settings())
    before = fleet.get("deployments", NS, "vllm-mistral-chat")["spec"]["replicas"]
    fleet.fail(429, times=1, method="PATCH", path_contains="vllm-mistral-chat/scale",
               retry_after=1)
    out = post(app, "17-vllm-kv-cache-saturated")
    assert out["status"] == "retry" and "claim is kept" not in " ".join(out["reasons"])
    assert fleet.get("deployments", NS, "vllm-mistral-chat")["spec"]["replicas"] == before
    out = post(app, "17-vllm-kv-cache-saturated")
    assert out["status"] == "applied", out
    assert fleet.get("deployments", NS, "vllm-mistral-chat")["spec"]["replicas"] == before + 1


def test_default_policy_breaker_denies_the_first_drain_on_this_small_fleet(fleet, make_settings,
                                                                           serve_app):
    app = serve_app(make_settings())
    out = post(app, "10-dcgm-xid79-fell-off-bus")
    assert out["status"] == "denied"
    assert not node(fleet, "gpu-node-5")["spec"].get("unschedulable")
    assert fleet.get("pods", NS, QWEN) is not None


@pytest.mark.parametrize("name", ["10-dcgm-xid79-fell-off-bus", "16-gpu-node-hot"])
def test_api_down_mid_fleet_action_answers_retry(fleet, make_settings, serve_app, tmp_path, name):
    app = serve_app(make_settings(policy=policy_with(tmp_path, max_cordoned_gpu_nodes_percent=50)))
    fleet.fail(status=503, times=None, method="POST", path_contains="eviction")
    fleet.fail(status=503, times=None, method="PATCH")
    out = post(app, name)
    assert out["http"] == 503 and out["status"] == "retry"
    assert fleet.get("pods", NS, QWEN) is not None
