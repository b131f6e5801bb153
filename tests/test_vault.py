"""VaultCredentialBroker and setup_vault: real hvac over HTTP against the
loopback Vault of tests/plugins/vault.py (policies enforced from the repo's
own vault/ files)."""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Any

import pytest
from remediation.clients.vault import VaultCredentialBroker, parse_duration, setup_vault
from remediation.credentials import ScopedCredential
from remediation.errors import ActionFailed, DependencyUnavailable
from remediation.model import ObjectRef, Plan
from remediation.settings import Secret

from tests.plugins.vault import CA_PEM, NAMESPACE_REFUSED, REPO_VAULT_DIR, FakeVault


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def restart_plan(namespace: str = "llm-serving") -> Plan:
    return Plan(function="restart-engine", action="rollout-restart",
                target=ObjectRef("Deployment", namespace, "vllm-llama"), steps=())


def drain_plan() -> Plan:
    return Plan(function="drain-gpu-node", action="drain-node",
                target=ObjectRef("Node", "", "gpu-node-7"), steps=())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_broker(vault_server: FakeVault, clock: FakeClock):
    brokers: list[VaultCredentialBroker] = []

    def make(settings_overrides: dict[str, Any] | None = None, **kw: Any) -> VaultCredentialBroker:
        kw.setdefault("clock", clock)
        b = VaultCredentialBroker(vault_server.settings(**(settings_overrides or {})), **kw)
        brokers.append(b)
        return b

    yield make
    for b in brokers:
        b.close()


# ---------------------------------------------------------------- login & token
def test_login_is_lazy_and_cached(vault_server: FakeVault, make_broker) -> None:
    broker = make_broker()
    assert vault_server.logins == 0
    broker.lease(restart_plan(), "")
    broker.lease(restart_plan(), "")
    assert vault_server.logins == 1
    broker.login()  # explicit login replaces the token
    assert vault_server.logins == 2


def test_renew_self_when_a_third_of_the_ttl_is_left(vault_server, make_broker, clock) -> None:
    vault_server.token_ttl = 90
    broker = make_broker({"creds_ttl": "1s"})
    broker.login()
    clock.advance(50)  # 40 s left of 90: keep
    broker.lease(restart_plan(), "")
    assert (vault_server.logins, vault_server.renewals) == (1, 0)
    clock.advance(15)  # 25 s left < 30: renew
    broker.lease(restart_plan(), "")
    assert (vault_server.logins, vault_server.renewals) == (1, 1)
    clock.advance(10)  # renewed to 90 s: keep
    broker.lease(restart_plan(), "")
    assert (vault_server.logins, vault_server.renewals) == (1, 1)


def test_token_must_outlive_the_credential(vault_server, make_broker, clock) -> None:
    # a lease is revoked with the token that created it: renew first
    vault_server.token_ttl = 900
    broker = make_broker({"creds_ttl": "10m"})
    broker.login()
    clock.advance(250)  # 650 s left >= 600 + 30
    broker.lease(restart_plan(), "")
    assert vault_server.renewals == 0
    clock.advance(60)  # 590 s left < 600 (600 + 30, capped at 2/3 of 900)
    broker.lease(restart_plan(), "")
    assert (vault_server.logins, vault_server.renewals) == (1, 1)


def test_relogin_when_token_not_renewable(vault_server, make_broker, clock) -> None:
    vault_server.token_ttl, vault_server.token_renewable = 90, False
    broker = make_broker({"creds_ttl": "1s"})
    broker.lease(restart_plan(), "")
    clock.advance(70)
    broker.lease(restart_plan(), "")
    assert (vault_server.logins, vault_server.renewals) == (2, 0)


def test_relogin_when_renewal_refused(vault_server, make_broker, clock) -> None:
    vault_server.token_ttl = 90
    broker = make_broker({"creds_ttl": "1s"})
    broker.login()
    vault_server.deny("auth/token/renew-self")
    clock.advance(70)
    broker.lease(restart_plan(), "")
    assert vault_server.logins == 2
    assert len(vault_server.active_leases) == 1


def test_relogin_when_renewal_hits_max_ttl(vault_server, make_broker, clock) -> None:
    vault_server.clock = clock  # server-side expiry follows the same clock
    vault_server.token_ttl, vault_server.token_max_ttl = 90, 80
    broker = make_broker({"creds_ttl": "1s"})
    broker.login()
    clock.advance(65)  # renewal can only give 15 s (< 30): log in again instead
    broker.lease(restart_plan(), "")
    assert (vault_server.logins, vault_server.renewals) == (2, 1)


def test_relogin_after_expiry(vault_server, make_broker, clock) -> None:
    vault_server.clock = clock
    vault_server.token_ttl = 30
    broker = make_broker()
    broker.login()
    clock.advance(31)
    broker.lease(restart_plan(), "")
    assert (vault_server.logins, vault_server.renewals) == (2, 0)


def test_token_revoked_behind_our_back_logs_in_once_more(vault_server, make_broker) -> None:
    broker = make_broker()
    broker.login()
    for t in vault_server.client_tokens():
        vault_server.tokens[t]["revoked"] = True
    cred = broker.lease(restart_plan(), "")
    assert cred.lease_id and vault_server.logins == 2


def test_close_revokes_the_vault_token(vault_server, make_broker) -> None:
    broker = make_broker()
    broker.lease(restart_plan(), "")
    assert vault_server.live_client_tokens()
    broker.close()
    assert vault_server.live_client_tokens() == []
    assert ("POST", "/v1/auth/token/revoke-self") in vault_server.requests


def test_missing_jwt_file_is_refused(vault_server, make_broker, tmp_path) -> None:
    broker = make_broker({"jwt_path": str(tmp_path / "nope")})
    with pytest.raises(ActionFailed, match="service-account token"):
        broker.lease(restart_plan(), "")


def test_wrong_jwt_is_refused(vault_server, make_broker) -> None:
    vault_server.jwt = "something-else-entirely"
    with pytest.raises(ActionFailed, match="permission denied"):
        make_broker().login()


# ---------------------------------------------------------------- per-plan creds
def test_lease_requests_the_function_role_in_the_plan_namespace(vault_server, make_broker):
    cred = make_broker().lease(restart_plan(), "")
    assert vault_server.creds_requests == [{"mount": "kubernetes", "role": "restart-engine",
                                            "kubernetes_namespace": "llm-serving",
                                            "ttl": "10m"}]
    lease = vault_server.active_leases[cred.lease_id]
    assert cred.source == "vault"
    assert cred.namespace == "llm-serving" and cred.cluster == ""
    assert cred.lease_duration == 600 and lease["ttl"] == 600
    assert cred.service_account == lease["service_account"]
    assert cred.token.reveal() == vault_server.issued_sa_tokens[-1]
    assert (cred.api_server, cred.ca_crt) == ("", "")  # kube client: in-cluster address


def test_lease_uses_configured_ttl(vault_server, make_broker):
    cred = make_broker({"creds_ttl": "5m"}).lease(restart_plan(), "")
    assert vault_server.creds_requests[-1]["ttl"] == "5m"
    assert cred.lease_duration == 300


def test_cluster_scoped_plan_gets_cluster_role_binding(vault_server, make_broker):
    cred = make_broker().lease(drain_plan(), "")
    req = vault_server.creds_requests[-1]
    assert req["role"] == "drain-gpu-node"
    assert req["kubernetes_namespace"] == "remediation" and req["cluster_role_binding"] is True
    assert cred.namespace == "remediation"


def test_role_name_mapping(vault_server, make_broker):
    vault_server.set_k8s_role("restarter", {"allowed_kubernetes_namespaces": ["llm-serving"],
                                            "generated_role_rules": "{}"})
    vault_server.set_policy("restart-engine", 'path "kubernetes/creds/restarter" '
                                              '{ capabilities = ["update"] }\n'
                            'path "sys/leases/revoke" { capabilities = ["update"] }')
    broker = make_broker(roles={"restart-engine": "restarter"})
    cred = broker.lease(restart_plan(), "")
    assert vault_server.creds_requests[-1]["role"] == "restarter"
    broker.revoke(cred)
    assert vault_server.revoked_leases == [cred.lease_id]


def test_every_function_role_and_policy_works(vault_server, make_broker):
    broker = make_broker()
    for fn, target in (("restart-engine", ObjectRef("Deployment", "llm-serving", "x")),
                       ("scale-engine", ObjectRef("Deployment", "llm-serving", "x")),
                       ("drain-gpu-node", ObjectRef("Node", "", "n")),
                       ("rebalance-gpu-pods", ObjectRef("Node", "", "n"))):
        cred = broker.lease(Plan(function=fn, action="a", target=target, steps=()), "")
        broker.revoke(cred)
    assert len(vault_server.revoked_leases) == 4 and not vault_server.active_leases


# ---------------------------------------------------------------- clusters
def test_named_cluster_gives_api_server_and_ca(vault_server, make_broker):
    cred = make_broker().lease(restart_plan(), "gpu-east")
    assert cred.cluster == "gpu-east"
    assert cred.api_server == "https://api.gpu-east.example:6443" and cred.ca_crt == CA_PEM


def test_default_cluster_when_event_names_none(vault_server, make_broker):
    cred = make_broker(default_cluster="gpu-east").lease(restart_plan(), "")
    assert cred.cluster == "gpu-east" and cred.api_server.startswith("https://api.gpu-east")


def test_cluster_selects_mount_and_role_prefix(vault_server, make_broker):
    vault_server.mounts["kubernetes-west/"] = {"type": "kubernetes", "options": None}
    vault_server.set_k8s_role("west-restart-engine",
                              {"allowed_kubernetes_namespaces": ["llm-serving"],
                               "generated_role_rules": "{}"}, mount="kubernetes-west")
    vault_server.set_policy("restart-engine", vault_server.policies["restart-engine"] +
                            '\npath "kubernetes-west/creds/west-restart-engine" '
                            '{ capabilities = ["update"] }\n')
    cred = make_broker().lease(restart_plan(), "gpu-west")
    assert vault_server.creds_requests[-1]["mount"] == "kubernetes-west"
    assert vault_server.creds_requests[-1]["role"] == "west-restart-engine"
    assert cred.lease_id.startswith("kubernetes-west/creds/west-restart-engine/")


def test_cluster_lookup_is_cached_briefly(vault_server, make_broker, clock):
    broker = make_broker()
    kv_get = ("GET", "/v1/secret/data/remediation/clusters/gpu-east")
    broker.lease(restart_plan(), "gpu-east")
    broker.lease(restart_plan(), "gpu-east")
    assert vault_server.requests.count(kv_get) == 1
    clock.advance(61)
    broker.lease(restart_plan(), "gpu-east")
    assert vault_server.requests.count(kv_get) == 2


def test_unknown_cluster(vault_server, make_broker):
    with pytest.raises(ActionFailed) as err:
        make_broker().lease(restart_plan(), "nope")
    assert str(err.value) == "unknown cluster 'nope'"
    assert not vault_server.creds_requests


def test_cluster_name_never_becomes_a_path_trick(vault_server, make_broker):
    with pytest.raises(ActionFailed, match="unknown cluster"):
        make_broker().lease(restart_plan(), "../../sys/mounts")
    assert not any("sys/mounts" in p for _, p in vault_server.requests)


# ---------------------------------------------------------------- refusals
def test_refused_namespace_is_action_failed_with_vaults_message(vault_server, make_broker):
    with pytest.raises(ActionFailed) as err:
        make_broker().lease(restart_plan("kube-system"), "")
    assert NAMESPACE_REFUSED.format(ns="kube-system") in str(err.value)
    assert not vault_server.active_leases


def test_permission_denied_is_action_failed(vault_server, make_broker):
    vault_server.deny("kubernetes/creds/")
    with pytest.raises(ActionFailed, match="permission denied"):
        make_broker().lease(restart_plan(), "")
    assert vault_server.logins == 2  # one fresh login in case the token was the problem


@pytest.mark.parametrize("trouble", ["sealed", "down", "slow", "429", "500", "502",
                                     "429-at-login"])
def test_vault_trouble_is_dependency_unavailable(vault_server, make_broker, trouble):
    broker = make_broker({"timeout": 0.3})
    if trouble != "429-at-login":
        broker.login()
    if trouble == "sealed":
        vault_server.seal()
    elif trouble == "down":
        vault_server.down()
    elif trouble == "slow":
        vault_server.slow(1.0)
    else:
        vault_server.fail_next(int(trouble[:3]), 1)
    with pytest.raises(DependencyUnavailable) as err:
        broker.lease(restart_plan(), "gpu-east")
    assert "http://" not in str(err.value) or trouble == "down"
    assert err.value.__cause__ is None
    assert not vault_server.active_leases
    vault_server.slow(0)
    vault_server.unseal()
    vault_server.up()
    assert broker.lease(restart_plan(), "gpu-east").lease_id  # recovers by itself


# ---------------------------------------------------------------- revocation
def test_revoke_after_use(vault_server, make_broker):
    broker = make_broker()
    cred = broker.lease(restart_plan(), "gpu-east")
    assert cred.lease_id in vault_server.active_leases
    broker.revoke(cred)
    assert vault_server.revoked_leases == [cred.lease_id]
    assert not vault_server.active_leases


@pytest.mark.parametrize("status", [400, 404, 204])
def test_revoking_a_gone_lease_is_fine(vault_server, make_broker, status):
    vault_server.unknown_lease_status = status
    broker = make_broker()
    cred = broker.lease(restart_plan(), "")
    vault_server.active_leases.clear()  # expired meanwhile
    broker.revoke(cred)
    assert broker.pending_revocations == ()


def test_revoke_ignores_ambient_credentials(vault_server, make_broker):
    broker = make_broker()
    broker.revoke(ScopedCredential(source="ambient"))
    assert vault_server.requests == []


def test_revoke_while_vault_down_retries_on_next_call(vault_server, make_broker, caplog):
    broker = make_broker({"timeout": 0.5})
    cred = broker.lease(restart_plan(), "")
    vault_server.down()
    with caplog.at_level(logging.WARNING, logger="remediation.vault"):
        broker.revoke(cred)  # never raises
    assert broker.pending_revocations == (cred.lease_id,)
    assert any("will retry" in r.getMessage() for r in caplog.records)
    vault_server.up()
    broker.lease(restart_plan(), "")
    assert cred.lease_id in vault_server.revoked_leases
    assert broker.pending_revocations == ()


def test_pending_revocations_are_retried_on_close(vault_server, make_broker):
    broker = make_broker()
    cred = broker.lease(restart_plan(), "")
    vault_server.seal()
    broker.revoke(cred)
    assert broker.pending_revocations == (cred.lease_id,)
    vault_server.unseal()
    broker.close()
    assert vault_server.revoked_leases == [cred.lease_id]
    assert vault_server.live_client_tokens() == []


# ---------------------------------------------------------------- no secrets anywhere
def test_tokens_never_appear_in_logs_messages_or_descriptions(vault_server, make_broker,
                                                              caplog, clock):
    caplog.set_level(logging.DEBUG)  # root: hvac, urllib3, requests, ours
    for name in ("hvac", "urllib3", "requests", "remediation"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    vault_server.token_ttl = 90
    texts: list[str] = []
    broker = make_broker({"timeout": 0.3})
    cred = broker.lease(restart_plan(), "gpu-east")
    texts += [repr(cred), str(cred), json.dumps(cred.describe()), repr(broker), str(broker)]
    clock.advance(70)
    cred2 = broker.lease(drain_plan(), "gpu-east")  # after a renewal
    texts += [repr(cred2), json.dumps(cred2.describe())]
    broker.revoke(cred)

    def failing(setup) -> None:
        setup()
        try:
            broker.lease(restart_plan("kube-system" if setup is refuse else "llm-serving"),
                         "gpu-east")
        except Exception as exc:  # noqa: BLE001
            texts.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])
        finally:
            vault_server.unseal()
            vault_server.slow(0)
            vault_server.denied.clear()
            vault_server.up()

    def refuse() -> None:
        pass

    failing(refuse)
    failing(lambda: vault_server.deny("kubernetes/creds/"))
    failing(vault_server.seal)
    failing(lambda: vault_server.slow(1.0))
    failing(vault_server.down)
    failing(lambda: vault_server.fail_next(500, 2))
    vault_server.down()
    broker.revoke(cred2)
    vault_server.up()
    broker.close()
    secrets_ = vault_server.issued_tokens()
    assert len(secrets_) >= 5
    haystack = caplog.text + "\n".join(texts)
    assert "permission denied" in haystack and "Vault is sealed" in haystack
    for secret in secrets_:
        assert secret not in haystack
        assert secret.split(".")[-1] not in haystack


# ---------------------------------------------------------------- setup
def test_setup_configures_a_blank_vault_and_is_idempotent(blank_vault_server: FakeVault,
                                                          vault_server: FakeVault):
    settings = blank_vault_server.settings()
    token = Secret(blank_vault_server.root_token)
    first = setup_vault(settings, REPO_VAULT_DIR, token=token)
    assert first["changed"] > 0
    results = {i["item"]: i["result"] for i in first["items"]}
    assert results["auth/kubernetes"] == "enabled"
    assert results["sys/mounts/kubernetes"] == "enabled"
    assert results["sys/mounts/secret"] == "unchanged"
    assert results["sys/policies/acl/restart-engine"] == "created"
    assert results["auth/kubernetes/role/remediator"] == "created"
    assert results["kubernetes/roles/drain-gpu-node"] == "created"
    state, writes = blank_vault_server.config_state(), blank_vault_server.config_writes

    second = setup_vault(settings, REPO_VAULT_DIR, token=token)
    assert second["changed"] == 0
    assert {i["result"] for i in second["items"]} == {"unchanged"}
    assert [i["item"] for i in second["items"]] == [i["item"] for i in first["items"]]
    assert blank_vault_server.config_state() == state
    assert blank_vault_server.config_writes == writes

    # what setup wrote is what the broker's tests run against (minus the KV entries)
    expected = vault_server.config_state()
    got = blank_vault_server.config_state()
    for key in ("auth", "mounts", "policies", "auth_roles", "k8s_roles"):
        assert got[key] == expected[key], key


def test_setup_then_broker_works(blank_vault_server: FakeVault):
    setup_vault(blank_vault_server.settings(), REPO_VAULT_DIR,
                token=blank_vault_server.root_token)
    broker = VaultCredentialBroker(blank_vault_server.settings())
    try:
        cred = broker.lease(restart_plan(), "")
        broker.revoke(cred)
        assert blank_vault_server.revoked_leases == [cred.lease_id]
    finally:
        broker.close()


def test_setup_updates_drifted_items_only(blank_vault_server: FakeVault, tmp_path: Path):
    import shutil

    defs = tmp_path / "vault"
    shutil.copytree(REPO_VAULT_DIR, defs)
    token = Secret(blank_vault_server.root_token)
    setup_vault(blank_vault_server.settings(), defs, token=token)
    blank_vault_server.policies["scale-engine"] = 'path "x" { capabilities = ["read"] }'
    role = json.loads((defs / "roles" / "restart-engine.json").read_text())
    role["allowed_kubernetes_namespaces"].append("inference")
    (defs / "roles" / "restart-engine.json").write_text(json.dumps(role))
    report = setup_vault(blank_vault_server.settings(), defs, token=token)
    changed = {i["item"]: i["result"] for i in report["items"] if i["result"] != "unchanged"}
    assert changed == {"sys/policies/acl/scale-engine": "updated",
                       "kubernetes/roles/restart-engine": "updated"}
    assert blank_vault_server.k8s_roles["kubernetes/restart-engine"][
        "allowed_kubernetes_namespaces"] == ["llm-serving", "inference"]


def test_setup_refuses_without_a_token(blank_vault_server: FakeVault):
    with pytest.raises(ActionFailed, match="permission denied"):
        setup_vault(blank_vault_server.settings(), REPO_VAULT_DIR, token="")
    assert blank_vault_server.config_writes == 0


def test_setup_refuses_a_mount_of_the_wrong_type(blank_vault_server: FakeVault):
    blank_vault_server.mounts["kubernetes/"] = {"type": "kv", "options": None}
    with pytest.raises(ActionFailed, match="not 'kubernetes'"):
        setup_vault(blank_vault_server.settings(), REPO_VAULT_DIR,
                    token=blank_vault_server.root_token)


def test_setup_when_vault_is_sealed(blank_vault_server: FakeVault):
    blank_vault_server.seal()
    with pytest.raises(DependencyUnavailable, match="sealed"):
        setup_vault(blank_vault_server.settings(), REPO_VAULT_DIR,
                    token=blank_vault_server.root_token)


# ---------------------------------------------------------------- definitions
def test_policies_grant_creds_cluster_read_and_revoke() -> None:
    for fn in ("restart-engine", "drain-gpu-node", "rebalance-gpu-pods", "scale-engine"):
        hcl = (REPO_VAULT_DIR / "policies" / f"{fn}.hcl").read_text()
        assert f'path "kubernetes/creds/{fn}"' in hcl
        assert 'path "secret/data/remediation/clusters/*"' in hcl
        assert 'path "sys/leases/revoke"' in hcl
        role = json.loads((REPO_VAULT_DIR / "roles" / f"{fn}.json").read_text())
        assert role["generated_role_rules"]["rules"]
        for rule in role["generated_role_rules"]["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]


def test_parse_duration() -> None:
    assert parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400
    assert parse_duration(900) == 900
    assert parse_duration("900") == 900
    assert parse_duration("soon") is None


def test_cluster_lookup_logs_in_again_after_a_403(vault_server, make_broker):
    broker = make_broker()
    broker.login()
    for t in vault_server.client_tokens():
        vault_server.tokens[t]["revoked"] = True
    assert broker.lease(restart_plan(), "gpu-east").api_server.startswith("https://api.gpu-east")
    assert vault_server.logins == 2


def test_revoke_logs_in_again_after_a_403(vault_server, make_broker):
    broker = make_broker()
    cred = broker.lease(restart_plan(), "")
    for t in vault_server.client_tokens():
        vault_server.tokens[t]["revoked"] = True
    broker.revoke(cred)
    assert vault_server.revoked_leases == [cred.lease_id]


def test_revoke_refused_by_policy_is_logged_not_raised(vault_server, make_broker, caplog):
    broker = make_broker()
    cred = broker.lease(restart_plan(), "")
    vault_server.deny("sys/leases/revoke")
    with caplog.at_level(logging.ERROR, logger="remediation.vault"):
        broker.revoke(cred)
    assert broker.pending_revocations == ()
    assert any("expires at its TTL" in r.getMessage() for r in caplog.records)


def test_concurrent_leases_share_one_login(vault_server, make_broker):
    from concurrent.futures import ThreadPoolExecutor

    broker = make_broker()
    with ThreadPoolExecutor(8) as pool:
        creds = list(pool.map(lambda _: broker.lease(restart_plan(), "gpu-east"), range(16)))
    assert vault_server.logins == 1
    assert len({c.lease_id for c in creds}) == 16
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(broker.revoke, creds))
    assert not vault_server.active_leases
