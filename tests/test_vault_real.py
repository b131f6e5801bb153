"""Optional tier: the Vault path against a REAL Vault when VAULT_ADDR is set
(skipped otherwise, with the reason).

* set-up: needs ``VAULT_TOKEN`` (an operator token); runs ``setup_vault``
  twice from ``vault/`` and asserts the second run changes nothing. It WRITES
  to that Vault (policies, roles, enabled mounts): use a dev server, e.g.
  ``vault server -dev``.
* login/creds/revoke: needs ``VAULT_JWT_PATH`` (a service-account JWT the
  Kubernetes auth method accepts), Vault's ``kubernetes/config`` on both the
  auth method and the secrets engine pointing at a reachable cluster, and the
  namespace ``REMEDIATION_TEST_NAMESPACE`` (default ``llm-serving``) allowed
  by the ``restart-engine`` role. ``REMEDIATION_CLUSTER`` picks a cluster
  entry (default: none).

    VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=root pytest tests/test_vault_real.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from remediation.model import ObjectRef, Plan
from remediation.settings import Secret, Settings

REPO_VAULT_DIR = Path(__file__).resolve().parents[1] / "vault"

if not os.environ.get("VAULT_ADDR"):
    pytest.skip("VAULT_ADDR not set: no real Vault to test against", allow_module_level=True)

pytestmark = [pytest.mark.realvault]


def _settings() -> Settings:
    return Settings.from_env(os.environ)


@pytest.mark.skipif(not os.environ.get("VAULT_TOKEN"),
                    reason="VAULT_TOKEN not set: the set-up needs an operator token")
def test_setup_is_idempotent_on_a_real_vault() -> None:
    from remediation.clients.vault import setup_vault

    settings = _settings().vault
    token = Secret(os.environ["VAULT_TOKEN"])
    setup_vault(settings, REPO_VAULT_DIR, token=token)
    second = setup_vault(settings, REPO_VAULT_DIR, token=token)
    assert second["changed"] == 0, [i for i in second["items"] if i["result"] != "unchanged"]


@pytest.mark.skipif(not os.environ.get("VAULT_JWT_PATH"),
                    reason="VAULT_JWT_PATH not set: no service-account JWT to log in with")
def test_login_lease_and_revoke_on_a_real_vault() -> None:
    from remediation.clients.vault import VaultCredentialBroker

    settings = _settings()
    namespace = os.environ.get("REMEDIATION_TEST_NAMESPACE", "llm-serving")
    plan = Plan(function="restart-engine", action="rollout-restart",
                target=ObjectRef("Deployment", namespace, "vllm-llama"), steps=())
    broker = VaultCredentialBroker(settings.vault, default_cluster=settings.cluster)
    try:
        broker.login()
        cred = broker.lease(plan, settings.cluster)
        assert cred.source == "vault" and cred.token and cred.lease_id
        assert cred.namespace == namespace and cred.service_account
        assert cred.token.reveal() not in repr(cred)
        broker.revoke(cred)
        assert broker.pending_revocations == ()
        if os.environ.get("VAULT_TOKEN"):
            import hvac
            import hvac.exceptions

            admin = hvac.Client(url=settings.vault.addr, token=os.environ["VAULT_TOKEN"],
                                timeout=settings.vault.timeout,
                                verify=settings.vault.ca_cert or True,
                                namespace=settings.vault.namespace or None)
            gone = (hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath)
            with pytest.raises(gone):
                admin.sys.read_lease(cred.lease_id)  # revoked: "invalid lease"
            admin.adapter.close()
    finally:
        broker.close()
