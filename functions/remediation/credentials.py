"""Credentials: what the executor runs with. Pure; no I/O here. The broker
that issues them is a port (``ports.CredentialBroker``).

A :class:`ScopedCredential` is issued for one plan (its cluster and
namespace), used for that plan's execution only, and revoked afterwards,
success or failure. Without Vault, :class:`AmbientCredentials` hands out the
process' own identity (in-cluster service account or kubeconfig) and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import Plan
from .settings import Secret


@dataclass(frozen=True)
class ScopedCredential:
    source: str  # "vault" | "ambient"
    cluster: str = ""
    namespace: str = ""
    token: Secret = field(default_factory=lambda: Secret(""))  # empty: ambient identity
    api_server: str = ""  # empty: from kubeconfig / in-cluster
    ca_crt: str = ""  # PEM; empty: from kubeconfig / in-cluster
    lease_id: str = ""
    lease_duration: int = 0
    service_account: str = ""

    def describe(self) -> dict[str, object]:
        """Safe to log and to put in outcomes: never the token."""
        return {
            "source": self.source,
            "cluster": self.cluster,
            "namespace": self.namespace,
            "lease_id": self.lease_id,
            "lease_duration": self.lease_duration,
            "service_account": self.service_account,
        }


class AmbientCredentials:
    """No Vault configured: the process' own identity, for one cluster."""

    def __init__(self, cluster: str = "") -> None:
        self.cluster = cluster

    def lease(self, plan: Plan, cluster: str) -> ScopedCredential:
        return ScopedCredential(source="ambient", cluster=cluster or self.cluster,
                                namespace=plan.target.namespace)

    def revoke(self, credential: ScopedCredential) -> None:
        return None

    def close(self) -> None:
        return None
