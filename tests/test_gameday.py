"""Game days: every scenario in tests/scenarios/ replayed through the full
path against the API emulator (the end state checked there); the runner can
fail; scenario files are validated; the snapshot stand plans only."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from remediation import cli
from remediation.errors import InvalidInput
from remediation.gameday import SnapshotStand, load_scenario, lookup, run_scenario

from tests.gameday_stand import EmulatorStand

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.yaml"))


@pytest.fixture
def stand():
    s = EmulatorStand()
    yield s
    s.close()


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_passes_on_the_emulator(path, stand):
    report = run_scenario(load_scenario(path), stand)
    assert report.passed, report.render()
    assert all(c.ok is True for c in report.checks), report.render()  # all checked


def test_a_wrong_expectation_fails_the_report(stand, tmp_path):
    text = (SCENARIOS[0]).read_text().replace("expect: applied", "expect: denied")
    text = text.replace("../../functions", str(Path(__file__).parents[1] / "functions"))
    text = text.replace('equals: "2026-11-01T10:05:00Z"', 'equals: "1999-01-01T00:00:00Z"')
    f = tmp_path / "wrong.yaml"
    f.write_text(text)
    report = run_scenario(load_scenario(f), stand)
    assert not report.passed
    rendered = report.render()
    assert "FAIL" in rendered and "got applied" in rendered
    assert 'found "2026-11-01T10:05:00Z"' in rendered


@pytest.mark.parametrize("body, field", [
    ("- not a mapping", "scenario"),
    ("name: x\nobjects: []\nevents: [{at: 5, body: {}}, {at: 1, body: {}}]", "at"),
    ("name: x\nobjects: []\nevents: [{at: 0}]", "file"),
    ("name: x\nobjects: []\nevents: [{at: 0, body: {}, expect: fixed}]", "expect"),
    ("name: x\nobjects: []\nevents: []\nsurprise: 1", "surprise"),
    ("name: x\nevents: []", "objects"),
    ("name: x\nobjects: []\nevents: []\nexpect: {objects: [{kind: Node, name: n}]}", "path"),
    ("name: x\nobjects: []\nstart: yesterday\nevents: []", "start"),
])
def test_malformed_scenarios_are_refused_with_the_field_named(tmp_path, body, field):
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    with pytest.raises(InvalidInput) as exc:
        load_scenario(f)
    assert exc.value.attribute == field, str(exc.value)


def test_the_snapshot_stand_plans_and_skips_object_checks():
    report = run_scenario(load_scenario(SCENARIOS[1]), SnapshotStand())
    assert [o.status.value for _, o in report.outcomes] == ["planned"]
    assert any(c.ok is None and "plan-only" in c.detail for c in report.checks)
    assert report.checks[0].ok is True  # "applied" is met by "planned" on a plan-only stand
    assert report.passed


def test_remediate_gameday_cli_reports_and_exits(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    from remediation.gameday import main

    assert main([str(SCENARIOS[5])], out, err) == 0, out.getvalue() + err.getvalue()
    assert out.getvalue().startswith("PASS guard-rails-hold")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x")
    assert main([str(bad)], io.StringIO(), err) == 2 and "invalid scenario" in err.getvalue()
    assert cli.main(["gameday", str(SCENARIOS[5])]) == 0


def test_lookup_paths():
    obj = {"metadata": {"annotations": {"a/b.c": "x"}}, "spec": {"taints": [{"key": "k"}]}}
    assert lookup(obj, 'metadata.annotations["a/b.c"]') == "x"
    assert lookup(obj, "spec.taints[0].key") == "k"
    assert lookup(obj, "spec.taints[3].key") is not None  # missing, not an error
    with pytest.raises(InvalidInput):
        lookup(obj, "spec..]")
