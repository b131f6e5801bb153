"""Game-day checks: what a run gave (deliveries, API writes) against what
the scenario expects (outcomes, objects' end state, writes), and the report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model import Outcome
from .scenario import (
    EXECUTED,
    MISSING,
    ActionExpectation,
    ObjectExpectation,
    OutcomeExpectation,
    Scenario,
    Write,
    lookup,
    show,
)


@dataclass
class Check:
    what: str
    ok: bool | None  # None: not checked on this stand
    detail: str = ""


@dataclass
class Delivery:
    index: int
    at: float
    where: str
    outcomes: list[Outcome]
    resolved: list[str] = field(default_factory=list)  # its current_pod_of values, resolved


@dataclass
class Report:
    scenario: str
    checks: list[Check]
    deliveries: list[Delivery]
    source: str = ""

    @property
    def passed(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    @property
    def outcomes(self) -> list[Outcome]:
        return [o for d in self.deliveries for o in d.outcomes]

    def render(self) -> str:
        ok = sum(1 for c in self.checks if c.ok)
        skipped = sum(1 for c in self.checks if c.ok is None)
        lines = [(f"{'PASS' if self.passed else 'FAIL'} {self.scenario}  ({ok} ok, "
                 f"{len(self.failures)} failed, {skipped} not checked)")]
        for d in self.deliveries:
            lines.extend(f"  t+{d.at:<6g} {d.where:<10} ({r})" for r in d.resolved)
            if not d.outcomes:
                lines.append(f"  t+{d.at:<6g} {d.where:<10} (no outcome)")
            for o in d.outcomes:
                why = "; ".join(o.reasons)
                lines.append(f"  t+{d.at:<6g} {d.where:<10} {o.status.value:<9} "
                             f"{o.function or '-':<18} {o.plan.action if o.plan else '-':<15} "
                             f"{o.target or '-'}  {why[:140] + ('…' if len(why) > 140 else '')}")
        for c in self.checks:
            mark = {True: "ok  ", False: "FAIL", None: "skip"}[c.ok]
            if c.ok is None:  # one line: why it was not checked
                lines.append(f"  [skip] {c.what}  ({c.detail.removeprefix('not checked: ')})")
                continue
            lines.append(f"  [{mark}] {c.what}")
            if c.detail and c.ok is False:
                lines.extend(f"         {line}" for line in c.detail.splitlines())
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "source": self.source, "passed": self.passed,
                "checks": [{"what": c.what, "ok": c.ok, "detail": c.detail}
                           for c in self.checks],
                "deliveries": [{"index": d.index, "at": d.at, "where": d.where,
                                "resolved": d.resolved,
                                "outcomes": [o.as_dict() for o in d.outcomes]}
                               for d in self.deliveries]}


def _contains(value: Any, want: Any) -> bool:
    if isinstance(value, str):
        return isinstance(want, str) and want in value
    if isinstance(value, Mapping):
        return isinstance(want, Mapping) and all(
            k in value and (value[k] == v or _contains(value[k], v)) for k, v in want.items())
    if isinstance(value, list):
        return any(item == want or _contains(item, want) for item in value)
    return False


def check_object(exp: ObjectExpectation, obj: Mapping[str, Any] | None) -> Check:
    what = exp.describe()
    if exp.absent:
        return Check(what, obj is None, "" if obj is None else "it still exists")
    if obj is None:
        return Check(what, False, f"{exp.ref} does not exist")
    value = lookup(obj, exp.path)
    if exp.equals is not MISSING:
        ok = value is not MISSING and value == exp.equals
        return Check(what, ok, "" if ok else f"expected {show(exp.equals)}\n"
                                             f"found    {show(value)}")
    if exp.contains is not MISSING:
        ok = value is not MISSING and _contains(value, exp.contains)
        return Check(what, ok, "" if ok else f"expected to contain {show(exp.contains)}\n"
                                             f"found    {show(value)}")
    have = value is not MISSING
    ok = have == bool(exp.exists)
    return Check(what, ok, "" if ok else (f"found {show(value)}" if have
                                          else f"{exp.path} is not set"))


def check_outcomes(scenario: Scenario, deliveries: Sequence[Delivery], *, live: bool
                   ) -> list[Check]:
    by_event = {d.index: d for d in deliveries}
    checks: list[Check] = []
    for exp in scenario.outcomes:
        what = exp.describe(scenario)
        ev = scenario.events[exp.event]
        if not live and ev.live_only:
            checks.append(Check(what, None, "not checked: plan-only stand; live_only: this "
                                            "event depends on earlier actions being applied"))
            continue
        d = by_event.get(exp.event)
        if d is None:
            checks.append(Check(what, False, "the event was not delivered"))
            continue
        got = d.outcomes if exp.outcome is None else d.outcomes[exp.outcome:exp.outcome + 1]
        if not got:
            checks.append(Check(what, False, "the event gave no outcome"))
            continue
        problems = [p for o in got for p in _outcome_problems(exp, o, live=live)]
        checks.append(Check(what, not problems, "\n".join(problems)))
    return checks


def _outcome_problems(exp: OutcomeExpectation, o: Outcome, *, live: bool) -> list[str]:
    problems: list[str] = []
    status = o.status.value
    # plan-only, an action that would be taken shows as planned; what its
    # execution would say (the reasons of a partial, say) cannot be checked
    stood_in = not live and status == "planned" and exp.status in EXECUTED
    if status != exp.status and not stood_in:
        problems.append(f"expected status {exp.status}, got {status}")
    if exp.function is not None and o.function != exp.function:
        problems.append(f"expected function {exp.function}, got {o.function or '(none)'}")
    action = o.plan.action if o.plan else ""
    if exp.action is not None and action != exp.action:
        problems.append(f"expected action {exp.action}, got {action or '(no plan)'}")
    if exp.reason is not None and not stood_in and not any(
            exp.reason.lower() in r.lower() for r in o.reasons):
        problems.append(f"expected a reason containing {exp.reason!r}")
    if problems:
        problems.append(f"  ({o.function or '-'} on {o.target or '-'}: "
                        f"{'; '.join(o.reasons)[:400] or 'no reasons'})")
    return problems


def check_actions(expected: Sequence[ActionExpectation], writes: Sequence[Write] | None
                  ) -> list[Check]:
    checks = []
    for exp in expected:
        if writes is None:
            checks.append(Check(exp.describe(), None, "not checked: this stand sees no writes"))
            continue
        n = sum(1 for w in writes if exp.matches(w))
        ok = ((exp.count is None or n == exp.count)
              and (exp.at_least is None or n >= exp.at_least)
              and (exp.at_most is None or n <= exp.at_most))
        seen = [f"{w.verb} {w.kind}/{w.namespace + '/' if w.namespace else ''}{w.name} "
                f"-> {w.code}" for w in writes if w.kind not in ("Event", "Lease")]
        checks.append(Check(exp.describe(), ok, "" if ok else
                            f"counted {n}; writes seen (Events left out):\n  "
                            + ("\n  ".join(seen) or "(none)")))
    return checks


