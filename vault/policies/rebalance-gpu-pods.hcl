# Vault policy for the rebalance-gpu-pods function. Evict pods from a hot GPU node so the scheduler spreads them (cluster-scoped).

# Ask the Kubernetes secrets engine for a short-lived service-account token
# bound to the generated Role (see vault/roles/rebalance-gpu-pods.json). "update" because
# the request is a POST carrying the namespace and TTL. With per-cluster
# secrets mounts or role prefixes (KV fields secrets_mount/role_prefix), add
# one line per cluster, e.g. path "kubernetes-gpu-east/creds/rebalance-gpu-pods".
path "kubernetes/creds/rebalance-gpu-pods" {
  capabilities = ["update"]
}

# Which clusters exist and how to reach them: api_server, ca_crt and
# optionally secrets_mount, role_prefix (KV v2, hence the data/ segment).
path "secret/data/remediation/clusters/*" {
  capabilities = ["read"]
}

# Revoke this plan's lease right after the plan ran, success or failure.
# Why the grant is needed: a lease is a child of the Vault token that created
# it, but that token is cached and shared by every plan for its whole TTL, so
# revoking it is no way to end ONE plan's credential; sys/leases/revoke is,
# and the default policy grants only sys/leases/renew and sys/leases/lookup.
# Without it the issued service-account token (and its RoleBinding) would stay
# valid until the lease TTL ran out. The endpoint takes any lease id, so this
# token could also revoke leases of others if it learnt their ids: revoking
# is the only thing it can do with them (never read or extend).
path "sys/leases/revoke" {
  capabilities = ["update"]
}
