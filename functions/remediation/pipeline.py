"""The one path every action takes:

    route -> plan (pure) -> claim once (ledger) -> decide (policy)
          -> lease scoped credentials (Vault) -> execute -> verify -> report

When policy wants a human, the claimed key is parked ``pending`` (with the
signal, until ``settings.approval.ttl``) and the outcome says so; an approval
(:meth:`Pipeline.approve`) re-runs the same path for the kept signal, and the
policy sees who approved. After an apply, the fix is checked
(``actions.verify``) until ``settings.verify.deadline``; the result is
recorded in the ledger (the escalation ladder reads it) and reported.

No I/O of its own: it drives ports (cluster access, ledger, policy engine,
credential broker) handed to it at start-up. Every path ends in an
:class:`Outcome`; temporary failures (OPA/Vault/API down or slow) end in
``Status.RETRY`` with nothing done and the claim released, so a redelivery
can act once.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from . import metrics, tracing
from .actions import verify as verification
from .actions.base import PlanContext, Remediation
from .credentials import ScopedCredential
from .errors import ActionFailed, DependencyUnavailable, InvalidInput, TemporaryError
from .executor import PartialExecution, StepFailed, execute
from .facts import MemoFacts
from .guard.fleet_lock import LocalFleetLock
from .guard.policy import decide
from .guard.targets import target_facts
from .model import (
    AGENT_EVENT_PREFIX,
    TYPE_SPLUNK_RESULT,
    Decision,
    NoPlan,
    ObjectRef,
    Outcome,
    Plan,
    Signal,
    Status,
    StepResult,
    freeze,
    stable_digest,
    thaw,
)
from .ports import (
    ClusterAccess,
    ClusterFacts,
    CredentialBroker,
    FleetLock,
    Ledger,
    OutcomeSink,
    PolicyEngine,
    SLOSource,
)
from .records import TAKEN, ClaimResult, LedgerRecord, LedgerStatus
from .routing import REMEDIATION_LABEL, Routes
from .settings import Settings

log = logging.getLogger("remediation.pipeline")

#: ledger window used for the stats fed into policy input (limits, cooldowns).
STATS_WINDOW_SECONDS = 3600.0
#: how long a delivery waits for a fleet limit's lock before answering retry,
#: and how long a lock outlives a worker that died holding it
FLEET_LOCK_WAIT_SECONDS = 5.0
FLEET_LOCK_TTL_SECONDS = 60.0
#: deliveries answered with a reply event (a Trigger's), which carries the
#: approval request itself
REPLY_VIAS = frozenset({"trigger", "approval-event"})
#: outcomes after which the ledger refuses the same action on the same target
#: for another incident within the target window (see guard.ledger.TAKEN)
TARGET_TAKEN = frozenset({Status.APPLIED, Status.PARTIAL, Status.PLANNED, Status.PENDING})
#: final statuses of a key that a redelivery can only duplicate
ACTED = frozenset({LedgerStatus.APPLIED, LedgerStatus.PARTIAL, LedgerStatus.PLANNED})
#: an agent's requests that count toward the agents' own limits: acted on, in
#: flight, or parked for a human (flooding the approval queue is a storm too)
AGENT_COUNTED = ("claimed", "applied", "partial", "pending", "approved")
#: newest ledger records read for those counts; the cluster-wide limit keeps
#: a window's actions well below it
AGENT_HISTORY_LIMIT = 1000


def agent_prefix(requester: Mapping[str, str]) -> str:
    """The event-id prefix of one agent client's signals (see AGENT_EVENT_PREFIX)."""
    return f"{AGENT_EVENT_PREFIX}{requester.get('client') or 'unknown'}/"


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class TakenTarget:
    """An action taken on a target earlier in the batch (or, the ledger said, before)."""

    key: str  # the remediation key that took it
    status: str  # its ledger status
    at: float  # when (the pipeline's clock)
    #: taken by this batch itself: one Alertmanager notification acts once on
    #: a target however long the batch takes (a 20,000-alert storm on a busy
    #: API server outlasted the target window and restarted each target
    #: again, 520 restarts of 198 Deployments in the 1,000-node bench)
    in_batch: bool = False


@dataclass
class BatchMemo:
    """What the signals of one batch (an Alertmanager group, a CloudEvents
    batch, a replay file) read once and share: cluster objects per cluster
    (``facts.MemoFacts``), each target's ledger history, and the targets
    acted on, so a storm of alerts about one Deployment is answered as the
    ledger would answer, without a claim each. A denial is never remembered."""

    facts: dict[str, dict[Any, Any]] = field(default_factory=dict)
    history: dict[str, list[LedgerRecord]] = field(default_factory=dict)
    taken: dict[tuple[str, str], TakenTarget] = field(default_factory=dict)


@dataclass
class Pipeline:
    settings: Settings
    routes: Routes
    catalogue: Mapping[str, Remediation]
    cluster: ClusterAccess
    ledger: Ledger
    policy: PolicyEngine
    credentials: CredentialBroker
    clock: Callable[[], float] = time.time
    holder: str = field(default_factory=default_holder)
    #: verification polling: a monotonic clock and a sleep (tests pass fakes)
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    #: where an ``applied`` outcome goes at once, before verification
    #: finishes (an outcome sink, when one is configured); the final outcome,
    #: verified, is what ``handle`` returns.
    publish: OutcomeSink | None = None
    #: the target's error budget for the policy (``slo`` input); None: none
    slo: SLOSource | None = None
    #: fleet limits (the circuit breaker) judged one at a time across workers
    fleet_lock: FleetLock = field(default_factory=LocalFleetLock)

    def __post_init__(self) -> None:
        # a remediation whose declaration lacks a piece (an action without a
        # verification check) is refused here, at start-up
        verification.validate(self.catalogue)

    # -- helpers -----------------------------------------------------------
    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def _outcome(self, signal: Signal, status: Status, function: str, *,
                 plan: Plan | None = None, reasons: tuple[str, ...] = (),
                 decision: Decision | None = None, dry_run: bool = True,
                 target: ObjectRef | None = None, retryable: bool = False,
                 results: list[StepResult] | None = None,
                 approval: Mapping[str, Any] | None = None,
                 verification: Mapping[str, Any] | None = None) -> Outcome:
        return Outcome(
            status=status, function=function, event_id=signal.event_id,
            event_source=signal.source, target=target or (plan.target if plan else None),
            plan=plan, reasons=reasons + tuple(_describe_results(results)),
            decision=decision, dry_run=dry_run, traceparent=signal.traceparent,
            tracestate=signal.tracestate, retryable=retryable, approval=approval,
            verification=verification, requester=signal.requester or None)

    def _history(self, target: str, window: float) -> list[LedgerRecord]:
        """What planners see of the ledger: actions taken or in flight on
        ``target`` in the window (denials and skips are not history: a storm
        of them must not push the actions out of the newest 100)."""
        since = self.clock() - window
        return [r for r in self.ledger.history(target=target, statuses=TAKEN)
                if r.updated_at >= since]

    def stats(self, signal: Signal, plan: Plan) -> dict[str, Any]:
        """The ledger counts the policy sees for ``plan`` (itself excluded);
        for an agent's signal also the agents' own: every agent's requests,
        and this client's, taken, in flight or awaiting approval in the
        window (read from the agent event-id prefix the ledger keeps)."""
        now = self.clock()
        stats: dict[str, Any] = dict(self.ledger.stats(
            plan, now=now, window=STATS_WINDOW_SECONDS, exclude_key=plan.key))
        if signal.requester.get("kind") == "agent":
            since, mine = now - STATS_WINDOW_SECONDS, agent_prefix(signal.requester)
            agents = [r for r in self.ledger.history(statuses=AGENT_COUNTED,
                                                     limit=AGENT_HISTORY_LIMIT)
                      if r.event_id.startswith(AGENT_EVENT_PREFIX)
                      and r.key != plan.key and r.updated_at >= since
                      and (r.status is not LedgerStatus.PENDING or r.expires_at >= now)]
            stats["agent_actions_in_window"] = len(agents)
            stats["agent_client_actions_in_window"] = sum(
                r.event_id.startswith(mine) for r in agents)
        return stats

    def _batch_history(self, batch: BatchMemo) -> Callable[[str, float], list[LedgerRecord]]:
        """History read once per target per batch (a storm asks for the same
        Deployment's history thousands of times); :meth:`handle` drops the
        memo whenever a signal of the batch may have written to the ledger."""
        def history(target: str, window: float) -> list[LedgerRecord]:
            if target not in batch.history:
                batch.history[target] = self.ledger.history(target=target, statuses=TAKEN)
            since = self.clock() - window
            return [r for r in batch.history[target] if r.updated_at >= since]
        return history

    def route(self, signal: Signal, requested: str = "") -> str:
        """The function for ``signal``: the event's ``remediation`` extension
        when it names a known function, else the alert's ``remediation``
        label when it does, else the routes file (see :mod:`.routing`)."""
        if requested and requested in self.catalogue:
            return requested
        label = signal.labels.get(REMEDIATION_LABEL, "")
        if label and label in self.catalogue and signal.type != TYPE_SPLUNK_RESULT:
            return label
        return self.routes.function_for_signal(signal)

    # -- the path ----------------------------------------------------------
    def handle(self, signal: Signal, *, via: str = "trigger", requested: str = "",
               batch: BatchMemo | None = None) -> Outcome:
        """Handle one signal. ``batch``: shared by the signals of one batch
        so cluster facts are read once per batch, not once per alert. One
        trace per signal when tracing is on (see :mod:`.tracing`)."""
        with tracing.root(signal.traceparent, signal.tracestate, via=via,
                          event_type=signal.type, alertname=signal.name) as root:
            return tracing.finish(root, self._handle(signal, via=via, requested=requested,
                                                     batch=batch))

    def _handle(self, signal: Signal, *, via: str, requested: str,
                batch: BatchMemo | None) -> Outcome:
        # a signal alone is a batch of one: the objects its plan read are the
        # ones the policy judges and the apply remembers, read once (issue 18)
        batch = batch if batch is not None else BatchMemo()
        planned = self.plan(signal, requested=requested, batch=batch, via=via)
        if isinstance(planned, Outcome):
            return planned
        cluster = self.settings.cluster
        outcome = self._run(signal, planned, via=via, cluster=cluster, batch=batch)
        if outcome.status in TARGET_TAKEN or outcome.status is Status.RETRY:
            # a record the planners' history holds (taken, or a claim kept in
            # flight) may have been written: read it again. A denial, a
            # failure or a skip writes none (the 1,000-node storm's 200
            # denials each cleared it, and every target's history was listed
            # again after each: 24,776 requests for 398 decisions)
            batch.history.clear()
        if outcome.status is not Status.DUPLICATE:
            if outcome.status in (Status.APPLIED, Status.PARTIAL):
                _forget_written(batch, planned)
            if outcome.status in TARGET_TAKEN and self.settings.ledger.target_window > 0:
                batch.taken[(str(planned.target), planned.action)] = TakenTarget(
                    planned.key, outcome.status.value, self.clock(), in_batch=True)
        return outcome

    def plan(self, signal: Signal, *, requested: str = "",
             batch: BatchMemo | None = None, via: str = "trigger",
             schedule: bool = True) -> Plan | Outcome:
        """Route and plan ``signal`` (reads only: cluster facts and ledger
        history): the Plan, or the Outcome that ends the path before any claim
        (no route, not served, resolved, nothing to do, bad input, retry).
        ``schedule=False``: work that is not due yet is answered ``scheduled``
        without a ledger record (an explanation writes nothing)."""
        served_clusters = self.settings.served_clusters
        if signal.cluster and served_clusters and signal.cluster not in served_clusters:
            # never plan one cluster's alert against another cluster's objects
            return self._outcome(signal, Status.REJECTED, "", reasons=(
                f"cluster {signal.cluster[:80]!r} is not served here (this instance serves "
                f"{', '.join(served_clusters)}: REMEDIATION_CLUSTERS); nothing was read or "
                "changed",))
        with tracing.span("route"):
            function = self.route(signal, requested)
        if not function:
            label = signal.labels.get(REMEDIATION_LABEL, "")
            why = f"no remediation is routed for {signal.name!r}" + (
                f" (label {REMEDIATION_LABEL}={label!r} names no function: known are "
                f"{', '.join(sorted(self.catalogue))})"[:300] if label else "")
            return self._outcome(signal, Status.SKIPPED, "", reasons=(why,))
        served = self.settings.functions
        if served and function not in served:
            return self._outcome(signal, Status.SKIPPED, function,
                                 reasons=(f"function {function} is not served here",))
        remediation = self.catalogue.get(function)
        if remediation is None:
            return self._outcome(signal, Status.SKIPPED, function,
                                 reasons=(f"function {function} is not in the catalogue",))
        if signal.status == "resolved" and not remediation.handles_resolved:
            return self._outcome(signal, Status.SKIPPED, function,
                                 reasons=("resolved alert: nothing to do for this function",))

        # The one cluster this process reads is the one it writes to, with that
        # cluster's credentials (issue 15): an event naming another cluster was
        # refused above, before any read; the event never picks the cluster of
        # a write (the allow-list's names are this one cluster's).
        cluster = self.settings.cluster
        try:
            facts = self.cluster.facts(cluster)
            if batch is not None:
                facts = MemoFacts(facts, batch.facts.setdefault(cluster, {}))
            ctx = PlanContext(signal=signal, facts=facts, now=self._now(),
                              options=self.routes.options_for(function),
                              history=self._history if batch is None
                              else self._batch_history(batch))
            with tracing.span("plan", function=function):
                planned = remediation.planner(ctx)
        except InvalidInput as exc:
            return self._outcome(signal, Status.REJECTED, function, reasons=(str(exc),))
        except TemporaryError as exc:
            return self._outcome(signal, Status.RETRY, function, retryable=True,
                                 reasons=(f"cannot read cluster facts: {exc}",))
        if isinstance(planned, NoPlan):
            if planned.due_in:
                if via == "sweep":  # not due after all: the record stays for the next sweep
                    return self._outcome(signal, Status.RETRY, function, reasons=planned.reasons,
                                         target=planned.target, retryable=True)
                if not schedule:
                    return self._outcome(signal, Status.SCHEDULED, function,
                                         reasons=planned.reasons, target=planned.target)
                return self._schedule(signal, function, planned)
            if planned.retry_after:
                return self._outcome(signal, Status.RETRY, function, reasons=planned.reasons,
                                     target=planned.target, retryable=True)
            if planned.already_done:
                return self._outcome(signal, Status.DUPLICATE, function, reasons=planned.reasons,
                                     target=planned.target)
            return self._outcome(signal, Status.SKIPPED, function, reasons=planned.reasons,
                                 target=planned.target)
        return planned

    def _run(self, signal: Signal, plan: Plan, *, via: str, cluster: str,
             batch: BatchMemo | None = None) -> Outcome:
        fn = plan.function
        dry_run = self.settings.dry_run or not self.cluster.live
        now = self.clock()
        window = self.settings.ledger.target_window
        taken = batch.taken.get((str(plan.target), plan.action)) if batch else None
        if taken is not None and (taken.in_batch or now - taken.at <= window):
            # Earlier in this batch the same action on the same target was taken,
            # or the ledger said it was: the claim would answer the same again (a
            # storm of alerts about one Deployment asks thousands of times).
            if taken.key != plan.key:
                return self._target_recent(signal, plan, taken.status, now - taken.at, dry_run)
            if taken.status in ACTED:
                return self._outcome(signal, Status.DUPLICATE, fn, plan=plan, dry_run=dry_run,
                                     reasons=(f"already handled for this incident "
                                              f"({taken.status})",))
        since = metrics.started()
        try:
            with tracing.span("claim", function=fn, action=plan.action, key=plan.key,
                              target=str(plan.target)):
                claim = self.ledger.claim(plan, holder=self.holder, event_id=signal.event_id,
                                          now=now, ttl=self.settings.ledger.claim_ttl,
                                          target_window=self.settings.ledger.target_window)
        except TemporaryError as exc:  # the Lease ledger's API is down or slow
            metrics.claimed(None, since)
            return self._outcome(signal, Status.RETRY, fn, plan=plan, dry_run=dry_run,
                                 retryable=True, reasons=(f"ledger unavailable: {exc}",))
        metrics.claimed(claim, since)
        if not claim.won and claim.status == ClaimResult.TARGET_RECENT:
            if batch is not None and claim.other_status in ACTED:
                batch.taken[(str(plan.target), plan.action)] = TakenTarget(
                    claim.other_key, claim.other_status, now - claim.age)
            return self._target_recent(signal, plan, claim.other_status, claim.age, dry_run)
        if not claim.won:
            if claim.status == LedgerStatus.PENDING:
                rec = self.ledger.get(plan.key)
                return self._outcome(signal, Status.PENDING, fn, plan=plan, dry_run=dry_run,
                                     approval=_approval_info(rec),
                                     reasons=("waiting for a human's approval "
                                              f"(remediate approve {plan.key})",))
            if claim.status == LedgerStatus.CLAIMED:
                return self._outcome(signal, Status.RETRY, fn, plan=plan, dry_run=dry_run,
                                     retryable=True, reasons=(
                                         "another worker holds this remediation right now",))
            return self._outcome(signal, Status.DUPLICATE, fn, plan=plan, dry_run=dry_run,
                                 reasons=(f"already handled for this incident ({claim.status})",))
        try:
            return self._claimed(signal, plan, claim, via=via, cluster=cluster,
                                 dry_run=dry_run, batch=batch)
        except BaseException:
            # Whatever went wrong unexpectedly, nothing is left claimed forever.
            self.ledger.release(plan.key, holder=self.holder)
            raise

    def _schedule(self, signal: Signal, function: str, planned: NoPlan) -> Outcome:
        """Not yet: record the signal for the sweep and answer at once (the
        sender has nothing to retry; see ``sweep``)."""
        now = self.clock()
        due_at = now + planned.due_in
        target = str(planned.target or "")
        key = "scheduled/" + stable_digest(function, signal.incident, signal.status, target,
                                           length=32)
        try:
            created = self.ledger.schedule(key, function=function, target=target,
                                           event_id=signal.event_id, now=now, due_at=due_at,
                                           signal=signal.to_record(),
                                           reasons=list(planned.reasons))
            rec = None if created else self.ledger.get(key)
        except TemporaryError as exc:
            return self._outcome(signal, Status.RETRY, function, target=planned.target,
                                 retryable=True, reasons=(f"ledger unavailable: {exc}",))
        if rec is not None:
            return self._outcome(signal, Status.DUPLICATE, function, target=planned.target,
                                 reasons=planned.reasons + (
                                     f"already scheduled for {_iso(rec.expires_at)} "
                                     f"({rec.status.value})",))
        return self._outcome(signal, Status.SCHEDULED, function, target=planned.target,
                             reasons=planned.reasons + (
                                 f"scheduled: the sweep acts at {_iso(due_at)} "
                                 "(remediate sweep)",))

    def sweep(self, *, limit: int = 100) -> list[Outcome]:
        """Run the path for each scheduled record whose time has come (the
        functions served here only) and mark it ``swept``; one that needs a
        retry (a dependency down, not due after all) stays for the next sweep."""
        served = self.settings.functions
        outcomes = []
        for rec in self.ledger.due(now=self.clock(), limit=limit):
            function = rec.function
            if served and function not in served:
                continue
            signal = Signal.from_record(rec.signal)
            outcome = self.handle(signal, via="sweep", requested=function)
            outcomes.append(outcome)
            if outcome.status is not Status.RETRY:
                self.ledger.finish(rec.key, LedgerStatus.SWEPT, now=self.clock(),
                                   reasons=[outcome.status.value, *outcome.reasons][:10])
        return outcomes

    def _target_recent(self, signal: Signal, plan: Plan, other_status: str, age: float,
                       dry_run: bool) -> Outcome:
        return self._outcome(signal, Status.DUPLICATE, plan.function, plan=plan,
                             dry_run=dry_run,
                             reasons=(f"{plan.target}: {plan.action} already {other_status} "
                                      f"{int(age)}s ago for another alert; one action per "
                                      f"target in {int(self.settings.ledger.target_window)}s",))

    def _retry(self, signal: Signal, plan: Plan, why: str, *, dry_run: bool,
               decision: Decision | None = None) -> Outcome:
        """Nothing done; release the claim so a redelivery can act."""
        self.ledger.release(plan.key, holder=self.holder)
        return self._outcome(signal, Status.RETRY, plan.function, plan=plan, decision=decision,
                             dry_run=dry_run, retryable=True, reasons=(why,))

    def _final(self, signal: Signal, plan: Plan, status: Status, *, dry_run: bool,
               decision: Decision | None, reasons: tuple[str, ...],
               results: list[StepResult] | None = None, acted: bool = False) -> Outcome:
        """Record a final status for the key and report it. ``acted``: the
        cluster was already changed, so a ledger that fails now must not turn
        the answer into "not acted on" (issue 15): the outcome still says what
        was done, with a warning that the ledger did not record it."""
        since = metrics.started()
        try:
            self.ledger.finish(plan.key, LedgerStatus(status.value), now=self.clock(),
                               decision=decision.as_dict() if decision else None,
                               reasons=list(reasons))
            metrics.ledger_operation("finish", since)
        except Exception as exc:
            if not acted:
                raise
            log.error("remediation %s was %s but the ledger could not record it: %s",
                      plan.key, status.value, exc)
            reasons = reasons + (
                f"warning: {status.value}, but the ledger could not record it ({exc}); the "
                f"claim stays held until it expires ({int(self.settings.ledger.claim_ttl)}s)",)
        return self._outcome(signal, status, plan.function, plan=plan, decision=decision,
                             dry_run=dry_run, reasons=reasons, results=results)

    def _read(self, cluster: str, batch: BatchMemo | None) -> ClusterFacts:
        """The cluster facts a signal's plan read (its batch's memo): the policy
        judges, and the apply remembers, the objects the planner saw, with no
        second read of each (issue 18). Verification reads the cluster afresh."""
        facts = self.cluster.facts(cluster)
        return MemoFacts(facts, batch.facts.setdefault(cluster, {})) \
            if batch is not None else facts

    def _claimed(self, signal: Signal, plan: Plan, claim: ClaimResult, *, via: str,
                 cluster: str, dry_run: bool, batch: BatchMemo | None = None) -> Outcome:
        """Judge and run a claimed plan; a plan that counts against a fleet
        limit (the circuit breaker) is judged under the limit's lock on counts
        read again now, and the lock is let go once its first step is made:
        a batch's memo and a second worker would each count the fleet as it
        was before the other's cordon (see ``guard.fleet_lock``)."""
        remediation = self.catalogue.get(plan.function)
        limit = remediation.fleet_limit if remediation is not None else None
        if limit is None or not limit.applies(plan):
            return self._judge(signal, plan, claim, via=via, cluster=cluster, dry_run=dry_run,
                               batch=batch)
        holder = f"{self.holder}/{plan.key}"
        try:
            got = self._acquire_fleet(limit.name, holder)
        except TemporaryError as exc:
            return self._retry(signal, plan, f"ledger unavailable: {exc}", dry_run=dry_run)
        if not got:
            return self._retry(signal, plan, (
                f"another worker is judging a change counted by the fleet limit {limit.name} "
                f"(held past {FLEET_LOCK_WAIT_SECONDS:g}s); nothing was done"), dry_run=dry_run)
        held = True

        def let_go() -> None:
            nonlocal held
            if held:
                held = False
                try:
                    self.fleet_lock.release(limit.name, holder=holder)
                except Exception as exc:  # noqa: BLE001 - it expires on its own
                    log.warning("could not release the fleet lock %s (it expires in %ss): %s",
                                limit.name, int(FLEET_LOCK_TTL_SECONDS), exc)

        try:
            try:
                fresh = limit.refresh(self.cluster.facts(cluster), plan)
            except TemporaryError as exc:
                return self._retry(signal, plan, f"cannot read cluster facts: {exc}",
                                   dry_run=dry_run)
            plan = replace(plan, params=freeze({**thaw(plan.params), **fresh}))
            return self._judge(signal, plan, claim, via=via, cluster=cluster,
                               dry_run=dry_run, batch=batch, first_done=let_go)
        finally:
            let_go()

    def _acquire_fleet(self, name: str, holder: str) -> bool:
        """Poll for a fleet lock for at most FLEET_LOCK_WAIT_SECONDS."""
        deadline = self.monotonic() + FLEET_LOCK_WAIT_SECONDS
        delay = 0.02
        while not self.fleet_lock.acquire(name, holder=holder, now=self.clock(),
                                          ttl=FLEET_LOCK_TTL_SECONDS):
            if self.monotonic() >= deadline:
                return False
            self.sleep(delay)
            delay = min(delay * 2, 0.25)
        return True

    def _judge(self, signal: Signal, plan: Plan, claim: ClaimResult, *, via: str,
               cluster: str, dry_run: bool, batch: BatchMemo | None = None,
               first_done: Callable[[], None] | None = None) -> Outcome:
        stats = self.stats(signal, plan)
        approval = {"approved_by": claim.approved_by} if claim.approved_by else None
        try:
            read = self._read(cluster, batch)
            facts = target_facts(plan, read)
        except TemporaryError as exc:
            return self._retry(signal, plan, f"cannot read cluster facts: {exc}",
                               dry_run=dry_run)
        since = metrics.started()
        try:
            with tracing.span("decide", action=plan.action) as decide_span:
                decision = decide(self.policy, plan, signal, actor=self.settings.actor,
                                  via=via, cluster=cluster,
                                  self_namespace=self.settings.kube.self_namespace,
                                  dry_run=dry_run, stats=stats, now=self._now(),
                                  approval=approval, facts=facts, slo=self._slo(plan))
                if decide_span is not None:
                    decide_span.set_attribute("remediation.allow", decision.allow)
        except TemporaryError as exc:
            metrics.decided(self.policy, None, since)
            return self._retry(signal, plan, f"policy unavailable: {exc}", dry_run=dry_run)
        metrics.decided(self.policy, decision, since)
        if not decision.allow:
            return self._final(signal, plan, Status.DENIED, dry_run=dry_run, decision=decision,
                               reasons=decision.reasons)
        if decision.needs_approval:
            return self._hold(signal, plan, decision, dry_run=dry_run, via=via)
        dry_run = dry_run or decision.dry_run
        if not self.cluster.live:
            return self._final(signal, plan, Status.PLANNED, dry_run=True, decision=decision,
                               reasons=decision.reasons + (
                                   "plan only: facts come from a snapshot",))
        return self._execute(signal, plan, decision, cluster=cluster, dry_run=dry_run,
                             read=read, first_done=first_done)

    def _slo(self, plan: Plan) -> dict[str, Any] | None:
        """The target's error budget; a source that fails anyway gives an
        unavailable SLO (the policy's relaxing rules then do not fire)."""
        if self.slo is None:
            return None
        try:
            return self.slo.read(plan.target, at=self.clock())
        except Exception as exc:  # noqa: BLE001 - fail closed, never fail the path
            log.warning("SLO of %s not read: %s", plan.target, type(exc).__name__)
            return {"available": False, "reason": f"not read ({type(exc).__name__})"}

    def _hold(self, signal: Signal, plan: Plan, decision: Decision, *,
              dry_run: bool, via: str) -> Outcome:
        """Park the claimed key until a human approves it or it expires. The
        approval-requested event is the reply to a Trigger's delivery; on the
        other paths (webhooks, replay), which have no reply event, it goes to
        the outcome sink, so a notifier subscribed to it hears either way."""
        now = self.clock()
        expires = now + self.settings.approval.ttl
        reasons = decision.reasons + (
            f"needs a human's approval before {_iso(expires)}: remediate approve {plan.key}",)
        self.ledger.hold(plan.key, holder=self.holder, now=now, expires_at=expires,
                         signal=signal.to_record(), decision=decision.as_dict(),
                         reasons=list(reasons))
        log.warning("remediation %s (%s on %s) waits for approval until %s", plan.key,
                    plan.action, plan.target, _iso(expires))
        pending = self._outcome(signal, Status.PENDING, plan.function, plan=plan,
                                decision=decision, dry_run=dry_run, reasons=reasons,
                                approval={"id": plan.key, "requested_at": _iso(now),
                                          "expires_at": _iso(expires),
                                          "approve": f"remediate approve {plan.key}"})
        if via not in REPLY_VIAS and self.publish is not None:
            try:
                self.publish(pending)
            except Exception as exc:  # noqa: BLE001 - the reply still says pending
                log.warning("could not publish the approval request: %s", exc)
        return pending

    def approve(self, key: str, approver: str, *, via: str = "approval",
                expires_at: str = "") -> Outcome:
        """A human approved ``key``: approve it in the ledger (once, before it
        expires) and run the path again for the kept signal. The re-plan reads
        the cluster as it is now, the claim takes the approved key, and the
        policy sees who approved."""
        if expires_at:  # a signed approval names the request it approves
            current = self.ledger.get(key)
            if current is not None and current.status is LedgerStatus.PENDING \
                    and _iso(current.expires_at) != expires_at:
                return Outcome(status=Status.REJECTED, function=current.function,
                               event_id=key, event_source="approval", dry_run=True, reasons=(
                                   f"this approval was signed for an earlier request of {key} "
                                   f"(expiring {expires_at}); the pending one expires "
                                   f"{_iso(current.expires_at)}",))
        result = self.ledger.approve(key, approver=approver, now=self.clock())
        rec = result.record
        if not result.ok and result.status != LedgerStatus.APPROVED:
            # unknown or expired: nothing to release; anything else is finished
            status = Status.REJECTED if result.status in ("unknown", "expired") \
                else Status.DUPLICATE
            why = {"unknown": f"no remediation {key} waits for approval",
                   "expired": f"the approval request {key} expired"}.get(
                       result.status, f"remediation {key} is already {result.status}")
            return Outcome(status=status, function=rec.function if rec else "",
                           event_id=(rec.event_id if rec else "") or key,
                           event_source="approval", reasons=(why,), dry_run=True)
        signal = Signal.from_record(rec.signal if rec else {})
        log.warning("remediation %s approved by %s", key, approver)
        outcome = self.handle(signal, via=via, requested=rec.function if rec else "")
        if outcome.plan is not None and outcome.plan.key != key and \
                outcome.status is not Status.RETRY:
            # the cluster changed since: this plan is another one, judged afresh
            outcome = replace(outcome, reasons=outcome.reasons + (
                f"the approved plan {key} no longer applies; this is a new plan",))
        return replace(outcome, approval={**(outcome.approval or {}), "id": key,
                                          "approved_by": approver})

    def _execute(self, signal: Signal, plan: Plan, decision: Decision, *, cluster: str,
                 dry_run: bool, read: ClusterFacts | None = None,
                 first_done: Callable[[], None] | None = None) -> Outcome:
        try:
            with tracing.span("credentials", action=plan.action):
                credential = self.credentials.lease(plan, cluster)
        except TemporaryError as exc:
            return self._retry(signal, plan, f"credentials unavailable: {exc}", dry_run=dry_run,
                               decision=decision)
        except ActionFailed as exc:
            return self._final(signal, plan, Status.FAILED, dry_run=dry_run, decision=decision,
                               reasons=(f"credentials refused: {exc}",))
        try:
            return self._apply(signal, plan, decision, credential, cluster=cluster,
                               dry_run=dry_run, read=read, first_done=first_done)
        finally:
            self.credentials.revoke(credential)

    def _apply(self, signal: Signal, plan: Plan, decision: Decision,
               credential: ScopedCredential, *, cluster: str, dry_run: bool,
               read: ClusterFacts | None = None,
               first_done: Callable[[], None] | None = None) -> Outcome:
        fn = plan.function
        owners = self._owners(plan, read or self.cluster.facts(cluster)) if not dry_run else {}
        writer = tracing.traced(self.cluster.writer(cluster, credential))
        try:
            try:
                results = execute(plan, writer, dry_run=dry_run, first_done=first_done)
            except TemporaryError as exc:
                unanswered = exc.unanswered if isinstance(exc, DependencyUnavailable) else True
                if not dry_run and unanswered and self._relative(plan):
                    return self._outcome(
                        signal, Status.RETRY, fn, plan=plan, decision=decision,
                        dry_run=dry_run, retryable=True,
                        reasons=(f"cluster unavailable: {exc}",
                                 "the change may have landed without an answer: the claim is "
                                 f"kept for {int(self.settings.ledger.claim_ttl)}s, then a "
                                 "retry checks whether it took effect before acting again"))
                return self._retry(signal, plan, f"cluster unavailable: {exc}", dry_run=dry_run,
                                   decision=decision)
            except PartialExecution as exc:
                if not dry_run:
                    writer.record_event(plan.target, reason="RemediationPartial",
                                        message=f"{fn}: {plan.action} partly done: {exc}"[:1000],
                                        type="Warning")
                return self._final(signal, plan, Status.PARTIAL, dry_run=dry_run,
                                   decision=decision, reasons=(str(exc),), results=exc.results,
                                   acted=not dry_run)
            except ActionFailed as exc:
                return self._final(signal, plan, Status.FAILED, dry_run=dry_run,
                                   decision=decision, reasons=(str(exc),),
                                   results=exc.results if isinstance(exc, StepFailed) else [])
            if not dry_run:
                writer.record_event(
                    plan.target, reason="RemediationApplied",
                    message=(f"{fn}: {plan.action} for {signal.name or 'alert'} "
                             f"(event {signal.event_id}, incident {signal.incident})"
                             + _requested_by(signal))[:1000])
            extra = ("server-side dry run accepted",) if dry_run else ()
            applied = self._final(signal, plan, Status.PLANNED if dry_run else Status.APPLIED,
                                  dry_run=dry_run, decision=decision,
                                  reasons=decision.reasons + extra, results=results,
                                  acted=not dry_run)
        finally:
            writer.close()
        if not dry_run:
            metrics.applied(signal, fn, self.clock())
        if dry_run or self.settings.verify.deadline <= 0:
            return applied
        if self.publish is not None:
            try:
                self.publish(applied)
            except Exception as exc:  # noqa: BLE001 - the final outcome still reports
                log.warning("could not publish the applied outcome early: %s", exc)
        with tracing.span("verify", action=plan.action) as verify_span:
            verified = self._verify(plan, cluster, owners)
            if verify_span is not None:
                verify_span.set_attribute("remediation.result", str(verified["result"]))
        metrics.verified(signal, fn, str(verified["result"]), self.clock())
        return replace(applied, verification=verified)

    def _relative(self, plan: Plan) -> bool:
        """Is the plan's action relative to the state it was planned on (a
        scale-out adds replicas)? Then a write that may have landed unanswered
        (a timeout, a reset, a gateway error; not a 429/503 refusal) keeps the
        claim instead of releasing it: repeating it would act twice (the
        planner reads the kept record: see scale_engine)."""
        remediation = self.catalogue.get(plan.function)
        spec = remediation.action(plan.action) if remediation is not None else None
        return spec is not None and spec.relative

    def _owners(self, plan: Plan, facts: ClusterFacts) -> dict[str, Any]:
        """Owners of the pods the plan removes, read before they are gone (as
        the plan saw them: the pods it lists were read with the node's list)."""
        if not any(s.kind == "Pod" and s.verb in ("evict", "delete") for s in plan.steps):
            return {}
        try:
            return verification.pod_owners(plan, facts)
        except TemporaryError:
            return {}

    def _verify(self, plan: Plan, cluster: str, owners: dict[str, Any]) -> dict[str, Any]:
        """Look until the fix took, cannot take, or the deadline passes; record it."""
        cfg = self.settings.verify
        start = self.monotonic()
        deadline = start + cfg.deadline
        verdict, looks, unreadable = None, 0, ""
        while True:
            try:
                verdict = verification.check(plan, self.cluster.facts(cluster), owners=owners,
                                             catalogue=self.catalogue)
                unreadable = ""
            except TemporaryError as exc:
                unreadable = str(exc)
            looks += 1
            if verdict is not None and not unreadable and (verdict.done or verdict.failed):
                break
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                break
            self.sleep(min(cfg.interval, remaining))
        seconds = round(self.monotonic() - start, 3)
        if verdict is not None and verdict.done and not unreadable:
            result, detail = "succeeded", verdict.detail
        elif verdict is None or unreadable:
            result, detail = "unknown", f"could not read the cluster: {unreadable}"
        elif verdict.failed:
            result, detail = "failed", verdict.detail
        else:
            result, detail = "failed", (f"not done within {cfg.deadline:g}s: {verdict.detail}")
        try:
            self.ledger.record_verification(plan.key, result, detail=detail, now=self.clock())
        except Exception as exc:  # noqa: BLE001 - the fix is applied; report it anyway
            log.error("could not record the verification of %s: %s", plan.key, exc)
            detail = f"{detail} (warning: the ledger could not record this: {exc})"
        (log.info if result == "succeeded" else log.warning)(
            "verification of %s on %s: %s (%s)", plan.action, plan.target, result, detail)
        return {"result": result, "detail": detail, "seconds": seconds, "checks": looks}


#: kinds whose change moves fleet-wide facts: the circuit breaker's count of
#: cordoned GPU nodes, the free GPUs a placement counts on
FLEET_KINDS = frozenset({"Node", "Pod"})


def _forget_written(batch: BatchMemo, plan: Plan) -> None:
    """A node was cordoned or pods evicted: the batch's next plans read nodes
    and pods again, so a second drain in one Alertmanager group counts the
    first one's cordon (the memo would otherwise answer as before it)."""
    kinds = {s.kind for s in plan.steps} & FLEET_KINDS
    for memo in batch.facts.values() if kinds else ():
        for key in [k for k in memo if k[1] in kinds]:
            del memo[key]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _approval_info(rec: LedgerRecord | None) -> dict[str, Any]:
    key = rec.key if rec is not None else ""
    return {"id": key, "expires_at": _iso(rec.expires_at if rec is not None else 0.0),
            "approve": f"remediate approve {key}"}


def _requested_by(signal: Signal) -> str:
    r = signal.requester
    if not r:
        return ""
    model = f", model {r['model']}" if r.get("model") else ""
    return (f"; requested by {r.get('kind', 'agent')} {r.get('client', '?')}{model}: "
            f"{r.get('reason', '')}")


def _describe_results(results: list[StepResult] | None) -> list[str]:
    return [f"{r.step.verb} {r.step.ref}: {r.detail}" for r in results or []]
