"""Prometheus metrics (``GET /metrics``): every decision counted, every
remediation timed, the tool's own dependencies measured (issue 14).

The only module that imports ``prometheus_client`` (import-linter). The rest
of the package calls the small functions below at the points where things
happen (the outcome log line, the claim, the decision, a dependency call,
an applied or verified fix); planners and parsers never do.

Labels are bounded: function and action names come from the catalogue,
statuses and results from fixed sets, a policy denial is counted by the rule
that denied it (:data:`DENIAL_RULES`, never the message), a dependency error
by its HTTP status or a fixed class. No object name, event id or message is
ever a label value.

Threads (waitress, func-python's server) share the process-wide metric
objects, which are thread-safe. With several worker processes, set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by them before
start-up (prometheus_client reads it when first imported): each process
writes its samples there and every ``/metrics`` answers for all of them.
The gauges (GPU nodes cordoned, pending approvals, dead letters) are read at
scrape time from the ledger and the cluster, which the processes share.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger("remediation.metrics")

# no ``_created`` series: a sample per series that no query here reads
disable_created_metrics()  # type: ignore[no-untyped-call]

#: the exposition format served (Prometheus text 0.0.4: what promtool and
#: every Prometheus since 2.0 read)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: the process-wide registry (one per process; in multiprocess mode the
#: samples also go to files in PROMETHEUS_MULTIPROC_DIR)
REGISTRY = CollectorRegistry(auto_describe=True)

#: seconds; a dependency call or a policy decision (fast: milliseconds)
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: seconds from an alert's start to a fix: minutes to hours
REMEDIATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
                       7200.0, 21600.0, 86400.0)
#: a signal that started longer ago than this (or in the future) is not timed:
#: Alertmanager's zero time, a replayed old alert
MAX_AGE = 30 * 86400.0

OUTCOMES = Counter(
    "remediation_outcomes_total", "Outcomes of handled signals, one per signal.",
    ["function", "action", "status"], registry=REGISTRY)
POLICY_DECISIONS = Counter(
    "remediation_policy_decisions_total",
    "Policy decisions by engine and result (allow, deny, needs_approval, error).",
    ["engine", "result"], registry=REGISTRY)
POLICY_DURATION = Histogram(
    "remediation_policy_decision_duration_seconds", "Time to get a policy decision.",
    ["engine"], buckets=FAST_BUCKETS, registry=REGISTRY)
POLICY_DENIALS = Counter(
    "remediation_policy_denials_total",
    "Policy denials by the rule that denied (one per rule of a denial).",
    ["rule"], registry=REGISTRY)
LEDGER_CLAIMS = Counter(
    "remediation_ledger_claims_total",
    "Ledger claims by result (won, duplicate, target_taken, pending, retry, error).",
    ["result"], registry=REGISTRY)
LEDGER_DURATION = Histogram(
    "remediation_ledger_operation_duration_seconds", "Time of ledger operations.",
    ["operation"], buckets=FAST_BUCKETS, registry=REGISTRY)
TIME_TO_APPLIED = Histogram(
    "remediation_time_to_applied_seconds",
    "From the signal's start (the alert's startsAt) to the fix applied.",
    ["function"], buckets=REMEDIATION_BUCKETS, registry=REGISTRY)
TIME_TO_VERIFIED = Histogram(
    "remediation_time_to_verified_seconds",
    "From the signal's start (the alert's startsAt) to the fix verified as taken.",
    ["function"], buckets=REMEDIATION_BUCKETS, registry=REGISTRY)
VERIFICATIONS = Counter(
    "remediation_verifications_total",
    "Verification results after an apply (succeeded, failed, unknown).",
    ["function", "result"], registry=REGISTRY)
DEPENDENCY_DURATION = Histogram(
    "remediation_dependency_request_duration_seconds",
    "Calls to the Kubernetes API, Vault and OPA (every answer, errors too).",
    ["system"], buckets=FAST_BUCKETS, registry=REGISTRY)
DEPENDENCY_ERRORS = Counter(
    "remediation_dependency_errors_total",
    "Failed calls to the Kubernetes API, Vault and OPA by HTTP status or class "
    "(timeout, unreachable, error).",
    ["system", "code"], registry=REGISTRY)
INPUT_REJECTED = Counter(
    "remediation_input_rejected_total",
    "Requests or alerts refused before the path (400/401/404/405/413 slugs, invalid-alert).",
    ["reason"], registry=REGISTRY)
TRUNCATED_ALERTS = Counter(
    "remediation_alertmanager_truncated_alerts_total",
    "Alerts Alertmanager left out of its notifications (max_alerts).", registry=REGISTRY)
TRUNCATED_GROUPS = Counter(
    "remediation_alertmanager_truncated_notifications_total",
    "Alertmanager notifications that left alerts out (max_alerts).", registry=REGISTRY)

#: the label sets Prometheus should see even before the first event, so a
#: rate() over them is 0 rather than absent
SYSTEMS = ("kubernetes", "vault", "opa")
STATUSES = ("applied", "planned", "denied", "skipped", "duplicate", "failed", "rejected",
            "retry", "partial", "scheduled", "pending")
CLAIM_RESULTS = ("won", "duplicate", "target_taken", "pending", "retry", "error")
VERIFICATION_RESULTS = ("succeeded", "failed", "unknown")

#: a policy denial's message -> the rule's name (policies/remediation.rego);
#: the first match wins, anything else is "other"
DENIAL_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (rule, re.compile(pattern)) for rule, pattern in (
        ("not-an-approver", r" is not an approver$"),
        ("unknown-action", r"^unknown action "),
        ("kind-not-allowed", r"^action \S+ may not touch a "),
        ("verb-not-allowed", r"^action \S+ may not "),
        ("too-many-steps", r"^plan has \d+ steps; "),
        ("no-steps", r"^plan has no steps$"),
        ("protected-namespace", r"^namespace \S+ is protected$"),
        ("node-off-limits", r"^node \S+ is off limits$"),
        ("node-without-facts", r"^node \S+: no facts from the cluster"),
        ("control-plane-node", r"^node \S+ is a control-plane node"),
        ("not-a-gpu-node", r"^node \S+ has no GPU capacity"),
        ("not-an-inference-namespace", r"^namespace \S+ is not an inference namespace"),
        ("unknown-workload", r"^restart of an unknown workload"),
        ("workload-not-found", r": not found in the cluster$"),
        ("not-an-inference-engine", r" is not an inference engine"),
        ("cooldown", r"^cooldown: "),
        ("slo-unavailable", r"^slo: unavailable "),
        ("slo-budget-exhausted", r"^slo: \S+ error budget exhausted "),
        ("slo-fast-burn", r"^slo: \S+ burning fast "),
        ("rate-limit", r"^rate limit: "),
        ("cluster-rate-limit", r"^cluster-wide rate limit: "),
        ("too-many-evictions", r"^plan evicts \d+ pods; "),
        ("circuit-breaker", r"^circuit breaker: "),
        ("max-replicas", r"^scale to \d+ replicas exceeds the "),
        ("unmanaged-pods", r"^deleting pods without a controller"),
        ("local-data", r"^evicting pods with local \(emptyDir\) data"),
        ("agent-reason", r"^an agent's request needs a reason$"),
        ("agent-rate-limit", r"^agent rate limit: "),
        ("agent-forbidden-action", r"^agents may not request "),
        ("change-freeze", r"^change freeze "),
        ("maintenance-window", r"^action \S+ runs only in a maintenance window$"),
        ("undefined", r"^policy returned no decision|has no boolean 'allow'$"),
        ("opa-refused", r"^OPA (refused the query|decision is not an object)"),
    ))
DENIAL_RULE_NAMES = tuple(rule for rule, _ in DENIAL_RULES) + ("other",)

#: hvac's exception classes (and a few transports') -> an HTTP status
_ERROR_CLASSES = {"InvalidRequest": "400", "Unauthorized": "401", "Forbidden": "403",
                  "InvalidPath": "404", "UnsupportedOperation": "405",
                  "PreconditionFailed": "412", "RateLimitExceeded": "429",
                  "InternalServerError": "500", "VaultNotInitialized": "501",
                  "BadGateway": "502", "VaultDown": "503"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

_enabled = True
_functions: frozenset[str] = frozenset()


def set_enabled(on: bool) -> None:
    """Metrics on or off (the bench compares both in one run); on by default."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


def known_functions(names: Iterable[str]) -> None:
    """The catalogue's function names: the only values the ``function`` label
    takes (anything else is counted as ``other``), and the series created at
    zero so rates exist before the first event."""
    global _functions
    _functions = frozenset(names)
    for fn in _functions:
        for result in VERIFICATION_RESULTS:
            VERIFICATIONS.labels(fn, result)
    for system in SYSTEMS:
        DEPENDENCY_DURATION.labels(system)
    for result in CLAIM_RESULTS:
        LEDGER_CLAIMS.labels(result)
    for rule in ("circuit-breaker",):
        POLICY_DENIALS.labels(rule)


def _function(name: str) -> str:
    if not name:
        return "none"
    if _functions:
        return name if name in _functions else "other"
    return name if _NAME.match(name) else "other"


# -- outcomes ------------------------------------------------------------------

def outcome(result: Any) -> None:
    """One handled signal's outcome (called where every outcome is logged)."""
    if not _enabled:
        return
    plan = getattr(result, "plan", None)
    action = getattr(plan, "action", "") if plan is not None else ""
    OUTCOMES.labels(_function(str(result.function or "")),
                    action if action and _NAME.match(action) else "none",
                    str(result.status.value)).inc()


def input_rejected(reason: str, count: int = 1) -> None:
    """A request or alert refused before the path; ``reason``: a fixed slug."""
    if _enabled:
        INPUT_REJECTED.labels(reason if _NAME.match(reason) else "other").inc(count)


def alertmanager_truncated(alerts: int) -> None:
    if _enabled and alerts > 0:
        TRUNCATED_ALERTS.inc(alerts)
        TRUNCATED_GROUPS.inc()


# -- the path --------------------------------------------------------------------

def started() -> float:
    """A start time for :func:`claimed` and :func:`decided` (monotonic)."""
    return time.perf_counter()


def claim_result(claim: Any) -> str:
    """The bounded result of a ledger claim (None: the ledger failed)."""
    if claim is None:
        return "error"
    if claim.won:
        return "won"
    status = str(claim.status)
    if status == "target-recent":
        return "target_taken"
    if status == "pending":
        return "pending"
    if status == "claimed":  # another worker holds it now: the sender retries
        return "retry"
    return "duplicate"


def claimed(claim: Any, since: float) -> None:
    """A ledger claim and its duration (``claim`` None: the ledger failed)."""
    if _enabled:
        LEDGER_DURATION.labels("claim").observe(time.perf_counter() - since)
        LEDGER_CLAIMS.labels(claim_result(claim)).inc()


def ledger_operation(operation: str, since: float) -> None:
    if _enabled:
        LEDGER_DURATION.labels(operation).observe(time.perf_counter() - since)


def engine_name(engine: Any) -> str:
    name = type(engine).__name__
    if name == "OpaServerPolicyEngine":
        return "opa"
    if name == "EmbeddedPolicyEngine":
        return "rego"
    return "other"


def denial_rule(reason: str) -> str:
    """The rule a denial message comes from (a fixed set; else ``other``)."""
    for rule, pattern in DENIAL_RULES:
        if pattern.search(reason):
            return rule
    return "other"


def decided(engine: Any, decision: Any, since: float) -> None:
    """A policy decision (``decision`` None: the engine was unavailable)."""
    if not _enabled:
        return
    name = engine_name(engine)
    POLICY_DURATION.labels(name).observe(time.perf_counter() - since)
    if decision is None:
        result = "error"
    elif not decision.allow:
        result = "deny"
        for rule in sorted({denial_rule(str(r)) for r in decision.reasons} or {"other"}):
            POLICY_DENIALS.labels(rule).inc()
    elif decision.needs_approval:
        result = "needs_approval"
    else:
        result = "allow"
    POLICY_DECISIONS.labels(name, result).inc()


def seconds_since_start(signal: Any, now: float) -> float | None:
    """Seconds from the signal's start (``startsAt``; else its event time) to
    ``now``; None when unknown, in the future or implausibly old."""
    text = str(getattr(signal, "starts_at", "") or getattr(signal, "time", "") or "")
    start = parse_time(text)
    if start is None:
        return None
    age = now - start
    return age if 0 <= age <= MAX_AGE else None


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_time(text: str) -> float | None:
    """An RFC 3339 time (Alertmanager's has nanoseconds) as epoch seconds."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(_FRACTION.sub(r"\1", text.strip()))  # 3.11 reads "Z"
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def applied(signal: Any, function: str, now: float) -> None:
    """A fix was applied (not a dry run): time since the signal started."""
    if not _enabled:
        return
    age = seconds_since_start(signal, now)
    if age is not None:
        TIME_TO_APPLIED.labels(_function(function)).observe(age)


def verified(signal: Any, function: str, result: str, now: float) -> None:
    """A verification ended: its result; the time since the signal started
    when the fix took."""
    if not _enabled:
        return
    fn = _function(function)
    VERIFICATIONS.labels(fn, result if result in VERIFICATION_RESULTS else "unknown").inc()
    age = seconds_since_start(signal, now) if result == "succeeded" else None
    if age is not None:
        TIME_TO_VERIFIED.labels(fn).observe(age)


# -- dependencies ------------------------------------------------------------------

def error_code(exc: BaseException) -> str:
    """A bounded code for a failed dependency call: the HTTP status when the
    error carries one, else ``timeout``, ``unreachable`` or ``error``."""
    status = getattr(exc, "status", None)
    if not isinstance(status, int):
        status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int) and 100 <= status <= 599:
        return str(status)
    name = type(exc).__name__
    if name in _ERROR_CLASSES:
        return _ERROR_CLASSES[name]
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return "timeout"
    if isinstance(exc, OSError) or "Connection" in name or name == "MaxRetryError":
        return "unreachable"
    return "error"


class dependency_call:
    """``with dependency_call("vault"): ...``: the call's duration, and its
    error code when it raises (the exception goes on unchanged)."""

    __slots__ = ("_start", "system")

    def __init__(self, system: str) -> None:
        self.system = system
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not _enabled:
            return
        DEPENDENCY_DURATION.labels(self.system).observe(time.perf_counter() - self._start)
        if exc is not None:
            DEPENDENCY_ERRORS.labels(self.system, error_code(exc)).inc()


# -- state read at scrape time ------------------------------------------------------

@dataclass(frozen=True)
class State:
    """What the gauges show, read when scraped; None: not known here."""

    gpu_nodes: int | None = None
    gpu_nodes_cordoned_by_us: int | None = None
    gpu_nodes_cordoned_by_others: int | None = None
    gpu_nodes_cordon_limit: int | None = None
    pending_approvals: int | None = None
    oldest_pending_approval_seconds: float | None = None
    dead_letters: int | None = None


def build_labels() -> dict[str, str]:
    from importlib import metadata

    try:
        version = metadata.version("inference-remediation")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"version": version, "python": platform.python_version()}


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], State] | None) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("remediation_build_info", "Build of the remediation functions.",
                                 labels=["version", "python"])
        info.add_metric(list(build_labels().values()), 1.0)
        yield info
        if self._read is None:
            return
        try:
            state = self._read()
        except Exception as exc:  # noqa: BLE001 - a scrape never fails for a gauge
            log.warning("could not read the state for /metrics: %s", type(exc).__name__)
            return
        if state.gpu_nodes is not None:
            yield _gauge("remediation_gpu_nodes", "GPU nodes in the cluster.", state.gpu_nodes)
        if state.gpu_nodes_cordoned_by_us is not None:
            cordoned = GaugeMetricFamily(
                "remediation_gpu_nodes_cordoned",
                "GPU nodes cordoned now, by this tool (remediation) or someone else (other).",
                labels=["by"])
            cordoned.add_metric(["remediation"], float(state.gpu_nodes_cordoned_by_us))
            cordoned.add_metric(["other"], float(state.gpu_nodes_cordoned_by_others or 0))
            yield cordoned
        if state.gpu_nodes_cordon_limit is not None:
            yield _gauge("remediation_gpu_nodes_cordon_limit",
                         "GPU nodes the circuit breaker lets be cordoned at once "
                         "(policy max_cordoned_gpu_nodes_percent of the GPU nodes).",
                         state.gpu_nodes_cordon_limit)
        if state.pending_approvals is not None:
            yield _gauge("remediation_pending_approvals",
                         "Remediations waiting for a human's approval.", state.pending_approvals)
        if state.oldest_pending_approval_seconds is not None:
            yield _gauge("remediation_oldest_pending_approval_age_seconds",
                         "Age of the oldest remediation waiting for approval (0: none).",
                         state.oldest_pending_approval_seconds)
        if state.dead_letters is not None:
            yield _gauge("remediation_dead_letters", "Dead letters kept (undeliverable events).",
                         state.dead_letters)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        return iter(self._registry.collect())


def exposition(read_state: Callable[[], State] | None = None,
               environ: Mapping[str, str] = os.environ) -> tuple[bytes, str]:
    """The ``/metrics`` body and content type: this process's samples (or all
    processes' with ``PROMETHEUS_MULTIPROC_DIR``), the build info and the
    gauges ``read_state`` returns."""
    registry = CollectorRegistry(auto_describe=False)
    if environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry, path=environ[MULTIPROC_ENV])  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(_StateCollector(read_state))
    return generate_latest(registry), CONTENT_TYPE
