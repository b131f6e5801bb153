"""What every remediation is: a frozen spec around a pure planner.

A planner is ``plan(ctx: PlanContext) -> Plan | NoPlan``. It reads cluster
facts through ``ctx.facts`` (read-only) and never writes: the executor runs
the returned Plan. Time comes from ``ctx.now`` so planners stay pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any
from collections.abc import Callable, Mapping, Sequence

from ..facts import ClusterFacts
from ..model import NoPlan, ObjectRef, Plan, Signal, stable_digest

#: Annotation this project writes on what it changed: the incident it acted for.
INCIDENT_ANNOTATION = "inferenceremediation.io/incident"
#: kubectl's own rollout-restart annotation.
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"


@dataclass(frozen=True)
class PlanContext:
    signal: Signal
    facts: ClusterFacts
    now: datetime
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: past ledger records of actions taken or in flight (claimed, applied,
    #: planned, partial) on a target ("Kind/ns/name"), newest first, within
    #: ``window`` seconds: what escalation ladders and already-done checks read.
    history: Callable[[str, float], Sequence[Mapping[str, Any]]] = lambda target, window: ()

    @property
    def now_rfc3339(self) -> str:
        return self.now.strftime("%Y-%m-%dT%H:%M:%SZ")


Planner = Callable[[PlanContext], "Plan | NoPlan"]


@dataclass(frozen=True)
class Remediation:
    """A catalogue entry: name, what it does, its pure planner."""

    name: str
    summary: str
    planner: Planner
    handles_resolved: bool = False  # resolved alerts are planned too (recovery)


def remediation_key(function: str, signal: Signal, target: ObjectRef) -> str:
    """Claim-once key: the incident (stable across re-sends) and the target."""
    return stable_digest(function, signal.incident, str(target), length=32)
