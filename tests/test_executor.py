"""The executor, pure: steps in order, PDB-blocked evictions retried with
exponential backoff until one deadline, then reported as partial.

The ClusterWriter here is an in-memory fake scripted per object; fake sleep
and clock make the backoff instant and observable. (End-to-end runs against
the Kubernetes API emulator live elsewhere.)"""

from __future__ import annotations

from typing import Any

import pytest

from remediation.errors import ActionFailed, DependencyUnavailable
from remediation.executor import PartialExecution, StepResult, execute
from remediation.model import ObjectRef, Plan, Status, Step, freeze


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeWriter:
    """Answers from a script: name -> list of codes (last one repeats);
    200/201/404 ok, 429 blocked, 500 refused, 'fail' ok=False non-evict,
    'raise' ActionFailed, 'down' DependencyUnavailable."""

    def __init__(self, script: dict[str, list[Any]] | None = None) -> None:
        self.script = script or {}
        self.calls: list[tuple[str, str, bool]] = []

    def apply(self, step: Step, *, dry_run: bool) -> StepResult:
        self.calls.append((step.verb, step.name, dry_run))
        answers = self.script.get(step.name, [200])
        seen = sum(1 for c in self.calls if c[1] == step.name)
        code = answers[min(seen, len(answers)) - 1]
        if code == "raise":
            raise ActionFailed(f"{step.verb} {step.ref}: 403 forbidden")
        if code == "down":
            raise DependencyUnavailable("API unreachable")
        if code == "fail":
            return StepResult(step, False, "refused", 422)
        if code == 429:
            return StepResult(step, False, "blocked: Cannot evict pod as it would violate the "
                                           "pod's disruption budget.", 429)
        if code == 500:
            return StepResult(step, False, "refused: This pod has more than one "
                                           "PodDisruptionBudget", 500)
        return StepResult(step, True, "already gone" if code == 404 else "done", code)

    def record_event(self, target: ObjectRef, *, reason: str, message: str,
                     type: str = "Normal") -> None:
        pass

    def close(self) -> None:
        pass


def drain_plan(*pods: str, deadline: float | None = 10) -> Plan:
    steps = [Step("patch", "Node", "", "gpu-1", "cordon",
                  freeze({"spec": {"unschedulable": True}}), "merge")]
    steps += [Step("evict", "Pod", "ns", p, "drain") for p in pods]
    params = {} if deadline is None else {"evict_deadline_seconds": deadline}
    return Plan("drain-gpu-node", "cordon-drain", ObjectRef("Node", "", "gpu-1"),
                tuple(steps), params=freeze(params))


def run(plan: Plan, writer: FakeWriter, clock: FakeClock, *, dry_run: bool = False):
    return execute(plan, writer, dry_run=dry_run, sleep=clock.sleep, clock=clock.clock)


def test_all_steps_in_order():
    w, c = FakeWriter({"b": [404]}), FakeClock()
    results = run(drain_plan("a", "b"), w, c)
    assert [(r.step.name, r.ok, r.code) for r in results] == [
        ("gpu-1", True, 200), ("a", True, 200), ("b", True, 404)]
    assert c.sleeps == []


def test_a_blocked_eviction_is_retried_with_exponential_backoff():
    w, c = FakeWriter({"a": [429, 429, 429, 201]}), FakeClock()
    results = run(drain_plan("a", "b"), w, c)
    assert all(r.ok for r in results)
    assert c.sleeps == [1.0, 2.0, 4.0]
    assert [n for _, n, _ in w.calls] == ["gpu-1", "a", "a", "a", "a", "b"]


def test_blocked_past_the_deadline_is_partial_and_the_other_pods_still_go():
    w, c = FakeWriter({"a": [429]}), FakeClock()
    with pytest.raises(PartialExecution) as err:
        run(drain_plan("a", "b", deadline=10), w, c)
    exc = err.value
    assert isinstance(exc, ActionFailed)
    assert c.sleeps == [1.0, 2.0, 4.0, 3.0]  # capped by what is left of the deadline
    assert sum(c.sleeps) == 10
    assert [(r.step.name, r.ok, r.code) for r in exc.results] == [
        ("gpu-1", True, 200), ("a", False, 429), ("b", True, 200)]
    assert [r.step.name for r in exc.blocked] == ["a"]
    assert "after 5 attempts" in exc.blocked[0].detail
    assert "1 of 2 evictions did not happen: ns/a (429)" in str(exc)


def test_the_deadline_is_shared_by_the_whole_plan():
    w, c = FakeWriter({"a": [429], "b": [429]}), FakeClock()
    with pytest.raises(PartialExecution) as err:
        run(drain_plan("a", "b", deadline=6), w, c)
    assert sum(c.sleeps) == 6  # b gets no retry once a used the deadline up
    assert [r.step.name for r in err.value.blocked] == ["a", "b"]


def test_the_default_deadline_is_120_seconds_and_backoff_is_capped():
    w, c = FakeWriter({"a": [429]}), FakeClock()
    with pytest.raises(PartialExecution):
        run(drain_plan("a", deadline=None), w, c)
    assert sum(c.sleeps) == pytest.approx(120)
    assert max(c.sleeps) == 30.0


def test_several_pdbs_500_is_refused_for_that_pod_without_retry():
    w, c = FakeWriter({"a": [500]}), FakeClock()
    with pytest.raises(PartialExecution) as err:
        run(drain_plan("a", "b"), w, c)
    assert c.sleeps == []
    assert [(r.step.name, r.code) for r in err.value.blocked] == [("a", 500)]
    assert err.value.results[-1].step.name == "b" and err.value.results[-1].ok


def test_a_dry_run_reports_a_blocked_eviction_at_once():
    w, c = FakeWriter({"a": [429]}), FakeClock()
    with pytest.raises(PartialExecution):
        run(drain_plan("a"), w, c, dry_run=True)
    assert c.sleeps == [] and all(dry for *_, dry in w.calls)


def test_a_refused_non_eviction_step_stops_everything():
    w, c = FakeWriter({"gpu-1": ["fail"]}), FakeClock()
    with pytest.raises(ActionFailed) as err:
        run(drain_plan("a"), w, c)
    assert not isinstance(err.value, PartialExecution)
    assert [n for _, n, _ in w.calls] == ["gpu-1"]
    assert [r.step.name for r in err.value.results] == ["gpu-1"]  # type: ignore[attr-defined]


def test_a_writer_refusal_propagates_with_the_results_so_far():
    w, c = FakeWriter({"b": ["raise"]}), FakeClock()
    with pytest.raises(ActionFailed) as err:
        run(drain_plan("a", "b", "c"), w, c)
    assert [r.step.name for r in err.value.results] == ["gpu-1", "a"]  # type: ignore[attr-defined]
    assert "c" not in [n for _, n, _ in w.calls]


def test_an_unreachable_api_is_a_temporary_error_even_mid_retry():
    w, c = FakeWriter({"a": [429, "down"]}), FakeClock()
    with pytest.raises(DependencyUnavailable):
        run(drain_plan("a"), w, c)


def test_partial_is_an_outcome_status():
    assert Status.PARTIAL.value == "partial"
