"""One executor for every Plan. No Kubernetes import: it drives a
:class:`ClusterWriter` port (``clients.kube`` implements it over the real
client; snapshot mode has none and stays plan-only).

Steps run in order. Every step the planners emit is idempotent (a patch to
the same value, an eviction or delete of a pod that is already gone counts as
done), so a redelivery after a temporary failure re-plans from the cluster's
current state without doing anything twice.

Failures:

- a non-eviction step answered ``ok=False``, or any step whose writer raises
  ``ActionFailed``: stop there, raise :class:`StepFailed` (an ``ActionFailed``)
  with the results so far in ``.results``;
- a writer raising ``DependencyUnavailable`` (a ``TemporaryError``): propagate
  (the pipeline releases the claim and answers "retry");
- an eviction answered 429 (a PodDisruptionBudget blocks it, as
  ``kubectl drain`` sees it): retried with exponential backoff (1s, 2s, 4s...
  capped at 30s) until one overall deadline for the plan
  (``plan.params["evict_deadline_seconds"]``, default 120s, counted from the
  start of execution, like ``kubectl drain --timeout``); still blocked then,
  the pod is left and the remaining steps still run;
- an eviction answered 500 (the pod has more than one PDB, which the eviction
  subresource refuses) or another non-ok eviction result: refused for that
  pod, no retry, the remaining steps still run.

When every step ran but some evictions were blocked or refused, the executor
raises :class:`PartialExecution` (an ``ActionFailed``) carrying every result
(``.results``) and the blocked ones (``.blocked``): the pipeline reports it as
``Status.PARTIAL``. Evictions of one plan run sequentially (simple and
deterministic; the deadline is shared, so a long drain is bounded as a whole).
In a dry run a blocked eviction is not retried (nothing we do would unblock
it): it is reported at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .errors import ActionFailed
from .model import Plan, StepResult
from .ports import ClusterAccess, ClusterWriter

__all__ = ["ClusterAccess", "ClusterWriter", "PartialExecution", "StepFailed", "StepResult",
           "execute"]

#: default overall deadline for PDB-blocked evictions of one plan (seconds).
EVICT_DEADLINE_SECONDS = 120.0
#: backoff between retries of a blocked eviction: first wait, doubling, cap.
BACKOFF_INITIAL_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0


class StepFailed(ActionFailed):
    """A step was refused for good: execution stopped there. ``results``
    holds the results of the steps before it, in order."""

    def __init__(self, message: str, results: list[StepResult]) -> None:
        super().__init__(message)
        self.results = results


class PartialExecution(StepFailed):
    """Every step ran, but some evictions were blocked (429 past the deadline)
    or refused (500: several PDBs). ``results`` holds every step's result in
    order; ``blocked`` the ones that did not happen."""

    def __init__(self, message: str, results: list[StepResult],
                 blocked: list[StepResult]) -> None:
        super().__init__(message, results)
        self.blocked = blocked


def _deadline_seconds(plan: Plan) -> float:
    raw = plan.params.get("evict_deadline_seconds", EVICT_DEADLINE_SECONDS)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return EVICT_DEADLINE_SECONDS
    return max(0.0, value)


def _evict(first: StepResult, writer: ClusterWriter, *, dry_run: bool, deadline: float,
           sleep: Callable[[float], None], clock: Callable[[], float]) -> StepResult:
    """Retry a 429-blocked eviction with exponential backoff until ``deadline``."""
    result, delay, tries = first, BACKOFF_INITIAL_SECONDS, 1
    while not result.ok and result.code == 429 and not dry_run:
        remaining = deadline - clock()
        if remaining <= 0:
            break
        sleep(min(delay, remaining))
        delay = min(delay * 2, BACKOFF_MAX_SECONDS)
        result = writer.apply(result.step, dry_run=dry_run)
        tries += 1
    if not result.ok and tries > 1:
        result = StepResult(result.step, False, f"{result.detail} (after {tries} attempts)",
                            result.code)
    return result


def execute(plan: Plan, writer: ClusterWriter, *, dry_run: bool,
            sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic,
            first_done: Callable[[], None] | None = None) -> list[StepResult]:
    """Run ``plan``'s steps in order (see the module docstring).
    ``first_done`` is called once the first step has been answered (a fleet
    limit's lock is let go there: see ``actions.base.FleetLimit``).

    Raises ``ActionFailed`` on a refused step (results so far in ``.results``)
    and :class:`PartialExecution` when only evictions were blocked/refused."""
    results: list[StepResult] = []
    blocked: list[StepResult] = []
    deadline = clock() + _deadline_seconds(plan)
    for step in plan.steps:
        try:
            result = writer.apply(step, dry_run=dry_run)
            if step.verb == "evict" and not result.ok:
                result = _evict(result, writer, dry_run=dry_run, deadline=deadline,
                                sleep=sleep, clock=clock)
        except StepFailed:
            raise
        except ActionFailed as exc:
            raise StepFailed(str(exc), results) from exc
        results.append(result)
        if first_done is not None and len(results) == 1:
            first_done()
        if result.ok:
            continue
        if step.verb == "evict":
            blocked.append(result)  # blocked (429) or refused (500): leave it, go on
            continue
        raise StepFailed(f"{step.verb} {step.ref}: {result.detail}", results)
    if blocked:
        evictions = sum(1 for s in plan.steps if s.verb == "evict")
        names = ", ".join(f"{r.step.namespace}/{r.step.name} ({r.code})" for r in blocked)
        raise PartialExecution(
            f"{len(blocked)} of {evictions} evictions did not happen: {names}",
            results, blocked)
    return results
