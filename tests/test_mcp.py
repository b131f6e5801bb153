"""The MCP server, with the SDK's own client: in memory, over streamable HTTP
on loopback (the HTTP app behind its bearer token) and over stdio. Every
acting call goes through the one path against the API emulator; the tests
read back what the cluster and the ledger hold, not what a mock was told."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import Implementation
from remediation.cli import demo_dir, gameday_plan_only
from remediation.dispatch import handle_event
from remediation.events.binding import (
    JSON_CONTENT_TYPE,
    SPECVERSION,
    event_dict,
    new_event,
    validate_attributes,
)
from remediation.events.outcome import outcome_event
from remediation.guard.approval import approval_data
from remediation.mcp_server import build_server
from remediation.model import TYPE_APPROVAL_GRANTED, TYPE_APPROVAL_REQUESTED
from remediation.runtime import build_pipeline, close_pipeline
from remediation.settings import (
    ApprovalSettings,
    MCPSettings,
    PolicySettings,
    Secret,
    VerifySettings,
)

EVENTS = demo_dir() / "events"
SECRET = "approval-hmac-key-mcp"
TOKEN = "mcp-bearer-7d1e"
NS, DEPLOY, NODE = "llm-serving", "vllm-llama-7b", "gpu-node-5"
AGENT = Implementation(name="claude-code", version="1.0")
READ_ONLY = {"list_remediations", "explain_alert", "list_pending_approvals", "get_history",
             "list_recent_outcomes", "get_policy", "run_gameday"}


def payload(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def writes(emu: Any) -> list[Any]:
    return [r for r in emu.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")
            and r.resource != "events"]


def restarted_at(emu: Any) -> str | None:
    obj = emu.get("deployments", NS, DEPLOY)
    return ((obj["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(
        "kubectl.kubernetes.io/restartedAt")


def data(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return result.structured_content


def error_text(result: Any) -> str:
    assert result.is_error, result.structured_content
    return " ".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture
def settings(make_settings: Callable[..., Any], tmp_path: Path) -> Callable[..., Any]:
    def make(limits: dict[str, Any] | None = None, agents: dict[str, Any] | None = None,
             **over: Any) -> Any:
        cfg: dict[str, Any] = {"limits": {"max_cordoned_gpu_nodes_percent": 50, **(limits or {})}}
        if agents:
            cfg["agents"] = agents
        f = tmp_path / "policy-data.yaml"
        f.write_text(yaml.safe_dump({"remediation_config": cfg}))
        return make_settings(policy=PolicySettings(data_file=str(f)),
                             approval=ApprovalSettings(ttl=600, secret=Secret(SECRET)),
                             verify=VerifySettings(deadline=5.0, interval=0.05), **over)
    return make


@pytest.fixture
def door() -> Any:
    """``door(settings) -> (pipeline, run)``: ``run(coro_fn)`` runs ``coro_fn(client)``
    with the SDK's client connected in memory to a server over that pipeline."""
    pipelines: list[Any] = []

    def make(settings: Any, **ports: Any) -> tuple[Any, Callable[..., Any]]:
        pipeline = build_pipeline(settings, **ports)
        pipelines.append(pipeline)
        server = build_server(pipeline, gameday=gameday_plan_only)

        def run(fn: Callable[[Client], Any]) -> Any:
            async def go() -> Any:
                async with Client(server, client_info=AGENT) as client:
                    return await fn(client)
            return asyncio.run(go())
        return pipeline, run

    yield make
    for p in pipelines:
        close_pipeline(p)


def approval_event(key: str, approver: str, expires_at: str = "") -> Any:
    """A signed approval of the request that expires at ``expires_at`` (as the
    request shows it: an approval is bound to its request)."""
    attrs = {"specversion": SPECVERSION, "type": TYPE_APPROVAL_GRANTED, "source": "/chatops",
             "id": f"approve-{key[:8]}-{approver}", "datacontenttype": JSON_CONTENT_TYPE}
    return new_event(validate_attributes(attrs),
                     approval_data(SECRET, key, approver, expires_at))


# -- listing ---------------------------------------------------------------------------

def test_tools_are_listed_with_honest_annotations_and_typed_schemas(fleet, settings, door):
    _, run = door(settings())
    tools = {t.name: t for t in run(lambda c: c.list_tools()).tools}
    assert set(tools) == READ_ONLY | {"request_remediation"}
    assert not any("approv" in n and n != "list_pending_approvals" for n in tools)
    for name in READ_ONLY:
        a = tools[name].annotations
        assert (a.read_only_hint, a.destructive_hint) == (True, False), name
        assert tools[name].output_schema is not None, name
    act = tools["request_remediation"]
    assert (act.annotations.read_only_hint, act.annotations.destructive_hint) == (False, True)
    schema = act.input_schema
    assert set(schema["required"]) == {"alert", "reason"}
    assert schema["properties"]["reason"]["minLength"] == 1
    assert "ctx" not in schema["properties"]
    out = act.output_schema
    outcome = out["$defs"]["OutcomeView"]
    assert "pending" in outcome["properties"]["status"]["enum"]
    assert {"status", "reasons", "decision"} <= set(outcome["required"])
    assert "Explanation" in tools["explain_alert"].output_schema["$defs"]
    assert writes(fleet) == []


def test_resources_and_prompts(fleet, settings, door):
    _, run = door(settings())

    async def read(c: Client) -> Any:
        resources = {str(r.uri) for r in (await c.list_resources()).resources}
        routes = await c.read_resource("remediation://routes")
        policy = await c.read_resource("remediation://policy/data")
        prompts = {p.name for p in (await c.list_prompts()).prompts}
        triage = await c.get_prompt("triage_alert", {"alert": '{"labels": {}}'})
        return resources, routes, policy, prompts, triage

    resources, routes, policy, prompts, triage = run(read)
    assert resources == {"remediation://policy/data", "remediation://routes",
                         "remediation://labels", "remediation://outcomes/recent"}
    assert json.loads(routes.contents[0].text)["alerts"]["VLLMEngineHung"] == "restart-engine"
    cfg = json.loads(policy.contents[0].text)["data"]["remediation_config"]
    assert cfg["agents"]["approval_actions"] == ["cordon-drain", "mark-reboot", "evict-pods"]
    assert cfg["limits"]["max_cordoned_gpu_nodes_percent"] == 50  # the operator's file merged
    assert prompts == {"triage_alert", "review_pending"}
    assert "explain_alert" in triage.messages[0].content.text


def test_list_remediations_gives_routes_and_labels(fleet, settings, door):
    _, run = door(settings())
    out = data(run(lambda c: c.call_tool("list_remediations", {})))
    by_name = {r["name"]: r for r in out["remediations"]}
    assert "VLLMEngineHung" in by_name["restart-engine"]["alerts"]
    assert "namespace" in by_name["restart-engine"]["labels"]
    assert "GPUXidError" in by_name["drain-gpu-node"]["alerts"]


# -- explain: plan and decision, nothing written --------------------------------------

def test_explain_alert_plans_and_decides_without_claiming_or_writing(fleet, settings, door):
    pipeline, run = door(settings())
    out = data(run(lambda c: c.call_tool("explain_alert", {"alert": payload("01-vllm-hung")})))
    (e,) = out["explanations"]
    assert (e["function"], e["would"]) == ("restart-engine", "applied")
    assert e["plan"]["steps"][0]["kind"] == "Deployment"
    assert e["decision"]["allow"] is True
    drain = data(run(lambda c: c.call_tool(
        "explain_alert", {"alert": payload("10-dcgm-xid79-fell-off-bus")})))["explanations"][0]
    assert drain["would"] == "pending" and drain["decision"]["needs_approval"] is True
    assert pipeline.ledger.history() == []
    assert writes(fleet) == [] and restarted_at(fleet) is None


def test_explain_accepts_a_single_alert(fleet, settings, door):
    _, run = door(settings())
    alert = payload("01-vllm-hung")["alerts"][0]
    (e,) = data(run(lambda c: c.call_tool("explain_alert", {"alert": alert})))["explanations"]
    assert e["function"] == "restart-engine" and e["target"]["name"] == DEPLOY


# -- request: the one path ----------------------------------------------------------------

def test_same_incident_requested_twice_is_a_duplicate(fleet, settings, door):
    pipeline, run = door(settings())
    args = {"alert": payload("01-vllm-hung"), "reason": "engine hung: 37 waiting, no tokens",
            "model": "claude-opus"}

    async def twice(c: Client) -> Any:
        return (await c.call_tool("request_remediation", args),
                await c.call_tool("request_remediation", args))

    first, second = run(twice)
    (o1,), (o2,) = data(first)["outcomes"], data(second)["outcomes"]
    assert o1["status"] == "applied", o1
    assert o1["verification"]["result"] == "succeeded"
    assert o1["requested_by"] == {"kind": "agent", "client": "claude-code",
                                  "model": "claude-opus",
                                  "reason": "engine hung: 37 waiting, no tokens"}
    assert o2["status"] == "duplicate", o2
    assert restarted_at(fleet) is not None
    patches = [r for r in fleet.requests if r.method == "PATCH" and r.resource == "deployments"]
    assert len(patches) == 1
    (rec,) = pipeline.ledger.history()
    assert rec.status == "applied" and rec.event_id.startswith("agent/claude-code/")
    # audited like any remediation: a Kubernetes Event on the target names the agent
    events = [e for e in fleet.list("events", NS) if e.get("reason") == "RemediationApplied"]
    assert len(events) == 1
    assert "requested by agent claude-code, model claude-opus: engine hung" in \
        events[0]["message"]


def test_protected_namespace_is_denied_with_its_reasons(fleet, settings, door):
    pipeline, run = door(settings())
    alert = payload("04-vllm-hung-protected-namespace")
    out = data(run(lambda c: c.call_tool("request_remediation",
                                         {"alert": alert, "reason": "hung"})))
    (o,) = out["outcomes"]
    assert o["status"] == "denied"
    assert "namespace openshift-ai-platform is protected" in o["reasons"]
    assert o["decision"]["allow"] is False
    assert writes(fleet) == []
    assert [r.status for r in pipeline.ledger.history()] == ["denied"]


def test_an_agents_drain_waits_for_a_human_then_applies_once(fleet, settings, door):
    published: list[Any] = []
    pipeline, run = door(settings(), publish=published.append)
    args = {"alert": payload("10-dcgm-xid79-fell-off-bus"), "reason": "Xid 79: GPU fell off"}
    (o,) = data(run(lambda c: c.call_tool("request_remediation", args)))["outcomes"]
    assert o["status"] == "pending", o
    assert "a human" in o["next"]
    key = o["approval"]["id"]
    assert not fleet.get("nodes", NODE)["spec"].get("unschedulable")
    assert writes(fleet) == []
    # the approval request went out as an event, with who asked
    (req,) = [outcome_event(p) for p in published]
    assert req.get_type() == TYPE_APPROVAL_REQUESTED
    assert req.get_data()["requested_by"]["client"] == "claude-code"

    pending = data(run(lambda c: c.call_tool("list_pending_approvals", {})))["pending"]
    assert [(p["id"], p["requested_by"]["reason"]) for p in pending] == [
        (key, "Xid 79: GPU fell off")]
    again = data(run(lambda c: c.call_tool("request_remediation", args)))["outcomes"][0]
    assert again["status"] == "pending" and writes(fleet) == []

    # a human approves through the existing path (a signed approval event)
    expires = pending[0]["expires_at"]
    done = handle_event(pipeline, approval_event(key, "alice", expires), via="approval-event")
    assert done.status.value == "applied", done.reasons
    assert done.approval["approved_by"] == "alice"
    assert done.as_dict()["requested_by"]["client"] == "claude-code"
    n = fleet.get("nodes", NODE)
    assert n["spec"]["unschedulable"] is True
    assert n["metadata"]["labels"]["inferenceremediation.io/reboot-required"] == "true"
    node_patches = [r for r in fleet.requests if r.method == "PATCH" and r.resource == "nodes"]

    replayed = handle_event(pipeline, approval_event(key, "alice", expires),
                            via="approval-event")
    assert replayed.status.value == "duplicate"
    third = data(run(lambda c: c.call_tool("request_remediation", args)))["outcomes"][0]
    assert third["status"] == "duplicate"
    assert [r for r in fleet.requests if r.method == "PATCH" and r.resource == "nodes"] == \
        node_patches
    rec = pipeline.ledger.get(key)
    assert (rec.status, rec.approved_by) == ("applied", "alice")
    history = data(run(lambda c: c.call_tool("get_history", {"kind": "Node", "name": NODE})))
    assert [(r["status"], r["requested_by_agent"], r["approved_by"])
            for r in history["remediations"]] == [("applied", "claude-code", "alice")]


def test_agents_are_rate_limited_on_their_own_counts(fleet, settings, door):
    pipeline, run = door(settings(agents={"max_per_client_per_window": 1}))
    first = payload("01-vllm-hung")
    second = payload("17-vllm-kv-cache-saturated")
    o1 = data(run(lambda c: c.call_tool("request_remediation",
                                        {"alert": first, "reason": "hung"})))["outcomes"][0]
    o2 = data(run(lambda c: c.call_tool("request_remediation",
                                        {"alert": second, "reason": "kv cache"})))["outcomes"][0]
    assert o1["status"] == "applied", o1
    assert o2["status"] == "denied", o2
    assert "agent rate limit: claude-code requested 1 action(s) in the window (limit 1)" in \
        o2["reasons"]
    # the same alert from Alertmanager is not an agent's: the agents' limit does not apply
    from remediation.events.alertmanager import alertmanager_to_events

    (event,) = alertmanager_to_events(second, routes=lambda n, _l: pipeline.routes.function_for(n))
    assert handle_event(pipeline, event, via="webhook").status.value == "applied"


# -- guardrails: refused calls do nothing ------------------------------------------------------

def test_a_disabled_tool_called_directly_is_refused(fleet, settings, door):
    pipeline, run = door(settings(mcp=MCPSettings(disabled_tools=("request_remediation",))))
    listed = {t.name for t in run(lambda c: c.list_tools()).tools}
    assert "request_remediation" not in listed
    result = run(lambda c: c.call_tool("request_remediation",
                                       {"alert": payload("01-vllm-hung"), "reason": "hung"}))
    assert "request_remediation is refused: disabled in settings" in error_text(result)
    assert pipeline.ledger.history() == [] and writes(fleet) == []


def test_read_only_mode_refuses_the_acting_tool(fleet, settings, door):
    pipeline, run = door(settings(mcp=MCPSettings(read_only=True)))
    result = run(lambda c: c.call_tool("request_remediation",
                                       {"alert": payload("01-vllm-hung"), "reason": "hung"}))
    assert "read-only mode" in error_text(result)
    assert data(run(lambda c: c.call_tool("get_policy", {})))["engine"] == "embedded"
    assert pipeline.ledger.history() == [] and writes(fleet) == []


@pytest.mark.parametrize("args", [
    {"alert": "VLLMEngineHung"},                                  # reason missing
    {"alert": {"version": "4"}, "reason": "x"},                   # not a payload
    {"alert": "not an object", "reason": "x"},                    # wrong type
    {"reason": "hung"},                                           # alert missing
    {"alert": {"labels": {"alertname": "VLLMEngineHung"}}, "reason": ""},  # empty reason
    {"alert": {"labels": {"alertname": "VLLMEngineHung"}}, "reason": "   "},
    {"alert": {"labels": {"alertname": "VLLMEngineHung"}}, "reason": "x", "model": "m" * 101},
])
def test_bad_arguments_are_a_tool_error_and_nothing_is_done(fleet, settings, door, args):
    pipeline, run = door(settings())
    result = run(lambda c: c.call_tool("request_remediation", args))
    assert result.is_error
    assert pipeline.ledger.history() == [] and writes(fleet) == []


def test_get_history_and_gameday_refuse_bad_input(fleet, settings, door):
    _, run = door(settings())
    assert run(lambda c: c.call_tool("get_history", {"kind": "Node"})).is_error
    assert run(lambda c: c.call_tool("list_recent_outcomes", {"limit": 0})).is_error
    refused = run(lambda c: c.call_tool("run_gameday", {"scenario": {
        "name": "x", "snapshot": "/etc/passwd", "events": []}}))
    assert "paths are refused" in error_text(refused)
    refused = run(lambda c: c.call_tool("run_gameday", {"scenario": {
        "name": "x", "events": [{"at": 0, "file": "/etc/hosts"}]}}))
    assert "only bundled demo: events" in error_text(refused)


def test_run_gameday_is_plan_only(fleet, settings, door):
    pipeline, run = door(settings())
    scenario = {"name": "hang", "start": "2026-11-01T10:05:00Z",
                "events": [{"at": 0, "file": "demo:01-vllm-hung.json", "expect": "planned"},
                           {"at": 5, "file": "demo:02-vllm-hung-resent.json",
                            "expect": "duplicate"}]}
    report = data(run(lambda c: c.call_tool("run_gameday", {"scenario": scenario})))
    assert report["passed"] is True, report
    assert pipeline.ledger.history() == [] and writes(fleet) == []


# -- streamable HTTP on the HTTP app, behind the bearer token ----------------------------------

def http_client(url: str, token: str) -> Client:
    headers = {"Authorization": f"Bearer {token}"}
    transport = streamable_http_client(url + "/mcp",
                                       http_client=httpx2.AsyncClient(headers=headers,
                                                                      timeout=30))
    return Client(transport, client_info=Implementation(name="gemini-cli", version="0.1"))


def test_streamable_http_behind_the_bearer_token(fleet, settings, serve_app):
    app = serve_app(settings(mcp=MCPSettings(http=True, token=Secret(TOKEN))))
    init = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        resp = app.post("/mcp", json=init, headers={**headers, "Accept":
                                                    "application/json, text/event-stream"})
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.json()["error"] == "unauthorized"
    assert app.client.get(app.url + "/health/readiness").status_code == 200

    async def go() -> Any:
        async with http_client(app.url, TOKEN) as c:
            tools = {t.name for t in (await c.list_tools()).tools}
            out = await c.call_tool("request_remediation", {
                "alert": payload("01-vllm-hung"), "reason": "engine hung"})
            again = await c.call_tool("request_remediation", {
                "alert": payload("01-vllm-hung"), "reason": "engine hung"})
            bad = await c.call_tool("request_remediation", {"alert": payload("01-vllm-hung")})
            return tools, out, again, bad

    tools, out, again, bad = asyncio.run(go())
    # no gameday runner on the HTTP app's door: not offered, and refused if called
    assert tools == (READ_ONLY - {"run_gameday"}) | {"request_remediation"}
    (o,) = data(out)["outcomes"]
    assert o["status"] == "applied", o
    assert o["requested_by"]["client"] == "gemini-cli"
    assert data(again)["outcomes"][0]["status"] == "duplicate"
    assert bad.is_error
    assert restarted_at(fleet) is not None
    assert len([r for r in fleet.requests if r.method == "PATCH"
                and r.resource == "deployments"]) == 1


def test_mcp_http_is_off_by_default_and_without_a_token(fleet, settings, serve_app):
    for mcp in (MCPSettings(), MCPSettings(http=True)):
        app = serve_app(settings(mcp=mcp))
        resp = app.post("/mcp", json={}, headers={"Authorization": "Bearer x"})
        assert resp.status_code == 404


# -- stdio: remediate mcp ----------------------------------------------------------------------

def test_remediate_mcp_over_stdio_plans_against_a_snapshot(tmp_path):
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "remediation.cli", "mcp", "--cluster", str(demo_dir() / "cluster.yaml")],
        env={"PATH": "/usr/bin:/bin", "REMEDIATION_LEDGER": str(tmp_path / "ledger.sqlite"),
             "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "functions")})

    async def go() -> Any:
        async with Client(params, client_info=AGENT, read_timeout_seconds=60) as c:
            tools = {t.name for t in (await c.list_tools()).tools}
            out = await c.call_tool("request_remediation", {
                "alert": payload("01-vllm-hung"), "reason": "engine hung"})
            return tools, out

    tools, out = asyncio.run(go())
    assert tools == READ_ONLY | {"request_remediation"}
    (o,) = data(out)["outcomes"]
    assert o["status"] == "planned" and o["dry_run"] is True
    assert "plan only: facts come from a snapshot" in o["reasons"]


def test_an_agent_cannot_approve_even_with_a_signed_approval_event(fleet, settings, door):
    pipeline, run = door(settings())
    args = {"alert": payload("10-dcgm-xid79-fell-off-bus"), "reason": "Xid 79"}
    (o,) = data(run(lambda c: c.call_tool("request_remediation", args)))["outcomes"]
    key = o["approval"]["id"]
    expires = o["approval"]["expires_at"]
    signed = event_dict(approval_event(key, "alice", expires))  # as if the agent held the secret
    for tool, extra in (("request_remediation", {"reason": "approve"}), ("explain_alert", {})):
        result = run(lambda c, t=tool, x=extra: c.call_tool(t, {"alert": signed, **x}))
        assert "unsupported event type" in error_text(result)
    assert pipeline.ledger.get(key).status == "pending"
    assert not fleet.get("nodes", NODE)["spec"].get("unschedulable")
    assert writes(fleet) == []


def test_an_agents_outcomes_are_logged_and_counted_as_every_doors(fleet, settings, door,
                                                                   caplog):
    """The door reports as the webhooks do: one outcome line (via mcp) and one
    count on /metrics per outcome."""
    import logging

    from remediation import metrics

    from tests.scrape import value

    def applied_restarts() -> float:
        body, _ = metrics.exposition()
        return value(body.decode(), "remediation_outcomes_total", function="restart-engine",
                     action="rollout-restart", status="applied")

    _, run = door(settings())
    before = applied_restarts()
    args = {"alert": payload("01-vllm-hung"), "reason": "engine hung"}
    with caplog.at_level(logging.INFO, logger="remediation.outcome"):
        (o,) = data(run(lambda c: c.call_tool("request_remediation", args)))["outcomes"]
    assert o["status"] == "applied", o
    lines = [json.loads(r.getMessage()) for r in caplog.records
             if r.name == "remediation.outcome"]
    assert [(line["via"], line["status"], line["function"]) for line in lines] == [
        ("mcp", "applied", "restart-engine")]
    assert applied_restarts() == before + 1
