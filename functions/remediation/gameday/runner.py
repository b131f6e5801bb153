"""Running a scenario: a stand to run it on, a virtual clock, the scenario's
settings and routes, and the events delivered through the full path.

Each event is delivered as ``remediate replay`` delivers it (shape detection
and the adapters, :func:`remediation.documents.detect_events`, routed by the
SCENARIO's routes, then :func:`remediation.dispatch.handle_events`: route,
plan, claim, policy, credentials, execute, verify, report), with the
pipeline's clock at ``start + at``.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ..dispatch import handle_events
from ..documents import detect_events
from ..events.binding import JSON_CONTENT_TYPE, SPECVERSION, new_event, validate_attributes
from ..facts import selector_matches
from ..guard.approval import approval_data
from ..model import TYPE_APPROVAL_GRANTED, Outcome, Status, stable_digest
from ..pipeline import Pipeline
from ..routing import Routes, load_routes
from ..runtime import build_pipeline, close_pipeline
from ..settings import Secret, Settings
from .checks import Check, Delivery, Report, check_actions, check_object, check_outcomes
from .scenario import PodRef, Scenario, TimedEvent, Write, with_values

_GAMEDAY_APPROVAL_SECRET = "gameday-approval-secret"


class Stand(Protocol):
    """Where a scenario runs."""

    #: False: plan only (object and action expectations are not checked)
    live: bool

    def clock(self, start: float) -> VirtualClock:
        """The clock the scenario runs on from ``start`` (its wall clock is
        moved to each event's time): :class:`VirtualClock` where nothing else
        moves, :class:`RealTimeClock` where real controllers must be given
        real time to act before verification looks."""
        ...

    def setup(self, scenario: Scenario) -> Settings:
        """Seed the scenario's objects; the Settings to build the pipeline with
        (see :func:`scenario_settings`)."""
        ...

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as it is now; None when it does not exist."""
        ...

    def list_objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        """The objects of ``kind`` in ``namespace`` as they are now (what an
        event's ``current_pod_of`` is resolved against)."""
        ...

    def writes(self) -> list[Write] | None:
        """The API writes made since setup; None when this stand cannot tell."""
        ...

    def close(self) -> None: ...


class VirtualClock:
    """The scenario's wall clock (moved to each event's time) and a separate
    monotonic clock that the pipeline's verification sleeps on."""

    def __init__(self, start: float) -> None:
        self.wall = start
        self.mono = 0.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def sleep(self, seconds: float) -> None:
        self.mono += max(0.0, seconds)


class RealTimeClock(VirtualClock):
    """The scenario's wall clock as :class:`VirtualClock` keeps it (each event
    at ``start + at``, timestamps and windows unchanged), but verification
    waits real time: on a real cluster the controllers, the scheduler and the
    kubelets act in real time, and polling a virtual clock would only spin."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


def scenario_routes(scenario: Scenario, settings: Settings) -> Routes:
    """The routes (settings' file or the packaged ones) with the scenario's options."""
    routes = load_routes(settings.routes_file)
    if not scenario.options:
        return routes
    options = {k: dict(v) for k, v in routes.options.items()}
    for fn, opts in scenario.options.items():
        options[fn] = {**options.get(fn, {}), **opts}
    return replace(routes, options=Routes.from_mapping({"options": options}).options)


def scenario_settings(base: Settings, scenario: Scenario, workdir: Path) -> Settings:
    """``base`` (how the stand reaches its cluster) with the scenario's
    overrides, its policy data written to ``workdir``, an in-memory ledger,
    and an approval secret when the scenario approves anything."""
    env = dict(scenario.settings)
    over = Settings.from_env(env)
    s = replace(base, ledger=replace(base.ledger, path=""))
    given = env.__contains__
    if given("REMEDIATION_DRY_RUN"):
        s = replace(s, dry_run=over.dry_run)
    for key, attr in (("REMEDIATION_ACTOR", "actor"), ("REMEDIATION_CLUSTER", "cluster"),
                      ("REMEDIATION_FUNCTIONS", "functions"),
                      ("REMEDIATION_ROUTES_FILE", "routes_file")):
        if given(key):
            s = replace(s, **{attr: getattr(over, attr)})
    if given("REMEDIATION_NAMESPACE"):
        s = replace(s, kube=replace(s.kube, self_namespace=over.kube.self_namespace))
    groups = {"ledger": {"REMEDIATION_TARGET_WINDOW": "target_window",
                         "REMEDIATION_CLAIM_TTL": "claim_ttl"},
              "verify": {"REMEDIATION_VERIFY_DEADLINE": "deadline",
                         "REMEDIATION_VERIFY_INTERVAL": "interval"},
              "approval": {"REMEDIATION_APPROVAL_TTL": "ttl",
                           "REMEDIATION_APPROVAL_SECRET": "secret",
                           "REMEDIATION_APPROVERS": "approvers"},
              "policy": {"REMEDIATION_POLICY_DIR": "policy_dir"}}
    for group, keys in groups.items():
        changes = {attr: getattr(getattr(over, group), attr)
                   for key, attr in keys.items() if given(key)}
        if changes:
            s = replace(s, **{group: replace(getattr(s, group), **changes)})
    if scenario.policy_data:
        workdir.mkdir(parents=True, exist_ok=True)
        data = workdir / "policy-data.json"
        data.write_text(json.dumps(scenario.policy_data), encoding="utf-8")
        s = replace(s, policy=replace(s.policy, data_file=str(data)))
    if scenario.approvals and not s.approval.secret:
        s = replace(s, approval=replace(s.approval, secret=Secret(_GAMEDAY_APPROVAL_SECRET)))
    return s


def _approval_event(settings: Settings, pending: Outcome, approver: str, at: float) -> Any:
    key = str((pending.approval or {}).get("id") or "")
    attrs = {"specversion": SPECVERSION, "type": TYPE_APPROVAL_GRANTED,
             "source": "/gameday", "id": stable_digest("approval", key, approver, at),
             "datacontenttype": JSON_CONTENT_TYPE, "subject": key}
    if pending.function:
        attrs["remediation"] = pending.function
    return new_event(validate_attributes(attrs),
                     approval_data(settings.approval.secret.reveal(), key, approver,
                                   str((pending.approval or {}).get("expires_at") or "")))


class Unresolved(LookupError):
    """An event names a pod (``current_pod_of``) the stand does not have."""


def _ready(pod: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _node(pod: Mapping[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def current_pod(stand: Stand, ref: PodRef) -> dict[str, Any]:
    """The pod ``ref`` names on ``stand`` now: one the workload's selector
    matches, not being deleted, not finished, on ``ref.node`` when given; the
    Ready one first, then the newest, then the last by name."""
    workload = stand.read(ref.kind, ref.namespace, ref.name)
    if workload is None:
        raise Unresolved(f"{ref.describe()}: there is no {ref.kind} "
                         f"{ref.namespace}/{ref.name}")
    selector = (workload.get("spec") or {}).get("selector")
    pods = [p for p in stand.list_objects("Pod", ref.namespace)
            if selector_matches(selector, p["metadata"].get("labels") or {})
            and not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    here = [p for p in pods if not ref.node or _node(p) == ref.node]
    if not here:
        where = sorted(f"{p['metadata']['name']} on {_node(p) or '(no node)'}" for p in pods)
        raise Unresolved(f"{ref.describe()}: none (its pods: {', '.join(where) or 'none'})")
    return max(here, key=lambda p: (_ready(p), str(p["metadata"].get("creationTimestamp") or ""),
                                    p["metadata"]["name"]))


def resolve_document(ev: TimedEvent, stand: Stand) -> tuple[Any, list[str]]:
    """The event's document with its ``current_pod_of`` values resolved on
    ``stand``, and what each was resolved to (for the report)."""
    if not ev.pod_refs:
        return ev.document, []
    names = {path: current_pod(stand, ref)["metadata"]["name"] for path, ref in ev.pod_refs}
    said = [f"{ref.describe()}: {names[path]}" for path, ref in ev.pod_refs]
    return with_values(ev.document, names), said


def run_scenario(scenario: Scenario, stand: Stand, *,
                 pipeline_factory: Callable[..., Pipeline] | None = None) -> Report:
    """Deliver the events at their virtual times, then check what was expected.
    The scenario's routes (its routes file and options) decide where each
    alert goes: they stamp the events' ``remediation`` extension."""
    clock = stand.clock(scenario.start if scenario.start is not None
                        else datetime.now(tz=UTC).timestamp())
    start = clock.wall
    settings = stand.setup(scenario)
    routes = scenario_routes(scenario, settings)
    pipeline = (pipeline_factory or build_pipeline)(
        settings, routes=routes, clock=clock.now,
        monotonic=clock.monotonic, sleep=clock.sleep)
    deliveries: list[Delivery] = []
    checks: list[Check] = []
    try:
        for i, ev in enumerate(scenario.events):
            clock.wall = start + ev.at
            resolved: list[str] = []
            try:
                if ev.sweep:
                    outcomes = pipeline.sweep()
                else:
                    if ev.approve is not None:
                        events = _approvals(scenario, ev, deliveries, settings, checks)
                    else:
                        document, resolved = resolve_document(ev, stand)
                        events = detect_events(document, where=ev.where, routes=routes)
                    outcomes = handle_events(pipeline, events, via="gameday")
            except Exception as exc:  # noqa: BLE001 - a broken run is a failed check
                checks.append(Check(f"{ev.where} at t+{ev.at:g}s is delivered", False,
                                    f"{type(exc).__name__}: {exc}; the later events were "
                                    "not delivered"))
                break
            deliveries.append(Delivery(i, ev.at, ev.where, outcomes, resolved))
    finally:
        close_pipeline(pipeline)
    checks += check_outcomes(scenario, deliveries, live=stand.live)
    for exp in scenario.expect_objects:
        if not stand.live:
            checks.append(Check(exp.describe(), None, "not checked: plan-only stand"))
        else:
            checks.append(check_object(exp, stand.read(exp.kind, exp.namespace, exp.name)))
    checks += check_actions(scenario.expect_actions, stand.writes() if stand.live else None)
    return Report(scenario.name, checks, deliveries, scenario.source)


def _approvals(scenario: Scenario, ev: TimedEvent, deliveries: Sequence[Delivery],
               settings: Settings, checks: list[Check]) -> list[Any]:
    assert ev.approve is not None
    target = next((d for d in deliveries if d.index == ev.approve.event), None)
    pending = [o for o in (target.outcomes if target else [])
               if o.status is Status.PENDING and (o.approval or {}).get("id")]
    if not pending:
        checks.append(Check(f"{ev.where} at t+{ev.at:g}s: {ev.approve.by} approves "
                            f"{scenario.events[ev.approve.event].where}", False,
                            "that event left nothing pending to approve"))
        return []
    return [_approval_event(settings, o, ev.approve.by, ev.at) for o in pending]


class SnapshotStand:
    """Plan against the scenario's objects: nothing is applied, so reading
    and listing give the snapshot as it was."""

    live = False

    def __init__(self, base: Settings | None = None) -> None:
        self.base = base or Settings()
        self.workdir = Path(tempfile.mkdtemp(prefix="gameday-"))
        self.objects: tuple[Mapping[str, Any], ...] = ()

    def clock(self, start: float) -> VirtualClock:
        return VirtualClock(start)

    def setup(self, scenario: Scenario) -> Settings:
        self.objects = scenario.objects
        snap = self.workdir / "snapshot.json"
        snap.write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                    "items": list(scenario.objects)}), encoding="utf-8")
        settings = scenario_settings(self.base, scenario, self.workdir)
        return replace(settings, dry_run=True, kube=replace(settings.kube, snapshot=str(snap)))

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return next((copy.deepcopy(dict(o)) for o in self.objects if o.get("kind") == kind and
                     (o.get("metadata") or {}).get("namespace", "") == namespace and
                     (o.get("metadata") or {}).get("name") == name), None)

    def list_objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(dict(o)) for o in self.objects if o.get("kind") == kind
                and (o.get("metadata") or {}).get("namespace", "") == namespace]

    def writes(self) -> list[Write] | None:
        return None

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


