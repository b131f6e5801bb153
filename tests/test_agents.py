"""The agents' door below the protocol: who asked rides on the signal (never
read from an event), the policy input says so, and the agents' own counts
come from the ledger (SQLite and Lease ledgers alike)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest
from remediation.agents import AgentDoor, ToolRefused, as_agents, client_slug
from remediation.cli import demo_dir
from remediation.clients.kube import KubeLeases
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import event_dict, event_from_dict
from remediation.events.signal import signal_from_event
from remediation.guard.lease_ledger import LeaseLedger
from remediation.guard.ledger import SQLiteLedger
from remediation.guard.policy import policy_input
from remediation.model import ObjectRef, Plan, Signal
from remediation.runtime import build_pipeline
from remediation.settings import KubeSettings, Settings

from tests.plugins.kube import make_api_client

AGENT = {"kind": "agent", "client": "claude-code", "model": "m", "reason": "hung"}


def test_an_event_cannot_claim_to_be_an_agent_or_anyone():
    body = json.loads((demo_dir() / "events" / "01-vllm-hung.json").read_text())
    (event,) = alertmanager_to_events(body, routes=lambda n, _l: "restart-engine")
    doc = event_dict(event)
    doc["requester"] = "agent"
    doc["data"]["requester"] = AGENT
    doc["data"]["alert"]["requester"] = AGENT
    signal = signal_from_event(event_from_dict(doc))
    assert signal.name == "VLLMEngineHung" and dict(signal.requester) == {}


def test_the_requester_survives_the_ledger_record_of_a_pending_signal():
    signal = Signal("e-1", "/test", "t", "firing", "VLLMEngineHung", fingerprint="fp")
    asked = as_agents(signal, AGENT)
    back = Signal.from_record(json.loads(json.dumps(asked.to_record())))
    assert dict(back.requester) == AGENT
    assert back.event_id == "agent/claude-code/e-1"
    assert back.incident == asked.incident != signal.incident  # the agents' own incident
    other = as_agents(signal, {**AGENT, "client": "gemini"})
    assert other.incident == asked.incident  # one incident whichever agent asks


def test_policy_input_actor_says_agent_and_the_door_cannot_rename_the_product():
    plan = Plan("restart-engine", "rollout-restart", ObjectRef("Deployment", "llm", "v"), ())
    signal = replace(Signal("e", "/s", "t", "firing", "n"),
                     requester=MappingProxyType({**AGENT, "name": "spoof", "via": "spoof"}))
    doc = policy_input(plan, signal, actor="inference-remediation", via="mcp", cluster="",
                       self_namespace="remediation", dry_run=True, stats={},
                       now=datetime(2026, 11, 1, tzinfo=UTC), requester=signal.requester)
    assert doc["actor"] == {**AGENT, "name": "inference-remediation", "via": "mcp"}
    plain = policy_input(plan, Signal("e", "/s", "t", "firing", "n"),
                         actor="inference-remediation", via="webhook", cluster="",
                         self_namespace="remediation", dry_run=True, stats={},
                         now=datetime(2026, 11, 1, tzinfo=UTC))
    assert plain["actor"] == {"name": "inference-remediation", "via": "webhook"}


def test_client_names_become_safe_event_id_parts():
    assert client_slug("Claude Code/1.0 ../x") == "Claude-Code-1.0-..-x"
    assert client_slug("") == "unknown"
    assert len(client_slug("x" * 500)) == 100


def test_mcp_settings_from_the_environment_keep_the_token_secret():
    s = Settings.from_env({"REMEDIATION_MCP_HTTP": "true", "REMEDIATION_MCP_TOKEN": "t0k3n",
                           "REMEDIATION_MCP_DISABLED_TOOLS": " run_gameday, get_policy ,",
                           "REMEDIATION_MCP_READ_ONLY": "1"})
    assert s.mcp.http and s.mcp.read_only
    assert s.mcp.token.reveal() == "t0k3n" and "t0k3n" not in repr(s)
    assert s.mcp.disabled_tools == ("run_gameday", "get_policy")
    off = Settings.from_env({}).mcp
    assert (off.http, off.read_only, off.disabled_tools, bool(off.token)) == (False, False, (),
                                                                              False)


@pytest.fixture(params=["sqlite", "leases"])
def ledger(request, tmp_path) -> Any:
    if request.param == "sqlite":
        led = SQLiteLedger(str(tmp_path / "ledger.sqlite"))
    else:
        emulator = request.getfixturevalue("kube_emulator")
        led = LeaseLedger(KubeLeases(make_api_client(emulator.url), "remediation", 5.0))
    yield led
    led.close()


def test_agent_counts_come_from_the_ledger(ledger):
    now = 1_800_000_000.0
    pipeline = build_pipeline(replace(Settings(), kube=KubeSettings(
        snapshot=str(demo_dir() / "cluster.yaml"))), ledger=ledger, clock=lambda: now)

    def record(key: str, event_id: str, status: str, *, at: float = now - 60,
               name: str = "") -> None:
        plan = Plan("restart-engine", "rollout-restart",
                    ObjectRef("Deployment", "llm", name or key), (), key=key)
        ledger.claim(plan, holder="h", event_id=event_id, now=at, ttl=300)
        if status == "pending":
            ledger.hold(key, holder="h", now=at, expires_at=at + 600, signal={})
        elif status != "claimed":
            ledger.finish(key, status, now=at)

    record("a1", "agent/claude-code/1", "applied")
    record("a2", "agent/claude-code/2", "pending")
    record("a3", "agent/gemini/3", "applied")
    record("a4", "agent/claude-code/4", "denied")              # not an action
    record("a5", "agent/claude-code/5", "applied", at=now - 4000)  # out of the window
    record("a6", "agent/claude-code/6", "pending", at=now - 700)   # expired while pending
    record("w1", "alertmanager-fp-1", "applied")                # not an agent's
    plan = Plan("restart-engine", "rollout-restart", ObjectRef("Deployment", "llm", "x"), (),
                key="new")
    agent_signal = as_agents(Signal("e", "/s", "t", "firing", "n"), AGENT)
    stats = pipeline.stats(agent_signal, plan)
    assert stats["agent_actions_in_window"] == 3
    assert stats["agent_client_actions_in_window"] == 2
    assert stats["cluster_actions_in_window"] == 3  # the ledger's own count: applied ones
    plain = pipeline.stats(Signal("e", "/s", "t", "firing", "n"), plan)
    assert "agent_actions_in_window" not in plain


def test_the_door_needs_a_reason_and_refuses_unknown_or_disabled_tools():
    pipeline = build_pipeline(replace(Settings(), kube=KubeSettings(
        snapshot=str(demo_dir() / "cluster.yaml"))))
    door = AgentDoor(pipeline)
    alert = json.loads((demo_dir() / "events" / "01-vllm-hung.json").read_text())
    for reason in ("", "  ", None):
        with pytest.raises(ToolRefused, match="reason is required"):
            door.request_remediation(alert, client="c", reason=reason)  # type: ignore[arg-type]
    with pytest.raises(ToolRefused, match="not offered"):
        door.run_gameday({"name": "x"})  # no runner given to this door
    with pytest.raises(ToolRefused):
        door.check("approve")
    assert pipeline.ledger.history() == []
