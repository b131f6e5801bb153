"""Game days: every scenario in tests/scenarios/ replayed through the full path
against the Kubernetes API emulator (outcomes, end state and API writes
checked), and plan-only on its snapshot as ``remediate gameday`` runs it; the
runner can fail, and says why; malformed scenario files are refused with the
field named."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediation import cli
from remediation.errors import InvalidInput
from remediation.gameday import (
    RealTimeClock,
    SnapshotStand,
    VirtualClock,
    add_parser,
    load_scenario,
    lookup,
    main,
    parse_scenario,
    run_scenario,
)

from tests.gameday_stand import EmulatorStand

HERE = Path(__file__).parent
SCENARIOS = sorted((HERE / "scenarios").glob("*.yaml"))
DEMO = "../../functions/remediation/defaults/demo/cluster.yaml"


def scenario_file(stem: str) -> Path:
    return next(p for p in SCENARIOS if stem in p.stem)


@pytest.fixture
def stand():
    s = EmulatorStand()
    yield s
    s.close()


@pytest.fixture
def snapshot_stand():
    s = SnapshotStand()
    yield s
    s.close()


def test_the_library_holds_the_scenarios_of_the_other_issues():
    names = {load_scenario(p).name for p in SCENARIOS}
    assert len(SCENARIOS) == 8 and len(names) == 8


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_passes_on_the_emulator(path, stand):
    report = run_scenario(load_scenario(path), stand)
    assert report.passed, report.render()
    assert all(c.ok is True for c in report.checks), report.render()  # everything checked
    assert report.checks


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_passes_plan_only_on_its_snapshot(path, snapshot_stand):
    report = run_scenario(load_scenario(path), snapshot_stand)
    assert report.passed, report.render()
    assert not any(o.status.value in ("applied", "partial") for o in report.outcomes)
    skipped = [c for c in report.checks if c.ok is None]
    assert all("not checked" in c.detail for c in skipped)


def test_the_snapshot_stand_checks_outcomes_and_reports_objects_not_checked(snapshot_stand):
    report = run_scenario(load_scenario(scenario_file("fatal-xid")), snapshot_stand)
    assert [o.status.value for o in report.outcomes] == ["planned"]
    outcome_check, *rest = report.checks
    assert outcome_check.ok is True  # "applied" is met by "planned" on a plan-only stand
    assert rest and all(c.ok is None for c in rest)
    assert {c.detail for c in rest} == {"not checked: plan-only stand",
                                        "not checked: this stand sees no writes"}
    assert "0 failed" in report.render() and report.passed


def test_the_virtual_clock_drives_the_healthy_delay_and_timestamps(stand):
    report = run_scenario(load_scenario(scenario_file("recovery")), stand)
    first, resent, early, due, *_ = report.deliveries
    # the resolved alert is answered at once and scheduled; the sweeps at
    # t+120 and t+245 differ only by the clock: the first finds nothing due
    assert first.outcomes[0].status.value == "scheduled"
    assert "healthy for 60s" in first.outcomes[0].reasons[0]
    assert "2026-11-01T09:35:00Z" in first.outcomes[0].reasons[-1]  # endsAt 09:30 + 300 s
    assert resent.outcomes[0].status.value == "duplicate"
    assert early.outcomes == []
    assert [o.status.value for o in due.outcomes] == ["applied"]


def test_the_stands_clocks_keep_the_scenario_time_and_differ_in_what_a_wait_costs(stand):
    assert type(stand.clock(1000.0)) is VirtualClock  # nothing moves in the emulator
    virtual = VirtualClock(1000.0)
    virtual.sleep(3600)
    assert (virtual.now(), virtual.monotonic()) == (1000.0, 3600.0)
    # a real cluster's controllers need real time: verification waits for it
    real = RealTimeClock(1000.0)
    began = time.monotonic()
    real.sleep(0.05)
    assert time.monotonic() - began >= 0.05 and real.monotonic() >= began + 0.05
    assert real.now() == 1000.0  # the scenario's wall clock is untouched
    real.wall = 1600.0  # the runner moves it to each event's time
    assert real.now() == 1600.0


def _doc(stem: str) -> dict[str, Any]:
    return yaml.safe_load(scenario_file(stem).read_text())


def test_wrong_expectations_fail_the_report_with_a_readable_diff(stand):
    doc = _doc("engine-hang")
    doc["events"][0]["expect"] = {"status": "denied", "action": "delete-pod"}
    doc["expect"]["objects"][0]["equals"] = "1999-01-01T00:00:00Z"
    doc["expect"]["objects"].append({"kind": "Pod", "namespace": "llm-serving",
                                     "name": "vllm-llama-7b-6d4f8b9c7-x2x9k", "absent": True})
    doc["expect"]["actions"][0]["count"] = 3
    report = run_scenario(parse_scenario(doc, base_dir=HERE / "scenarios", where="wrong"), stand)
    assert not report.passed
    assert len(report.failures) == 4, report.render()
    text = report.render()
    assert text.startswith("FAIL engine-hang-restarts-once")
    assert "expected status denied, got applied" in text
    assert "expected action delete-pod, got rollout-restart" in text
    assert 'expected "1999-01-01T00:00:00Z"\n' in text
    assert 'found    "2026-11-01T10:05:00Z"' in text
    assert "Pod/llm-serving/vllm-llama-7b-6d4f8b9c7-x2x9k is gone" in text
    assert "it still exists" in text
    assert "counted 1" in text and "patch Deployment/llm-serving/vllm-llama-7b -> 200" in text


def test_a_delivery_that_blows_up_is_a_failed_check_not_a_crash(snapshot_stand):
    from remediation.runtime import build_pipeline

    def broken(settings, **ports):
        pipeline = build_pipeline(settings, **ports)

        def boom(*_a, **_k):
            raise RuntimeError("API melted")
        pipeline.handle = boom
        return pipeline

    report = run_scenario(load_scenario(scenario_file("engine-hang")), snapshot_stand,
                          pipeline_factory=broken)
    assert not report.passed and report.deliveries == []
    text = report.render()
    assert "RuntimeError: API melted; the later events were not delivered" in text
    assert "the event was not delivered" in text


def test_approving_an_event_that_left_nothing_pending_fails(snapshot_stand):
    doc = {"name": "x", "snapshot": DEMO, "start": "2026-11-01T10:05:00Z", "events": [
        {"at": 0, "file": "demo:01-vllm-hung.json", "expect": "applied"},
        {"at": 60, "approve": {"event": 0, "by": "alice"}, "expect": "applied"}]}
    report = run_scenario(parse_scenario(doc, base_dir=HERE / "scenarios"), snapshot_stand)
    assert not report.passed
    assert "that event left nothing pending to approve" in report.render()


EVENT = '{at: 0, file: "demo:01-vllm-hung.json", expect: applied}'


def hung(ref: str, extra: str = "", expect: str = "applied") -> str:
    """An event whose alert names its pod with ``{current_pod_of: <ref>}``."""
    return ("{at: 0, expect: " + expect + ", body: {version: '4', status: firing, "
            "receiver: r, groupKey: g, alerts: [{status: firing, startsAt: '2026-11-01T10:00:00Z', "
            "labels: {alertname: VLLMEngineHung, namespace: llm-serving, "
            "pod: {current_pod_of: " + ref + extra + "}}}]}}")


@pytest.mark.parametrize("body, field, words", [
    ("- not a mapping", "scenario", "a scenario is a mapping"),
    (f"snapshot: {DEMO}\nevents: [{EVENT}]", "name", "required"),
    (f"name: x\nevents: [{EVENT}]", "snapshot", "required"),
    (f"name: x\nsnapshot: nowhere.yaml\nevents: [{EVENT}]", "snapshot", "cannot read"),
    (f"name: x\nsnapshot: [{{kind: Pod}}]\nevents: [{EVENT}]", "snapshot[0]", "metadata.name"),
    (f"name: x\nsnapshot: {DEMO}\nsurprise: 1\nevents: [{EVENT}]", "surprise", "unknown field"),
    (f"name: x\nsnapshot: {DEMO}\nevents: []", "events", "non-empty"),
    (f"name: x\nsnapshot: {DEMO}\nstart: yesterday\nevents: [{EVENT}]", "start", "RFC 3339"),
    (f"name: x\nsnapshot: {DEMO}\nevents: [{EVENT}, {{at: -1, body: {{}}}}]", "events[1].at",
     "non-negative"),
    ((f'name: x\nsnapshot: {DEMO}\nevents: [{{at: 5, file: "demo:01-vllm-hung.json", '
     f'expect: applied}}, {{at: 1, file: "demo:01-vllm-hung.json"}}]'), "events[1].at",
     "before the previous"),
    (f"name: x\nsnapshot: {DEMO}\nevents: [{{at: 0, expect: applied}}]", "events[0].file",
     "exactly one of file, body, approve or sweep"),
    (f'name: x\nsnapshot: {DEMO}\nevents: [{{at: 0, file: "demo:nope.json"}}]',
     "events[0].file", "cannot read"),
    (f"name: x\nsnapshot: {DEMO}\nevents: [{{at: 0, body: {{hello: 1}}}}]", "events[0].body",
     "not an Alertmanager payload"),
    ((f'name: x\nsnapshot: {DEMO}\nevents: [{{at: 0, via: splunk, '
     f'file: "demo:01-vllm-hung.json", expect: applied}}]'), "events[0].via",
     "says splunk but the body is alertmanager"),
    ((f'name: x\nsnapshot: {DEMO}\nevents: [{{at: 0, file: "demo:01-vllm-hung.json", '
     f'expect: fixed}}]'), "events[0].expect.status", "unknown status 'fixed'"),
    ((f'name: x\nsnapshot: {DEMO}\nevents: [{{at: 0, file: "demo:01-vllm-hung.json", '
     f'expect: [applied, skipped]}}]'), "events[0].expect", "yields 1 outcome"),
    (f"name: x\nsnapshot: {DEMO}\nevents: [{{at: 0, approve: {{event: later, by: a}}}}]",
     "events[0].approve.event", "no event has id 'later'"),
    (f"name: x\nsnapshot: {DEMO}\nsettings: {{KUBECONFIG: /etc/k}}\nevents: [{EVENT}]",
     "settings.KUBECONFIG", "not a setting a game day can change"),
    ((f"name: x\nsnapshot: {DEMO}\nsettings: {{REMEDIATION_TARGET_WINDOW: soon}}\n"
     f"events: [{EVENT}]"), "settings", "does not parse"),
    (f"name: x\nsnapshot: {DEMO}\noptions: {{fix-it: {{a: 1}}}}\nevents: [{EVENT}]",
     "options.fix-it", "no such function"),
    (f'name: x\nsnapshot: {DEMO}\nevents: [{{at: 0, file: "demo:01-vllm-hung.json"}}]',
     "expect", "must expect something"),
    ((f"name: x\nsnapshot: {DEMO}\nevents: [{EVENT}]\nexpect: {{outcomes: [{{status: "
     "applied}]}"), "expect.outcomes[0].event", "required"),
    ((f"name: x\nsnapshot: {DEMO}\nevents: [{EVENT}]\nexpect: {{objects: [{{kind: Node, "
     "name: n}]}"), "expect.objects[0].path", "exactly one of"),
    ((f"name: x\nsnapshot: {DEMO}\nevents: [{EVENT}]\nexpect: {{objects: [{{kind: Node, "
     "name: n, path: 'spec..x', exists: true}]}"), "expect.objects[0].path", "bad path"),
    (f"name: x\nsnapshot: {DEMO}\nevents: [{EVENT}]\nexpect: {{actions: [{{verb: patch}}]}}",
     "expect.actions[0].count", "needs count, at_least or at_most"),
    ((f"name: x\nsnapshot: {DEMO}\nevents: [{EVENT}]\nexpect: {{actions: [{{verb: reboot, "
     "count: 1}]}"), "expect.actions[0].verb", "unknown 'reboot'"),
    (f"name: x\nsnapshot: {DEMO}\nevents: [{hung('[1, 2]')}]",
     "events[0].body.alerts[0].labels.pod.current_pod_of", "must be a mapping"),
    (f"name: x\nsnapshot: {DEMO}\nevents: [{hung('{namespace: llm-serving}')}]",
     "events[0].body.alerts[0].labels.pod.current_pod_of.deployment",
     "needs exactly one workload"),
    (f"name: x\nsnapshot: {DEMO}\nevents: [{hung('{namespace: a, deployment: b, job: c}')}]",
     "events[0].body.alerts[0].labels.pod.current_pod_of.job", "unknown field"),
    ((f"name: x\nsnapshot: {DEMO}\nevents: "
      f"[{hung('{namespace: a, deployment: b, statefulset: c}')}]"),
     "events[0].body.alerts[0].labels.pod.current_pod_of.statefulset",
     "needs exactly one workload"),
    (f"name: x\nsnapshot: {DEMO}\nevents: [{hung('{deployment: b}')}]",
     "events[0].body.alerts[0].labels.pod.current_pod_of.namespace", "required"),
    (f"name: x\nsnapshot: {DEMO}\nevents: [{hung('{namespace: a, deployment: B_1}')}]",
     "events[0].body.alerts[0].labels.pod.current_pod_of.deployment", "not a valid object name"),
    (f"name: x\nsnapshot: {DEMO}\nevents: [{hung('{namespace: a, deployment: b, node: 7}')}]",
     "events[0].body.alerts[0].labels.pod.current_pod_of.node", "non-empty string"),
    ("name: x\nsnapshot: " + DEMO + "\nevents: ["
     + hung("{namespace: a, deployment: b}", extra=", node: n") + "]",
     "events[0].body.alerts[0].labels.pod.node",
     "a current_pod_of value is a mapping with that one key"),
])
def test_malformed_scenarios_are_refused_with_the_field_named(tmp_path, body, field, words):
    f = tmp_path / "bad.yaml"
    f.write_text(body.replace(DEMO, str(HERE / "scenarios" / DEMO)))
    with pytest.raises(InvalidInput) as exc:
        load_scenario(f)
    assert exc.value.attribute == field, str(exc.value)
    assert str(exc.value).startswith(f"bad.yaml: {field}: "), str(exc.value)
    assert words in str(exc.value)


def test_an_unreadable_scenario_file_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed")
    with pytest.raises(InvalidInput, match="not valid JSON/YAML"):
        load_scenario(tmp_path / "broken.yaml")


def test_settings_paths_and_policy_data_files_are_relative_to_the_scenario(tmp_path):
    (tmp_path / "data.yaml").write_text(
        "remediation_config: {limits: {max_cordoned_gpu_nodes_percent: 50, max_replicas: 9}}")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({
        "name": "x", "snapshot": str(HERE / "scenarios" / DEMO),
        "settings": {"REMEDIATION_POLICY_DATA": "data.yaml", "REMEDIATION_DRY_RUN": True,
                     "REMEDIATION_TARGET_WINDOW": 60},
        "policy_data": {"remediation_config": {"limits": {"max_replicas": 4}}},
        "events": [{"at": 0, "file": "demo:10-dcgm-xid79-fell-off-bus.json",
                    "expect": "applied"}]}))
    sc = load_scenario(tmp_path / "s.yaml")
    assert sc.settings == {"REMEDIATION_DRY_RUN": "true", "REMEDIATION_TARGET_WINDOW": "60"}
    assert sc.policy_data == {"remediation_config": {"limits": {
        "max_cordoned_gpu_nodes_percent": 50, "max_replicas": 4}}}
    stand = EmulatorStand()
    try:
        report = run_scenario(sc, stand)
        # a dry run against the emulator: allowed by the merged policy data, nothing changed
        assert [o.status.value for o in report.outcomes] == ["planned"], report.render()
        assert not stand.read("Node", "", "gpu-node-5")["spec"].get("unschedulable")
    finally:
        stand.close()


def test_remediate_gameday_runs_the_library_plan_only(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert main([str(p) for p in SCENARIOS], out, err) == 0, out.getvalue() + err.getvalue()
    assert out.getvalue().startswith("PASS engine-hang-restarts-once")
    assert "8 of 8 scenario(s) passed" in out.getvalue()

    out = io.StringIO()
    assert main([str(SCENARIOS[0])], out, err, as_json=True) == 0
    report = json.loads(out.getvalue())
    assert report["passed"] and report["scenario"] == "engine-hang-restarts-once"
    assert report["deliveries"][0]["outcomes"][0]["status"] == "planned"

    failing = tmp_path / "failing.yaml"
    failing.write_text(SCENARIOS[0].read_text().replace(
        "expect: duplicate", "expect: applied", 1).replace(DEMO, str(HERE / "scenarios" / DEMO)))
    out = io.StringIO()
    assert main([str(failing)], out, err) == 1
    assert "FAIL engine-hang-restarts-once" in out.getvalue()
    assert "expected status applied, got duplicate" in out.getvalue()

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x")
    err = io.StringIO()
    assert main([str(SCENARIOS[0]), str(bad)], io.StringIO(), err) == 2
    assert "invalid scenario: bad.yaml: snapshot: required" in err.getvalue()


def test_add_parser_wires_the_subcommand():
    parser = argparse.ArgumentParser(prog="remediate")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["gameday", str(SCENARIOS[4]), "--json"])
    out = io.StringIO()
    assert args.gameday_main(args, out, io.StringIO()) == 0
    assert json.loads(out.getvalue())["passed"] is True


def test_the_cli_subcommand_runs(capsys):
    assert cli.main(["gameday", str(SCENARIOS[4])]) == 0
    assert "PASS kv-cache-saturation-scales-out" in capsys.readouterr().out


def test_a_plan_only_game_day_loads_no_cluster_client_and_no_web_framework():
    code = (
        "import sys\n"
        "from remediation.gameday import main\n"
        f"rc = main([{str(SCENARIOS[1])!r}], open('/dev/null', 'w'), sys.stderr)\n"
        "bad = [m for m in ('kubernetes', 'flask', 'httpx', 'hvac') if m in sys.modules]\n"
        "assert rc == 0 and not bad, (rc, bad)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_lookup_paths():
    obj = {"metadata": {"annotations": {"a/b.c": "x"}}, "spec": {"taints": [{"key": "k"}]}}
    assert lookup(obj, 'metadata.annotations["a/b.c"]') == "x"
    assert lookup(obj, "spec.taints[0].key") == "k"
    missing = lookup(obj, "spec.taints[3].key")
    assert missing is lookup(obj, "spec.nope") and missing is not None
    for bad in ("spec..]", "", ".spec", "spec[x]"):
        with pytest.raises(InvalidInput):
            lookup(obj, bad)


def test_remediate_gameday_json_through_the_real_cli_parser(capsys):
    """`remediate gameday --json` (once refused: "unrecognized arguments")."""
    assert cli.main(["gameday", "--json", str(SCENARIOS[4]), str(SCENARIOS[0])]) == 0
    lines = capsys.readouterr().out.splitlines()
    reports = [json.loads(line) for line in lines]
    assert [r["scenario"] for r in reports] == ["kv-cache-saturation-scales-out",
                                                "engine-hang-restarts-once"]
    assert all(r["passed"] for r in reports)


def test_the_scenarios_routes_decide_where_its_alerts_go(tmp_path):
    """A scenario whose routes send the engine-hang alert to scale-engine runs
    scale-engine (once its events were stamped with the packaged routes, and
    the pipeline trusted the stamp: restart-engine ran)."""
    routes = tmp_path / "routes.yaml"
    routes.write_text("alerts: {VLLMEngineHung: scale-engine}\n"
                      "options: {scale-engine: {max_replicas: 8}}\n")
    scenario = tmp_path / "rerouted.yaml"
    scenario.write_text(
        f"name: rerouted\nsnapshot: {HERE / 'scenarios' / DEMO}\n"
        f"settings: {{REMEDIATION_ROUTES_FILE: {routes.name}}}\n"
        "events: [{at: 0, file: demo:01-vllm-hung.json,\n"
        "          expect: {status: applied, function: scale-engine, action: scale-out}}]\n")
    report = run_scenario(load_scenario(scenario), SnapshotStand())
    assert report.passed, report.render()
    assert {o.function for o in report.outcomes} == {"scale-engine"}


# -- events that name the pod a workload runs when they are delivered ---------------

def _pod(name: str, node: str, *, created: str, ready: bool = True, phase: str = "Running",
         **meta: object) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": name, "namespace": "llm-serving", "creationTimestamp": created,
        "labels": {"app": "vllm-llama-7b", "pod-template-hash": "6d4f8b9c7"}, **meta},
        "spec": {"nodeName": node, "containers": [{"name": "engine", "image": "x"}]},
        "status": {"phase": phase, "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"}]}}


def test_current_pod_of_is_the_ready_then_newest_pod_the_selector_matches_now(stand):
    from remediation.gameday import PodRef, Unresolved, current_pod

    sc = parse_scenario({"name": "x", "snapshot": DEMO, "events": [{
        "at": 0, "file": "demo:01-vllm-hung.json", "expect": "applied"}]},
        base_dir=HERE / "scenarios")
    stand.setup(sc)
    stand.emulator.add([
        _pod("vllm-llama-7b-6d4f8b9c7-newer", "gpu-node-1", created="2099-01-01T10:00:00Z"),
        _pod("vllm-llama-7b-6d4f8b9c7-unrdy", "gpu-node-1", created="2099-01-01T11:00:00Z",
             ready=False),
        _pod("vllm-llama-7b-6d4f8b9c7-going", "gpu-node-3", created="2099-01-01T11:00:00Z",
             deletionTimestamp="2099-01-01T11:01:00Z", finalizers=["x/hold"]),
        _pod("vllm-llama-7b-6d4f8b9c7-ended", "gpu-node-3", created="2099-01-01T11:00:00Z",
             phase="Failed"),
        {**_pod("other-app-abcde", "gpu-node-3", created="2099-01-01T11:00:00Z"),
         "metadata": {"name": "other-app-abcde", "namespace": "llm-serving",
                      "labels": {"app": "other"}}},
    ])

    def name(**ref: str) -> str:
        ref.setdefault("namespace", "llm-serving")
        return str(current_pod(stand, PodRef(**ref))["metadata"]["name"])

    llama = {"kind": "Deployment", "name": "vllm-llama-7b"}
    # on gpu-node-1: the snapshot's x2x9k (created as seeded), a newer Ready pod, and
    # a newest one not Ready: the Ready one first, then the newest
    assert name(**llama, node="gpu-node-1") == "vllm-llama-7b-6d4f8b9c7-newer"
    assert name(**llama, node="gpu-node-2") == "vllm-llama-7b-6d4f8b9c7-q8w7r"
    assert name(**llama) == "vllm-llama-7b-6d4f8b9c7-newer"
    assert name(kind="StatefulSet", name="vllm-llama-405b-tp",
                node="gpu-node-2") == "vllm-llama-405b-tp-1"
    # gpu-node-3 has only a pod being deleted, a failed one and another app's
    with pytest.raises(Unresolved) as exc:
        name(**llama, node="gpu-node-3")
    assert str(exc.value).startswith(
        "the current pod of Deployment llm-serving/vllm-llama-7b on gpu-node-3: none "
        "(its pods: vllm-llama-7b-6d4f8b9c7-newer on gpu-node-1, ")
    assert "-going" not in str(exc.value) and "other-app" not in str(exc.value)
    with pytest.raises(Unresolved, match="there is no Deployment llm-serving/vllm-gone"):
        name(kind="Deployment", name="vllm-gone")


def _storm(*nodes: str) -> dict[str, object]:
    body = yaml.safe_load(hung("{namespace: llm-serving, deployment: vllm-llama-7b, node: n}"))
    events = []
    for i, node in enumerate(nodes):
        ev = json.loads(json.dumps(body))
        ev["at"] = 600 * i
        alert = ev["body"]["alerts"][0]
        alert["startsAt"] = f"2026-11-01T10:{10 * i:02d}:00Z"
        alert["labels"]["pod"]["current_pod_of"]["node"] = node
        events.append(ev)
    return {"name": "storm", "snapshot": DEMO, "start": "2026-11-01T10:05:00Z",
            "events": events}


def test_the_runner_names_the_pod_as_it_is_when_the_event_is_delivered(stand):
    sc = parse_scenario(_storm("gpu-node-1", "gpu-node-2"), base_dir=HERE / "scenarios")
    ev = sc.events[0]
    assert [path for path, _ in ev.pod_refs] == [("alerts", 0, "labels", "pod")]
    assert ev.outcomes == 1 and "current_pod_of" in ev.document["alerts"][0]["labels"]["pod"]
    report = run_scenario(sc, stand)
    assert report.passed, report.render()
    first, second = report.deliveries
    assert first.resolved == ["the current pod of Deployment llm-serving/vllm-llama-7b on "
                              "gpu-node-1: vllm-llama-7b-6d4f8b9c7-x2x9k"]
    assert second.resolved[0].endswith("on gpu-node-2: vllm-llama-7b-6d4f8b9c7-q8w7r")
    (o,) = second.outcomes
    assert o.plan is not None and o.plan.action == "rollout-restart"
    assert "(the current pod of Deployment" in report.render()
    assert report.as_dict()["deliveries"][1]["resolved"] == second.resolved


def test_a_pod_the_stand_does_not_have_fails_the_delivery_saying_which(stand):
    sc = parse_scenario(_storm("gpu-node-1", "gpu-node-7", "gpu-node-1"),
                        base_dir=HERE / "scenarios")
    report = run_scenario(sc, stand)
    assert not report.passed and len(report.deliveries) == 1
    text = report.render()
    assert ("events[1] at t+600s is delivered" in text and "Unresolved: the current pod of "
            "Deployment llm-serving/vllm-llama-7b on gpu-node-7: none" in text), text
    assert "the later events were not delivered" in text


def test_plan_only_the_restart_storm_names_the_snapshots_pods(snapshot_stand):
    report = run_scenario(load_scenario(scenario_file("restart-storm")), snapshot_stand)
    assert report.passed, report.render()
    assert [r.rpartition(": ")[2] for d in report.deliveries for r in d.resolved] == [
        "vllm-llama-7b-6d4f8b9c7-x2x9k"] * 3 + ["vllm-llama-7b-6d4f8b9c7-q8w7r",
                                                 "vllm-llama-7b-6d4f8b9c7-t5v6w"]
    assert snapshot_stand.read("Pod", "llm-serving", "vllm-llama-7b-6d4f8b9c7-t5v6w")
    assert snapshot_stand.read("Pod", "llm-serving", "nope") is None
