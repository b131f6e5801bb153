"""Did the fix take? The check a remediation declares for the plan's action.

The pipeline calls :func:`check` after applying, again and again (fresh facts
each time) until it answers done, failed, or the deadline passes. The checks
themselves are the kit's (:mod:`.kit.checks`); which one runs for which
action is each remediation's declaration (``base.ActionSpec.check``).

An action its remediation does not declare has no check: that is an error
the catalogue's validation refuses at start-up (:func:`validate`), and, were
such a plan ever applied, a failed verification, never a silent success.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..facts import ClusterFacts
from ..model import Plan
from .base import Remediation, Verdict
from .catalogue import CATALOGUE
from .kit.checks import pod_owners
from .kit.rollout import rollout_status

__all__ = ["Verdict", "check", "pod_owners", "rollout_status", "validate"]


def check(plan: Plan, facts: ClusterFacts, *, owners: Mapping[str, Any] | None = None,
          catalogue: Mapping[str, Remediation] = CATALOGUE) -> Verdict:
    """One look at whether ``plan`` took. ``owners``: pod ``ns/name`` -> the
    pod's owner reference as it was before the action (the pipeline records
    them before executing, since an evicted pod can no longer be asked)."""
    remediation = catalogue.get(plan.function)
    spec = remediation.action(plan.action) if remediation is not None else None
    if spec is None:
        return Verdict(False, True, f"no verification check is declared for {plan.action} "
                                    f"in {plan.function or '(no function)'}")
    return spec.check(plan, facts, owners or {})


def validate(catalogue: Mapping[str, Remediation]) -> None:
    """Refuse, at start-up, a catalogue whose declarations are incomplete: a
    name that is not its key, a remediation without actions, an action
    declared twice or without a callable verification check. ValueError
    names the piece missing."""
    problems: list[str] = []
    for key, r in catalogue.items():
        if r.name != key:
            problems.append(f"{key}: declared as {r.name!r}")
        if not callable(r.planner):
            problems.append(f"{key}: no planner")
        if not r.actions:
            problems.append(f"{key}: declares no action")
        seen: set[str] = set()
        for a in r.actions:
            if a.name in seen:
                problems.append(f"{key}: action {a.name} declared twice")
            seen.add(a.name)
            if not callable(a.check):
                problems.append(f"{key}: action {a.name} has no verification check")
    if problems:
        raise ValueError("incomplete remediation declarations: " + "; ".join(problems))
