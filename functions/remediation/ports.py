"""The ports: every seam between the one path and the outside world, together.

The pipeline drives these and nothing else; the composition root
(``runtime``) picks the implementations once, at start-up:

- :class:`ClusterFacts` (read): ``clients.kube.LiveFacts``, ``facts.SnapshotFacts``,
  ``facts.MemoFacts``;
- :class:`ClusterWriter` (write, with one plan's credential): ``clients.kube.KubeWriter``;
- :class:`ClusterAccess` (facts and writers per cluster): ``clients.kube.KubeAccess``,
  ``facts.SnapshotAccess``;
- :class:`Ledger` (claim once, records): ``guard.ledger.SQLiteLedger``,
  ``guard.lease_ledger.LeaseLedger``;
- :class:`LeaseStore` (the Lease ledger's storage): ``clients.kube.KubeLeases``;
- :class:`PolicyEngine`: ``clients.rego.EmbeddedPolicyEngine``,
  ``clients.opa.OpaServerPolicyEngine``;
- :class:`CredentialBroker`: ``clients.vault.VaultCredentialBroker``,
  ``credentials.AmbientCredentials``;
- :class:`OutcomeSink`: ``runtime.build_publisher`` (over ``clients.sink``);
- :class:`SLOSource`: ``clients.prometheus.PrometheusSLOSource``.

Structural (``typing.Protocol``): an implementation never imports this module.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

from .credentials import ScopedCredential
from .model import ObjectRef, Outcome, Plan, Step, StepResult
from .records import ApprovalResult, ClaimResult, LedgerRecord, LedgerStatus


class ClusterFacts(Protocol):
    """Read-only access to cluster objects (plain dicts, as the API serves them)."""

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        node: str | None = None,
    ) -> list[dict[str, Any]]:
        """List ``kind`` (in ``namespace``, or everywhere when None), filtered
        by equality ``labels`` and, for pods, ``spec.nodeName == node``."""
        ...


class ClusterWriter(Protocol):
    """Runs one plan's steps with the credential it was issued."""

    def apply(self, step: Step, *, dry_run: bool) -> StepResult:
        """Run one step. Raises ``DependencyUnavailable`` (retry may help) or
        ``ActionFailed`` (refused for good). An eviction blocked by a
        PodDisruptionBudget answers ``ok=False, code=429``."""
        ...

    def record_event(self, target: ObjectRef, *, reason: str, message: str,
                     type: str = "Normal") -> None:
        """Record a Kubernetes Event on ``target`` (best effort)."""
        ...

    def close(self) -> None: ...


class ClusterAccess(Protocol):
    """How the pipeline reaches a cluster: facts to plan with, a writer to act."""

    @property
    def live(self) -> bool:
        """False: a snapshot, plan-only."""
        ...

    def facts(self, cluster: str) -> ClusterFacts: ...

    def writer(self, cluster: str, credential: ScopedCredential) -> ClusterWriter: ...


class Ledger(Protocol):
    """Claims each remediation key once and keeps what happened to it."""

    def claim(self, plan: Plan, *, holder: str, event_id: str, now: float,
              ttl: float, target_window: float = 0.0) -> ClaimResult: ...

    def finish(self, key: str, status: LedgerStatus, *, now: float,
               decision: dict[str, Any] | None = None,
               reasons: list[str] | None = None) -> None: ...

    def release(self, key: str, *, holder: str) -> None: ...

    def hold(self, key: str, *, holder: str, now: float, expires_at: float,
             signal: dict[str, Any], decision: dict[str, Any] | None = None,
             reasons: list[str] | None = None) -> None: ...

    def approve(self, key: str, *, approver: str, now: float) -> ApprovalResult: ...

    def schedule(self, key: str, *, function: str, target: str, event_id: str, now: float,
                 due_at: float, signal: dict[str, Any], reasons: list[str]) -> bool:
        """Record work due at ``due_at``; False when ``key`` is already recorded."""
        ...

    def due(self, *, now: float, limit: int = 100) -> list[LedgerRecord]:
        """Scheduled records whose time has come, oldest first."""
        ...

    def pending(self, *, now: float) -> list[LedgerRecord]: ...

    def record_verification(self, key: str, result: str, *, detail: str, now: float) -> None: ...

    def stats(self, plan: Plan, *, now: float, window: float,
              exclude_key: str = "") -> dict[str, int]: ...

    def get(self, key: str) -> LedgerRecord | None: ...

    def history(self, *, target: str | None = None, limit: int = 100,
                statuses: Collection[str] | None = None) -> list[LedgerRecord]:
        """Newest first; ``statuses``: only records in one of them."""
        ...

    def close(self) -> None: ...


class FleetLock(Protocol):
    """One decision at a time about a fleet-wide limit (guard/fleet_lock.py)."""

    def acquire(self, name: str, *, holder: str, now: float, ttl: float) -> bool:
        """Take ``name`` for ``holder`` until ``now + ttl``; False when another
        holder has it (never waits)."""
        ...

    def release(self, name: str, *, holder: str) -> None: ...

    def close(self) -> None: ...


class LeaseStore(Protocol):
    """coordination.k8s.io/v1 Leases of one namespace, as plain dicts."""

    def create(self, name: str, *, labels: Mapping[str, str],
               annotations: Mapping[str, str], spec: Mapping[str, Any]) -> dict[str, Any]:
        """Create; ``LeaseExists`` when the name is taken."""
        ...

    def get(self, name: str) -> dict[str, Any] | None: ...

    def replace(self, lease: Mapping[str, Any]) -> dict[str, Any]:
        """PUT with ``metadata.resourceVersion``; ``LeaseConflict`` when stale or gone."""
        ...

    def delete(self, name: str, *, resource_version: str) -> None:
        """Delete with a resourceVersion precondition; ``LeaseConflict`` when stale."""
        ...

    def list(self, labels: Mapping[str, str], *,
             status_in: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Leases with these labels (and, given ``status_in``, whose status
        label is one of those: a set-based selector on the server)."""
        ...


class PolicyEngine(Protocol):
    """Judges a policy input document (see ``guard.policy``)."""

    def evaluate(self, input_doc: Mapping[str, Any]) -> dict[str, Any]:
        """The raw decision document; ``{}`` when undefined. Raises
        ``DependencyUnavailable`` when a server cannot be reached."""
        ...

    def close(self) -> None: ...


class CredentialBroker(Protocol):
    """Issues a credential scoped to one plan, revoked after it ran."""

    def lease(self, plan: Plan, cluster: str) -> ScopedCredential:
        """Issue a credential scoped to ``plan`` on ``cluster``.

        Raises ``DependencyUnavailable`` (retry) or ``ActionFailed`` (refused,
        e.g. unknown cluster, 403, namespace not allowed)."""
        ...

    def revoke(self, credential: ScopedCredential) -> None:
        """Revoke a lease; must not raise for an already-expired lease."""
        ...

    def close(self) -> None: ...


class OutcomeSink(Protocol):
    """Where an outcome goes at once (the Broker): an ``applied`` one while
    verification still runs, an approval request on a path with no reply."""

    def __call__(self, outcome: Outcome) -> None: ...


class SLOSource(Protocol):
    """A target's error budget for the policy's ``slo`` input (``guard.slo``)."""

    def read(self, target: ObjectRef, *, at: float) -> dict[str, Any] | None:
        """None: no SLO is configured for ``target``. Otherwise the input,
        ``{"available": False, "reason"}`` when it cannot be read (never
        raises)."""
        ...

    def close(self) -> None: ...
