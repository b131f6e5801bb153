"""Vault end to end: the HTTP app leases a plan-scoped token from Vault (real
hvac over HTTP to the loopback Vault), the API emulator accepts writes ONLY
with a token Vault issued for that namespace (the ambient identity may only
read), and the lease is revoked after every execution, failed ones too."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from remediation.cli import demo_dir
from tests.kube_emulator import TokenScope
from tests.plugins.app import BEARER

AUTH = {"Authorization": f"Bearer {BEARER}"}
EVENTS = demo_dir() / "events"
READER = "ambient-reader"  # the token in the kubeconfig the fixtures write


def payload(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


@pytest.fixture
def guarded(fleet, vault_server):
    """Only Vault-issued tokens may write, each within its lease's namespace."""

    def lookup(token: str) -> TokenScope | None:
        if token == READER:
            return TokenScope(verbs=frozenset({"get", "list", "watch"}))
        with vault_server.lock:
            issued = list(vault_server.issued_sa_tokens)
            requests = list(vault_server.creds_requests)
        if token in issued:
            req = requests[issued.index(token)]
            if req.get("cluster_role_binding"):
                return TokenScope()
            return TokenScope(namespaces=frozenset({req["kubernetes_namespace"]}))
        return None

    fleet.authorize_with(lookup)
    # the demo alerts name cluster gpu-east: Vault's KV says where its API server is
    vault_server.put_kv("remediation/clusters/gpu-east", {"api_server": fleet.url})
    return fleet


def app_with_vault(serve_app, make_settings, vault_server):
    return serve_app(make_settings(vault=vault_server.settings()))


def writes(emu) -> list[Any]:
    return [r for r in emu.requests if r.method in ("POST", "PATCH", "PUT", "DELETE")]


def test_actions_use_a_vault_token_scoped_to_the_plan_and_it_is_revoked(
        guarded, vault_server, serve_app, make_settings, caplog):
    caplog.set_level(logging.DEBUG)
    app = app_with_vault(serve_app, make_settings, vault_server)
    resp = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json()["outcomes"][0]["status"] == "applied", resp.json()
    (patch,) = [w for w in writes(guarded) if w.resource == "deployments"]
    assert patch.status == 200
    assert patch.token in vault_server.issued_sa_tokens and patch.token != READER
    (creds,) = vault_server.creds_requests
    assert creds["role"] == "restart-engine" and creds["kubernetes_namespace"] == "llm-serving"
    assert vault_server.active_leases == {} and len(vault_server.revoked_leases) == 1
    reads = [r for r in guarded.requests if r.method == "GET"]
    assert reads and all(r.token == READER for r in reads)  # planning reads: ambient identity
    secrets = vault_server.issued_tokens()
    captured = caplog.text + resp.text
    assert not [s for s in secrets if s in captured]


def test_the_ambient_identity_cannot_write(guarded, serve_app, make_settings):
    app = serve_app(make_settings())  # no Vault: the ambient (read-only) token tries to write
    resp = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=AUTH)
    (outcome,) = resp.json()["outcomes"]
    assert outcome["status"] == "failed"
    assert any("403" in r for r in outcome["reasons"]), outcome["reasons"]
    dep = guarded.get("deployments", "llm-serving", "vllm-llama-7b")
    assert "kubectl.kubernetes.io/restartedAt" not in (
        dep["spec"]["template"]["metadata"].get("annotations") or {})


def test_a_namespace_outside_the_vault_role_fails_without_retry(guarded, vault_server, serve_app,
                                                                make_settings):
    dep = guarded.get("deployments", "llm-serving", "vllm-llama-7b")
    dep["metadata"]["namespace"] = "research"
    guarded.add(dep)
    # the policy allows it (an inference namespace): Vault is what refuses
    guarded.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "research", "labels": {"inferenceremediation.io/inference": "true"}}})
    doc = payload("01-vllm-hung")
    doc["alerts"][0]["labels"].update(namespace="research", deployment="vllm-llama-7b")
    del doc["alerts"][0]["labels"]["pod"]
    app = app_with_vault(serve_app, make_settings, vault_server)
    resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    assert resp.status_code == 200
    (outcome,) = resp.json()["outcomes"]
    assert outcome["status"] == "failed"
    assert any("not present in role's allowed_kubernetes_namespaces" in r
               for r in outcome["reasons"]), outcome["reasons"]
    assert [w for w in writes(guarded) if w.resource == "deployments"] == []


def test_sealed_vault_means_no_action_and_a_retry(guarded, vault_server, serve_app, make_settings):
    app = app_with_vault(serve_app, make_settings, vault_server)
    vault_server.seal()
    resp = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=AUTH)
    assert resp.status_code == 503
    assert [w for w in writes(guarded) if w.resource == "deployments"] == []
    vault_server.unseal()
    resp = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=AUTH)
    assert resp.json()["outcomes"][0]["status"] == "applied"


def test_lease_is_revoked_after_a_failed_execution_too(guarded, vault_server, serve_app,
                                                      make_settings):
    app = app_with_vault(serve_app, make_settings, vault_server)
    guarded.fail(status=422, times=None, method="PATCH", message="the object is invalid")
    resp = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=AUTH)
    assert resp.json()["outcomes"][0]["status"] == "failed"
    assert len(vault_server.creds_requests) == 1
    assert vault_server.active_leases == {} and len(vault_server.revoked_leases) == 1
