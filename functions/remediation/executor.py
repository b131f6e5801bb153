"""One executor for every Plan. No Kubernetes import: it drives a
:class:`ClusterWriter` port (``clients.kube`` implements it over the real
client; snapshot mode has none and stays plan-only).

Steps run in order and stop at the first failure. Every step the planners
emit is idempotent (a patch to the same value, an eviction or delete of a pod
that is already gone counts as done), so a redelivery after a temporary
failure re-plans from the cluster's current state without doing anything
twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .errors import ActionFailed
from .facts import ClusterFacts
from .credentials import ScopedCredential
from .model import ObjectRef, Plan, Step


@dataclass(frozen=True)
class StepResult:
    step: Step
    ok: bool
    detail: str
    code: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"verb": self.step.verb, "kind": self.step.kind,
                "namespace": self.step.namespace, "name": self.step.name,
                "ok": self.ok, "detail": self.detail, "code": self.code}


class ClusterWriter(Protocol):
    def apply(self, step: Step, *, dry_run: bool) -> StepResult:
        """Run one step. Raises ``DependencyUnavailable`` (retry may help) or
        ``ActionFailed`` (refused for good)."""
        ...

    def record_event(self, target: ObjectRef, *, reason: str, message: str,
                     type: str = "Normal") -> None:
        """Record a Kubernetes Event on ``target`` (best effort)."""
        ...

    def close(self) -> None: ...


class ClusterAccess(Protocol):
    """How the pipeline reaches a cluster: facts to plan with, a writer to act."""

    live: bool  # False: snapshot, plan-only

    def facts(self, cluster: str) -> ClusterFacts: ...

    def writer(self, cluster: str, credential: ScopedCredential) -> ClusterWriter: ...


def execute(plan: Plan, writer: ClusterWriter, *, dry_run: bool) -> list[StepResult]:
    """Run ``plan``'s steps in order; raise ``ActionFailed`` on a refused step
    (with the results so far attached as ``.results``)."""
    results: list[StepResult] = []
    for step in plan.steps:
        try:
            result = writer.apply(step, dry_run=dry_run)
        except ActionFailed as exc:
            exc.results = results  # type: ignore[attr-defined]
            raise
        results.append(result)
        if not result.ok:
            err = ActionFailed(f"{step.verb} {step.ref}: {result.detail}")
            err.results = results  # type: ignore[attr-defined]
            raise err
    return results
