"""Game days: a scenario file (a cluster snapshot, a timed list of events, the
expected end state) replayed through the full path.

    name: xid79-drains-the-node
    description: a fatal Xid drains the node, keeps the DaemonSet pod
    snapshot: ../../functions/remediation/defaults/demo/cluster.yaml  # or objects: [...]
    start: "2026-11-01T10:05:00Z"      # the virtual clock's start (default: now)
    settings: {REMEDIATION_TARGET_WINDOW: "300"}   # environment-style overrides
    policy_data: {remediation_config: {limits: {max_cordoned_gpu_nodes_percent: 100}}}
    events:
      - at: 0                          # seconds from start (non-decreasing)
        file: demo:10-dcgm-xid79-fell-off-bus.json   # demo: = the bundled events
        expect: applied                # the status of each event it yields (or a list)
      - at: 30
        body: {...}                    # inline: Alertmanager, Splunk or a CloudEvent
    expect:
      objects:
        - {kind: Node, name: gpu-node-3, path: spec.unschedulable, equals: true}
        - {kind: Pod, namespace: llm-serving, name: vllm-qwen-14b-7c6b5a4d3-k5j6h, absent: true}
        - {kind: Deployment, namespace: llm-serving, name: vllm-llama-7b,
           path: 'spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]',
           exists: true}

Each event is delivered as the replay path does (parse, route, plan, claim,
policy, credentials, execute, verify, report) with the pipeline's clock set
to ``start + at``, so cooldowns, healthy delays and approval expiry play out
in virtual time. A :class:`Stand` is where it runs: the bundled
:class:`SnapshotStand` plans against the snapshot (outcome expectations
checked, a ``planned`` outcome meeting an expected ``applied``; object
expectations reported as not checked: nothing is applied);
the tests' emulator stand applies for real and checks the end state; against
a real cluster, run the events with ``remediate replay --apply`` instead.

``remediate gameday FILE...`` runs scenarios on the snapshot stand.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, TextIO

from .errors import InvalidInput
from .model import Outcome, Status
from .settings import Settings

_STATUSES = {s.value for s in Status}
_PATH = re.compile(r'\.?([^.\[\]"]+)|\["([^"]*)"\]|\[(\d+)\]')


@dataclass(frozen=True)
class TimedEvent:
    at: float
    document: Any
    where: str
    expect: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObjectExpectation:
    kind: str
    namespace: str
    name: str
    path: str = ""
    equals: Any = None
    has_equals: bool = False
    exists: bool | None = None
    absent: bool = False

    def describe(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        what = f"{self.kind}/{ns}{self.name}"
        if self.absent:
            return f"{what} is gone"
        if self.has_equals:
            return f"{what} {self.path} == {json.dumps(self.equals)}"
        return f"{what} {self.path} {'exists' if self.exists is not False else 'absent'}"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    objects: tuple[Mapping[str, Any], ...]
    events: tuple[TimedEvent, ...]
    expect_objects: tuple[ObjectExpectation, ...] = ()
    settings: Mapping[str, str] = field(default_factory=dict)
    policy_data: Mapping[str, Any] = field(default_factory=dict)
    start: float = 0.0
    source: str = ""


@dataclass
class Check:
    what: str
    ok: bool | None  # None: not checked on this stand
    detail: str = ""


@dataclass
class Report:
    scenario: str
    checks: list[Check]
    outcomes: list[tuple[float, Outcome]]

    @property
    def passed(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    def render(self) -> str:
        lines = [f"{'PASS' if self.passed else 'FAIL'} {self.scenario}"]
        for at, o in self.outcomes:
            lines.append(f"  t+{at:g}s {o.status.value:<9} {o.function or '-':<18} "
                         f"{o.target or '-'}  {'; '.join(o.reasons)[:120]}")
        for c in self.checks:
            mark = {True: "ok  ", False: "FAIL", None: "skip"}[c.ok]
            lines.append(f"  [{mark}] {c.what}{': ' + c.detail if c.detail else ''}")
        return "\n".join(lines)


class Stand(Protocol):
    """Where a scenario runs."""

    live: bool

    def setup(self, scenario: Scenario) -> Settings:
        """Seed the snapshot; the Settings to build the pipeline with."""
        ...

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


# -- loading ------------------------------------------------------------------

def _need(doc: Mapping[str, Any], key: str, types: Any, where: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, types):
        raise InvalidInput(f"{where}: '{key}' is missing or not a {getattr(types, '__name__', types)}",
                           key)
    return value


def _events_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("remediation").joinpath("defaults/demo/events")))


def _read(path: Path, where: str) -> Any:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"{where}: cannot read {path}: {exc.strerror}", "file") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{where}: {path} is not valid JSON/YAML: {exc}", "file") from None


def load_scenario(path: str | Path) -> Scenario:
    """Parse and validate a scenario file; InvalidInput names the bad field."""
    from .facts import load_objects

    path = Path(path)
    doc = _read(path, str(path))
    where = path.name
    if not isinstance(doc, Mapping):
        raise InvalidInput(f"{where}: a scenario is a mapping", "scenario")
    unknown = set(doc) - {"name", "description", "snapshot", "objects", "start", "settings",
                          "policy_data", "events", "expect"}
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {sorted(unknown)}", sorted(unknown)[0])
    name = _need(doc, "name", str, where)
    if "snapshot" in doc:
        objects = load_objects(path.parent / _need(doc, "snapshot", str, where))
    else:
        objects = list(_need(doc, "objects", list, where))
    start = 0.0
    if doc.get("start") is not None:
        try:
            start = datetime.fromisoformat(str(doc["start"]).replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise InvalidInput(f"{where}: 'start' is not an RFC 3339 time", "start") from None
    events: list[TimedEvent] = []
    last = 0.0
    for i, ev in enumerate(_need(doc, "events", list, where)):
        at_where = f"{where}: events[{i}]"
        if not isinstance(ev, Mapping):
            raise InvalidInput(f"{at_where}: an event is a mapping", "events")
        at = ev.get("at", 0)
        if not isinstance(at, (int, float)) or isinstance(at, bool) or at < last:
            raise InvalidInput(f"{at_where}: 'at' must be a number of seconds, not before the "
                               "previous event", "at")
        last = float(at)
        if "file" in ev:
            ref = _need(ev, "file", str, at_where)
            file = _events_dir() / ref[5:] if ref.startswith("demo:") else path.parent / ref
            body = _read(file, at_where)
        elif "body" in ev:
            body = ev["body"]
        else:
            raise InvalidInput(f"{at_where}: needs 'file' or 'body'", "file")
        expect = ev.get("expect", ())
        expect = (expect,) if isinstance(expect, str) else tuple(expect)
        bad = [e for e in expect if e not in _STATUSES]
        if bad:
            raise InvalidInput(f"{at_where}: unknown status {bad[0]!r} (one of "
                               f"{sorted(_STATUSES)})", "expect")
        events.append(TimedEvent(float(at), body, at_where, expect))
    checks: list[ObjectExpectation] = []
    expect_doc = doc.get("expect") or {}
    if not isinstance(expect_doc, Mapping):
        raise InvalidInput(f"{where}: 'expect' is a mapping", "expect")
    for i, o in enumerate(expect_doc.get("objects") or []):
        o_where = f"{where}: expect.objects[{i}]"
        if not isinstance(o, Mapping):
            raise InvalidInput(f"{o_where}: a mapping", "objects")
        absent = o.get("absent") is True
        path_expr = o.get("path", "")
        if not absent and not path_expr:
            raise InvalidInput(f"{o_where}: needs 'path' (with equals/exists) or 'absent: true'",
                               "path")
        checks.append(ObjectExpectation(
            kind=_need(o, "kind", str, o_where), namespace=str(o.get("namespace") or ""),
            name=_need(o, "name", str, o_where), path=str(path_expr),
            equals=o.get("equals"), has_equals="equals" in o,
            exists=o.get("exists") if isinstance(o.get("exists"), bool) else None,
            absent=absent))
    settings = doc.get("settings") or {}
    policy = doc.get("policy_data") or {}
    if not isinstance(settings, Mapping) or not isinstance(policy, Mapping):
        raise InvalidInput(f"{where}: 'settings' and 'policy_data' are mappings", "settings")
    return Scenario(name=name, description=str(doc.get("description") or ""),
                    objects=tuple(objects), events=tuple(events),
                    expect_objects=tuple(checks),
                    settings={str(k): str(v) for k, v in settings.items()},
                    policy_data=dict(policy), start=start, source=str(path))


# -- checking -----------------------------------------------------------------

_MISSING = object()


def lookup(obj: Any, path: str) -> Any:
    """``spec.template.metadata.annotations["a/b"]`` or ``spec.taints[0].key``."""
    pos, cur = 0, obj
    for m in _PATH.finditer(path):
        if m.start() != pos:
            raise InvalidInput(f"bad path {path!r} at {pos}", "path")
        pos = m.end()
        part = m.group(1) if m.group(1) is not None else m.group(2)
        if m.group(3) is not None:
            idx = int(m.group(3))
            if not isinstance(cur, list) or idx >= len(cur):
                return _MISSING
            cur = cur[idx]
            continue
        if not isinstance(cur, Mapping) or part not in cur:
            return _MISSING
        cur = cur[part]
    if pos != len(path):
        raise InvalidInput(f"bad path {path!r} at {pos}", "path")
    return cur


def check_object(exp: ObjectExpectation, obj: dict[str, Any] | None) -> Check:
    what = exp.describe()
    if exp.absent:
        return Check(what, obj is None, "" if obj is None else "it is still there")
    if obj is None:
        return Check(what, False, "the object does not exist")
    value = lookup(obj, exp.path)
    if exp.has_equals:
        if value is _MISSING:
            return Check(what, False, f"{exp.path} is not set")
        return Check(what, value == exp.equals, "" if value == exp.equals
                     else f"found {json.dumps(value)}")
    want = exp.exists is not False
    have = value is not _MISSING
    return Check(what, have == want, "" if have == want
                 else (f"found {json.dumps(value)}" if have else f"{exp.path} is not set"))


# -- running ------------------------------------------------------------------

def run_scenario(scenario: Scenario, stand: Stand, *,
                 pipeline_factory: Callable[..., Any] | None = None) -> Report:
    """Deliver the events at their virtual times, then check the end state."""
    from .cli import detect_events
    from .dispatch import handle_events
    from .runtime import build_pipeline, close_pipeline

    start = scenario.start or datetime.now(tz=timezone.utc).timestamp()
    now = [start]
    settings = stand.setup(scenario)
    pipeline = (pipeline_factory or build_pipeline)(settings, clock=lambda: now[0])
    outcomes: list[tuple[float, Outcome]] = []
    checks: list[Check] = []
    try:
        for ev in scenario.events:
            now[0] = start + ev.at
            got = handle_events(pipeline, detect_events(ev.document, where=ev.where),
                                via="gameday")
            outcomes += [(ev.at, o) for o in got]
            if ev.expect:
                statuses = [o.status.value for o in got]
                if not stand.live:  # plan-only: an action it would take shows as planned
                    statuses = ["applied" if x == "planned" else x for x in statuses]
                want = list(ev.expect) if len(ev.expect) == len(got) else \
                    [ev.expect[0]] * len(got) if len(ev.expect) == 1 else list(ev.expect)
                checks.append(Check(f"t+{ev.at:g}s {ev.where}: {', '.join(ev.expect)}",
                                    statuses == want,
                                    "" if statuses == want else
                                    f"got {', '.join(statuses)}: " + "; ".join(
                                        r for o in got for r in o.reasons)[:300]))
    finally:
        close_pipeline(pipeline)
    for exp in scenario.expect_objects:
        if not stand.live:
            checks.append(Check(exp.describe(), None, "not checked: plan-only stand"))
            continue
        checks.append(check_object(exp, stand.read(exp.kind, exp.namespace, exp.name)))
    return Report(scenario.name, checks, outcomes)


class SnapshotStand:
    """Plan against the scenario's snapshot: nothing is applied."""

    live = False

    def __init__(self, base: Settings | None = None, workdir: Path | None = None) -> None:
        import tempfile

        self.base = base or Settings()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="gameday-"))

    def setup(self, scenario: Scenario) -> Settings:
        snap = self.workdir / "snapshot.json"
        snap.write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                    "items": list(scenario.objects)}))
        settings = scenario_settings(self.base, scenario, self.workdir)
        return replace(settings, kube=replace(settings.kube, snapshot=str(snap)))

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def close(self) -> None:
        pass


def scenario_settings(base: Settings, scenario: Scenario, workdir: Path) -> Settings:
    """``base`` with the scenario's environment-style overrides and policy data."""
    import os

    env = {k: v for k, v in os.environ.items() if k.startswith(("REMEDIATION_", "OPA_"))}
    env.update(scenario.settings)
    over = Settings.from_env(env)
    settings = replace(base, dry_run=over.dry_run if "REMEDIATION_DRY_RUN" in env
                       else base.dry_run, ledger=over.ledger, verify=over.verify,
                       approval=over.approval)
    if scenario.policy_data:
        data = workdir / f"policy-{abs(hash(scenario.name))}.json"
        data.write_text(json.dumps(scenario.policy_data))
        settings = replace(settings, policy=replace(settings.policy, data_file=str(data)))
    return settings


def main(paths: Sequence[str], out: TextIO, err: TextIO) -> int:
    """``remediate gameday FILE...`` on the snapshot stand: 0 all passed, 1 a
    check failed, 2 a scenario file is invalid."""
    failed = False
    for p in paths:
        try:
            scenario = load_scenario(p)
        except InvalidInput as exc:
            err.write(f"remediate: invalid scenario: {exc}\n")
            return 2
        report = run_scenario(scenario, SnapshotStand())
        out.write(report.render() + "\n")
        failed = failed or not report.passed
    return 1 if failed else 0
