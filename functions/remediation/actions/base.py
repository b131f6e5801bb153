"""What every remediation is: one frozen declaration around a pure planner.

A planner is ``plan(ctx: PlanContext) -> Plan | NoPlan``. It reads cluster
facts through ``ctx.facts`` (read-only) and never writes: the executor runs
the returned Plan. Time comes from ``ctx.now`` so planners stay pure.

A :class:`Remediation` declares, once, everything else that is known about
it: the actions its plans may carry (each with the check that says whether
it took, whether repeating it acts twice, its rung on the escalation
ladder), the signal labels it reads, the Kubernetes RBAC its ServiceAccount
needs, the rules of the role Vault issues for its plans, and its default
policy data. Verification, the label contract, the Vault policies and roles
and the function's manifests under ``eventing/`` all come from it
(``remediate generate``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from ..facts import ClusterFacts
from ..model import NoPlan, ObjectRef, Plan, Signal, stable_digest
from ..records import LedgerRecord

#: Annotation this project writes on what it changed: the incident it acted for.
INCIDENT_ANNOTATION = "inferenceremediation.io/incident"
#: kubectl's own rollout-restart annotation.
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"

#: what planners see of the ledger: ``history(target, window_seconds)``
History = Callable[[str, float], Sequence[LedgerRecord]]


def _no_history(target: str, window: float) -> Sequence[LedgerRecord]:
    return ()


@dataclass(frozen=True)
class PlanContext:
    signal: Signal
    facts: ClusterFacts
    now: datetime
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: past ledger records of actions taken or in flight (claimed, applied,
    #: planned, partial) on a target ("Kind/ns/name"), newest first, within
    #: ``window`` seconds: what escalation ladders and already-done checks read.
    history: History = _no_history

    @property
    def now_rfc3339(self) -> str:
        return self.now.strftime("%Y-%m-%dT%H:%M:%SZ")


Planner = Callable[[PlanContext], "Plan | NoPlan"]


@dataclass(frozen=True)
class Verdict:
    """One look at whether a fix took."""

    done: bool  # the fix took
    failed: bool = False  # it cannot take without someone's help: stop waiting
    detail: str = ""


#: a verification check: (the applied plan, fresh facts, the owners of the pods
#: it removed, read before it acted) -> a verdict
Check = Callable[[Plan, ClusterFacts, Mapping[str, Any]], Verdict]


@dataclass(frozen=True)
class ActionSpec:
    """An action a remediation's plans may carry (``Plan.action``, what the
    policy judges)."""

    name: str
    #: did it take? Run after an apply until done, failed or the deadline.
    check: Check
    #: relative to the state it was planned on (a scale-out adds replicas):
    #: repeating it after an unanswered write would act twice, so such a
    #: write keeps the claim instead of releasing it.
    relative: bool = False
    #: rung on restart-engine's escalation ladder (0 restart, 1 reschedule,
    #: 2 drain); None: not on the ladder
    ladder: int | None = None


@dataclass(frozen=True)
class Rule:
    """One Kubernetes RBAC policy rule."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str = ""  # a comment above it in the generated manifest

    def as_dict(self) -> dict[str, list[str]]:
        return {"apiGroups": list(self.api_groups), "resources": list(self.resources),
                "verbs": list(self.verbs)}


@dataclass(frozen=True)
class VaultRole:
    """The Kubernetes secrets-engine role Vault issues this function's
    per-plan credentials from (``vault/roles/<name>.json``)."""

    rules: tuple[Rule, ...]
    #: ``ClusterRole`` for node-level plans (a ClusterRoleBinding is issued)
    role_type: str = "Role"
    namespaces: tuple[str, ...] = ("llm-serving",)
    purpose: str = ""  # the role file's comment
    default_ttl: str = "10m"
    max_ttl: str = "30m"


@dataclass(frozen=True)
class FleetLimit:
    """A limit over the whole fleet that some of a function's plans count
    against (the circuit breaker's share of cordoned GPU nodes). Such a plan
    is judged one at a time, under the limit's lock, on counts read again
    from the API after the claim: ``refresh`` returns the plan's params that
    carry the counts (a batch reads its facts once, and two workers read the
    same count at the same time). The plan's first step is the change the
    limit counts; the lock is let go once it is made."""

    name: str
    #: whether a plan changes the count (a node we already cordoned does not)
    applies: Callable[[Plan], bool]
    #: fresh params for the policy from the cluster's facts
    refresh: Callable[[ClusterFacts, Plan], Mapping[str, Any]]


@dataclass(frozen=True)
class Remediation:
    """A catalogue entry: a function's one declaration."""

    name: str
    summary: str
    planner: Planner
    #: every action its plans may carry, each with its verification check
    actions: tuple[ActionSpec, ...]
    #: the signal labels it reads (alias lists in order of preference: the
    #: first present wins), for the label contract in the README
    labels: tuple[tuple[str, ...], ...]
    #: its ServiceAccount's cluster-wide RBAC: reads to plan and verify, and
    #: the writes it makes with its own identity when there is no Vault
    rbac: tuple[Rule, ...]
    #: the role Vault issues for its plans
    vault: VaultRole
    #: its default policy data: ``remediation_config.actions[<action>]``
    policy_data: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({}))
    handles_resolved: bool = False  # resolved alerts are planned too (recovery)
    #: what the function's Service is for (a comment in its manifest)
    purpose: str = ""
    #: a fleet-wide limit its plans count against, judged one at a time
    fleet_limit: FleetLimit | None = None

    def action(self, name: str) -> ActionSpec | None:
        return next((a for a in self.actions if a.name == name), None)

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.actions)


def remediation_key(function: str, signal: Signal, target: ObjectRef) -> str:
    """Claim-once key: the incident (stable across re-sends) and the target."""
    return stable_digest(function, signal.incident, str(target), length=32)
