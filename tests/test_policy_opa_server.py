"""OPA server mode through opa-python-client against a loopback server that
speaks OPA's REST API: the same answers as the embedded engine, and the
faults (down, slow, 500, undefined) fail closed or ask for a retry."""

from __future__ import annotations

import json
import os
from datetime import datetime, UTC
from types import MappingProxyType

import pytest

from remediation.clients.opa import OpaServerPolicyEngine
from remediation.clients.rego import EmbeddedPolicyEngine
from remediation.errors import DependencyUnavailable
from remediation.guard.policy import decide, policy_input
from remediation.model import ObjectRef, Plan, Signal, Step, TYPE_ALERT_FIRING, freeze
from remediation.settings import PolicySettings


NOW = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
SIGNAL = Signal(event_id="e", source="/alertmanager/r", type=TYPE_ALERT_FIRING, status="firing",
                name="VLLMEngineHung", labels=MappingProxyType({"namespace": "llm"}))


def plan(action: str, kind: str, ns: str, params: dict | None = None, verb: str = "patch") -> Plan:
    steps = (Step(verb, kind, ns, "x", "why"),)
    return Plan("f", action, ObjectRef(kind, ns, "x"), steps, key="k",
                params=freeze(params or {}))


CASES = [
    plan("rollout-restart", "Deployment", "llm-serving"),
    plan("rollout-restart", "Deployment", "kube-system"),
    plan("rollout-restart", "Deployment", "openshift-ai"),
    plan("rm-rf", "Deployment", "llm"),
    plan("cordon-drain", "Node", "", {"cordon": True, "gpu_nodes": 4,
                                      "cordoned_gpu_nodes_after": 2}),
    plan("scale-out", "Deployment", "llm", {"to_replicas": 5, "max_replicas": 4}, verb="scale"),
]


def inputs(p: Plan, stats: dict | None = None) -> dict:
    return policy_input(p, SIGNAL, actor="t", via="trigger", cluster="", self_namespace="remediation",
                        dry_run=False, stats=stats or {}, now=NOW)


def server_engine(url: str, **kw) -> OpaServerPolicyEngine:
    return OpaServerPolicyEngine(PolicySettings(opa_url=url, **kw))


@pytest.mark.parametrize("p", CASES, ids=lambda p: f"{p.action}-{p.target.namespace}")
def test_server_and_embedded_give_the_same_decision(opa_server, p):
    embedded = EmbeddedPolicyEngine()
    server = server_engine(opa_server.url)
    try:
        a = decide(embedded, p, SIGNAL, actor="t", via="trigger", cluster="",
                   self_namespace="remediation", dry_run=False, stats={}, now=NOW)
        b = decide(server, p, SIGNAL, actor="t", via="trigger", cluster="",
                   self_namespace="remediation", dry_run=False, stats={}, now=NOW)
    finally:
        embedded.close()
        server.close()
    assert (a.allow, a.reasons, a.needs_approval) == (b.allow, b.reasons, b.needs_approval)


#: what guard.targets reads from the cluster for CASES[0]: an engine in an
#: inference namespace
ENGINE_FACTS = {"namespaces": {"llm-serving": {"found": True, "labels": {
                    "inferenceremediation.io/inference": "true"}}},
                "workloads": {"Deployment/llm-serving/x": {
                    "found": True, "kind": "Deployment", "labels": {}, "template_labels": {},
                    "images": ["vllm/vllm-openai:v0.11.0"]}}}


def test_decision_id_is_kept(opa_server):
    opa_server.decision_logging = True
    d = decide(server_engine(opa_server.url), CASES[0], SIGNAL, actor="t", via="trigger",
               cluster="", self_namespace="remediation", dry_run=False, stats={}, now=NOW,
               facts=ENGINE_FACTS)
    assert d.allow and len(d.decision_id) == 36


def test_undefined_result_denies(opa_server):
    opa_server.mode = "undefined"
    d = decide(server_engine(opa_server.url), CASES[0], SIGNAL, actor="t", via="trigger",
               cluster="", self_namespace="remediation", dry_run=False, stats={}, now=NOW)
    assert not d.allow and "undefined" in d.reasons[0]


def test_500_is_retried_then_unavailable(opa_server):
    opa_server.mode = "error"
    engine = server_engine(opa_server.url, opa_retries=2)
    with pytest.raises(DependencyUnavailable, match="500"):
        engine.evaluate(inputs(CASES[0]))
    assert opa_server.requests == 3


def test_slow_past_the_timeout_is_unavailable(opa_server):
    opa_server.mode, opa_server.slow_seconds = "slow", 1.0
    engine = server_engine(opa_server.url, opa_timeout=0.2, opa_retries=0)
    with pytest.raises(DependencyUnavailable, match="unreachable"):
        engine.evaluate(inputs(CASES[0]))


def test_down_is_unavailable(opa_server):
    url = opa_server.url
    opa_server.stop()
    with pytest.raises(DependencyUnavailable):
        server_engine(url, opa_retries=1).evaluate(inputs(CASES[0]))


def test_end_to_end_opa_down_means_no_action_and_a_retry(fleet, make_settings, serve_app,
                                                         opa_server):
    from remediation.cli import demo_dir
    from tests.plugins.app import BEARER

    doc = json.loads((demo_dir() / "events" / "01-vllm-hung.json").read_text())
    app = serve_app(make_settings(policy=PolicySettings(opa_url=opa_server.url, opa_retries=0,
                                                        opa_timeout=0.5)))
    opa_server.mode = "error"
    resp = app.post("/webhooks/alertmanager", json=doc, headers={"Authorization": f"Bearer {BEARER}"})
    assert resp.status_code == 503
    dep = fleet.get("deployments", "llm-serving", "vllm-llama-7b")
    assert "kubectl.kubernetes.io/restartedAt" not in (
        dep["spec"]["template"]["metadata"].get("annotations") or {})
    opa_server.mode = "ok"
    resp = app.post("/webhooks/alertmanager", json=doc, headers={"Authorization": f"Bearer {BEARER}"})
    assert resp.json()["outcomes"][0]["status"] == "applied"


@pytest.mark.realopa
@pytest.mark.skipif(not os.environ.get("OPA_URL"), reason="OPA_URL not set: no real OPA server")
def test_real_opa_gives_the_embedded_answers():
    """Uploads the project's policies and data to the real OPA, then compares."""
    import httpx

    from remediation.clients.rego import default_policy_dir, load_policy_sources

    url = os.environ["OPA_URL"].rstrip("/")
    modules, data = load_policy_sources(default_policy_dir())
    for name, text in modules.items():
        httpx.put(f"{url}/v1/policies/remediation-{name}", content=text,
                  headers={"Content-Type": "text/plain"}, timeout=10).raise_for_status()
    httpx.put(f"{url}/v1/data/remediation_config", json=data["remediation_config"],
              timeout=10).raise_for_status()
    embedded, server = EmbeddedPolicyEngine(), server_engine(url)
    for p in CASES:
        assert embedded.evaluate(inputs(p)) == {k: v for k, v in server.evaluate(inputs(p)).items()
                                                if k != "decision_id"}


def test_embedded_input_that_is_not_plain_json_is_encoded_not_refused():
    """Plain JSON-shaped input goes to the engine as it is; anything else (a
    datetime an operator's extension put in) falls back to JSON text with
    ``str()``: the decision is the same, never an engine error."""
    engine = EmbeddedPolicyEngine()
    try:
        plain = {"action": "rollout-restart", "plan": {"steps": []}, "stats": {},
                 "facts": {"workloads": ENGINE_FACTS["workloads"]}}
        odd = {**plain, "extra": datetime(2026, 1, 1, tzinfo=UTC), "big": 10**30}
        assert engine.evaluate(plain)["reasons"] == engine.evaluate(odd)["reasons"] \
            == ["plan has no steps"]
    finally:
        engine.close()
