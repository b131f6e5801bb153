"""`remediate` as a user runs it: a real subprocess, real files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from remediation.cli import demo_dir

DEMO = demo_dir()
SNAPSHOT = DEMO / "cluster.yaml"
EVENTS = DEMO / "events"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VAULT_", "OPA_", "REMEDIATION_", "KUBECONFIG"))}
    return subprocess.run([sys.executable, "-m", "remediation.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=120, env=env)


def lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_replay_alertmanager_json_against_snapshot():
    r = run("replay", str(EVENTS / "01-vllm-hung.json"), "--cluster", str(SNAPSHOT), "--json")
    assert r.returncode == 0, r.stderr
    (o,) = lines(r.stdout)
    assert o["status"] == "planned"
    assert o["function"] == "restart-engine"
    assert o["target"] == {"kind": "Deployment", "namespace": "llm-serving",
                           "name": "vllm-llama-7b"}
    assert o["actions"] == [{"verb": "patch", "kind": "Deployment", "namespace": "llm-serving",
                             "name": "vllm-llama-7b"}]
    assert o["event_id"] and isinstance(o["reasons"], list)


def test_replay_detects_every_shape_and_a_json_array(tmp_path: Path):
    docs = [json.loads((EVENTS / n).read_text()) for n in
            ("01-vllm-hung.json", "05-splunk-nccl-watchdog.json", "06-cloudevent-kserve-hung.json")]
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(docs))
    r = run("replay", str(bundle), "--cluster", str(SNAPSHOT), "--json")
    assert r.returncode == 0, r.stderr
    got = [(o["status"], o["target"]["kind"], o["target"]["name"]) for o in lines(r.stdout)]
    assert got == [("planned", "Deployment", "vllm-llama-7b"),
                   ("planned", "StatefulSet", "vllm-llama-405b-tp"),
                   ("planned", "Deployment", "llama-70b-predictor")]


def test_replay_denied_still_exits_zero():
    r = run("replay", str(EVENTS / "04-vllm-hung-protected-namespace.json"),
            "--cluster", str(SNAPSHOT), "--json")
    assert r.returncode == 0, r.stderr
    (o,) = lines(r.stdout)
    assert o["status"] == "denied" and o["reasons"]


def test_replay_reads_stdin():
    r = run("replay", "-", "--cluster", str(SNAPSHOT), "--json",
            stdin=(EVENTS / "01-vllm-hung.json").read_text())
    assert r.returncode == 0 and lines(r.stdout)[0]["status"] == "planned"


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"foo": 1}', "not an Alertmanager payload"),
    ("[]", "empty array"),
    ('{"version": "3", "alerts": []}', "version"),
])
def test_invalid_input_exits_2_with_reason(tmp_path: Path, content: str, message: str):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    r = run("replay", str(bad), "--cluster", str(SNAPSHOT), "--json")
    assert r.returncode == 2
    assert message in r.stderr
    assert r.stdout == ""


def test_missing_file_exits_2():
    r = run("replay", "/nonexistent/alert.json", "--cluster", str(SNAPSHOT))
    assert r.returncode == 2 and "alert.json" in r.stderr


def test_demo_prints_a_table_of_outcomes():
    r = run("demo")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "STATUS" in out and "FUNCTION" in out
    for status in ("planned", "duplicate", "skipped", "denied"):
        assert status in out, status
    assert "applied" not in out.split("STATUS", 1)[1]  # a snapshot is never written


def test_sweep_runs_what_is_due_once(tmp_path: Path):
    """`remediate sweep`: scheduled work whose time has come goes through the
    path (plan only here: a snapshot), and is then marked swept."""
    from remediation.guard.ledger import SQLiteLedger
    from remediation.events.alertmanager import alertmanager_to_events
    from remediation.events.signal import signal_from_event

    doc = json.loads((EVENTS / "15-dcgm-xid48-resolved-uncordon.json").read_text())
    (event,) = alertmanager_to_events(doc, routes=lambda n, _l: "drain-gpu-node")
    signal = signal_from_event(event)
    path = str(tmp_path / "ledger.sqlite")
    ledger = SQLiteLedger(path)
    ledger.schedule("scheduled/x", function="drain-gpu-node", target="Node/gpu-node-7",
                    event_id=signal.event_id, now=1.0, due_at=2.0, signal=signal.to_record(),
                    reasons=["wait"])
    ledger.close()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VAULT_", "OPA_", "REMEDIATION_", "KUBECONFIG"))}
    env.update(REMEDIATION_LEDGER=path, REMEDIATION_SNAPSHOT=str(SNAPSHOT))
    first = subprocess.run([sys.executable, "-m", "remediation.cli", "sweep", "--json"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == 0, first.stderr
    (out,) = lines(first.stdout)
    assert (out["status"], out["function"], out["target"]["name"]) == \
        ("planned", "drain-gpu-node", "gpu-node-7")
    second = subprocess.run([sys.executable, "-m", "remediation.cli", "sweep"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert second.returncode == 0 and "nothing is due" in second.stdout
    assert SQLiteLedger(path).get("scheduled/x").status == "swept"
