#!/usr/bin/env sh
# One-time, idempotent Vault set-up for inference-remediation (see README.md).
#
#   VAULT_ADDR=https://vault.example:8200 VAULT_TOKEN=... ./vault/setup.sh
#
# Enables the Kubernetes auth method and secrets engine if missing, then writes
# the policies (policies/*.hcl), the auth role (auth-role.json) and the
# secrets-engine roles (roles/*.json) only where Vault's copy differs. Running
# it again changes nothing and reports every item "unchanged".
# Honours VAULT_AUTH_MOUNT, VAULT_K8S_SECRETS_MOUNT, VAULT_KV_MOUNT,
# VAULT_NAMESPACE, VAULT_CACERT and VAULT_TIMEOUT like the functions do.
set -eu

here=$(cd "$(dirname "$0")" && pwd)

if [ -z "${VAULT_ADDR:-}" ]; then
    echo "VAULT_ADDR is not set" >&2
    exit 2
fi
if [ -z "${VAULT_TOKEN:-}" ] && [ ! -f "${HOME:-/nonexistent}/.vault-token" ]; then
    echo "VAULT_TOKEN is not set (and no ~/.vault-token): the set-up needs an operator token" >&2
    exit 2
fi

exec remediate vault setup --definitions "${1:-$here}"
