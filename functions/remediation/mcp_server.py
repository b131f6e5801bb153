"""The MCP server: AI agents' door into the one path, and nothing else.

The only module that imports the ``mcp`` SDK (an import-linter contract
says so). Each tool is a thin wrapper over :class:`agents.AgentDoor`, which
holds the logic and the guardrails; this module adds the protocol: typed
inputs (JSON schema from the signatures, checked by the SDK before a tool
runs: bad arguments are a tool error and nothing is done), honest
annotations (``readOnlyHint``, ``destructiveHint``), the MCP session's
client name as the requester, resources and prompts.

Served over stdio by ``remediate mcp``, and as streamable HTTP at ``/mcp`` on
the HTTP app when ``REMEDIATION_MCP_HTTP`` is on (behind a bearer token;
see :func:`http_wsgi_app`). No approval tool: approving stays with humans.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from .agents import LABEL_CONTRACT, AgentDoor, ToolRefused, policy_view
from .pipeline import Pipeline

log = logging.getLogger("remediation.mcp")

INSTRUCTIONS = """\
Remediation for GPU/LLM inference fleets. Read freely (explain_alert shows the
plan and the policy decision without doing anything). request_remediation
sends an alert through the same path as Alertmanager's: a ledger claims each
incident once, a policy decides (protected namespaces, rate limits, circuit
breakers, and a human's approval for an agent's drain, reboot or eviction),
credentials are scoped to the plan, the fix is verified and audited. Always
give a reason. You cannot approve: a human does."""

READ = ToolAnnotations.model_validate({"readOnlyHint": True, "destructiveHint": False,
                                      "idempotentHint": True, "openWorldHint": False})
#: it can cordon, drain and evict (after a human's approval), restart, scale
ACT = ToolAnnotations.model_validate({"readOnlyHint": False, "destructiveHint": True,
                                     "idempotentHint": True, "openWorldHint": True})

Alert = Annotated[dict[str, Any], Field(
    description="An Alertmanager webhook payload or one of its alerts (labels, annotations, "
                "status, startsAt, fingerprint), a Splunk webhook payload, or a structured "
                "CloudEvent")]


# -- typed outputs (the SDK publishes their JSON schema and checks each result) -------
Obj = dict[str, Any]
Status = Literal["planned", "applied", "denied", "skipped", "duplicate", "failed", "rejected",
                 "retry", "partial", "pending"]


class Target(BaseModel):
    kind: str
    namespace: str
    name: str


class RemediationInfo(BaseModel):
    name: str
    summary: str
    alerts: list[str]
    splunk_searches: list[str]
    labels: dict[str, list[str]] = Field(description="label names the function reads")
    handles_resolved: bool


class Remediations(BaseModel):
    remediations: list[RemediationInfo]


class Explanation(BaseModel):
    function: str
    would: Status = Field(description="what request_remediation would answer now")
    reasons: list[str]
    target: Target | None
    plan: Obj | None
    decision: Obj | None = Field(description="allow, reasons, needs_approval, dry_run")
    ledger: Obj | None = None


class Explanations(BaseModel):
    explanations: list[Explanation]


class OutcomeView(BaseModel):
    status: Status
    function: str
    event_id: str
    target: Target | None
    actions: list[dict[str, str]]
    reasons: list[str]
    decision: Obj | None
    dry_run: bool
    retryable: bool
    approval: Obj | None = None
    verification: Obj | None = None
    requested_by: dict[str, str] | None = None
    next: str | None = None


class Outcomes(BaseModel):
    outcomes: list[OutcomeView]


class PendingApproval(BaseModel):
    id: str
    function: str
    action: str
    target: str
    event_id: str
    requested_at: str
    expires_at: str
    reasons: list[str]
    requested_by: dict[str, str] | None
    approve: str


class PendingApprovals(BaseModel):
    pending: list[PendingApproval]


class LedgerRecord(BaseModel):
    key: str
    function: str
    action: str
    target: str
    status: str
    updated_at: str
    event_id: str
    requested_by_agent: str = Field(description="the agent client that asked, if one did")
    reasons: list[str]
    approved_by: str
    verification: str


class History(BaseModel):
    target: str
    remediations: list[LedgerRecord]


class RecentOutcomes(BaseModel):
    outcomes: list[LedgerRecord]


class _Server(MCPServer):
    """Lists only the tools settings enable; calls are checked by the door too."""

    door: AgentDoor

    async def list_tools(self) -> list[Any]:
        return [t for t in await super().list_tools() if self.door.enabled(t.name)]


def _client(ctx: Context | None) -> str:
    """The MCP session's client name (clientInfo), as the agent calls itself."""
    try:
        params = ctx.session.client_params if ctx is not None else None
        return params.client_info.name if params is not None else ""
    except Exception:  # noqa: BLE001 - no session info: an unknown agent
        return ""


def _refusing(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ToolRefused as exc:
        raise ToolError(str(exc)) from None


async def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """The door's (blocking) call on the loop's default executor: the path may
    wait for verification, and the loop keeps serving meanwhile. Its threads
    end with the loop, each dropping its own thread-bound policy engine."""
    return await asyncio.to_thread(_refusing, fn, *args, **kwargs)


def build_server(pipeline: Pipeline, *, gameday: Any = None) -> MCPServer:
    """``gameday``: the plan-only scenario runner (see AgentDoor)."""
    door = AgentDoor(pipeline, gameday=gameday)
    server = _Server(name="inference-remediation", instructions=INSTRUCTIONS,
                     version="0.1.0", log_level="WARNING")
    server.door = door

    @server.tool(annotations=READ, title="List remediations")
    async def list_remediations() -> Remediations:
        """The remediation functions: the alerts and Splunk searches routed to each,
        and the alert labels each needs."""
        return await _run(door.list_remediations)

    @server.tool(annotations=READ, title="Explain an alert (plan only)")
    async def explain_alert(alert: Alert, ctx: Context,
                      model: Annotated[str, Field(max_length=100)] = "") -> Explanations:
        """What would happen to this alert if you requested it: the route, the plan
        and the policy decision with its reasons. Nothing is claimed or written."""
        return await _run(door.explain_alert, alert, client=_client(ctx), model=model)

    @server.tool(annotations=ACT, title="Request a remediation")
    async def request_remediation(
            alert: Alert, ctx: Context,
            reason: Annotated[str, Field(min_length=1, max_length=500,
                                         description="why this is needed (audited)")],
            model: Annotated[str, Field(max_length=100,
                                        description="the model asking, if known")] = "",
    ) -> Outcomes:
        """Send the alert through the one remediation path as this agent: claimed once
        per incident, judged by policy (an agent's drain, reboot or eviction waits
        for a human's approval), applied with scoped credentials, verified, audited.
        Returns one outcome per alert: applied, planned, pending, denied, duplicate,
        skipped, rejected or retry, with reasons."""
        return await _run(door.request_remediation, alert, client=_client(ctx), reason=reason,
                    model=model)

    @server.tool(annotations=READ, title="List pending approvals")
    async def list_pending_approvals() -> PendingApprovals:
        """Remediations waiting for a human's approval (agents cannot approve)."""
        return await _run(door.list_pending_approvals)

    @server.tool(annotations=READ, title="A target's remediation history")
    async def get_history(kind: Annotated[str, Field(min_length=1, max_length=63)],
                    name: Annotated[str, Field(min_length=1, max_length=253)],
                    namespace: Annotated[str, Field(max_length=63)] = "",
                    limit: Annotated[int, Field(ge=1, le=100)] = 20) -> History:
        """The ledger's records for one object (kind Node, Deployment, ...), newest first."""
        return await _run(door.get_history, kind, name, namespace, limit)

    @server.tool(annotations=READ, title="Recent outcomes")
    async def list_recent_outcomes(
            limit: Annotated[int, Field(ge=1, le=100)] = 20) -> RecentOutcomes:
        """The newest remediations in the ledger, whatever their target."""
        return await _run(door.list_recent_outcomes, limit)

    @server.tool(annotations=READ, title="Effective policy")
    async def get_policy() -> dict[str, Any]:
        """The policy data in force (limits, protected namespaces, agent rules)."""
        return await _run(door.get_policy)

    @server.tool(annotations=READ, title="Run a game day (plan only)")
    async def run_gameday(scenario: Annotated[dict[str, Any], Field(
            description="a game-day scenario (name, events, expect), as in a scenario "
                        "file; snapshot: the bundled demo fleet or a list of objects")]
                    ) -> dict[str, Any]:
        """Replay a scenario on a snapshot with its own ledger: plan only, nothing
        touches the cluster or the real ledger."""
        return await _run(door.run_gameday, scenario)

    # -- resources ------------------------------------------------------------------
    @server.resource("remediation://policy/data", mime_type="application/json",
                     description="effective policy data")
    def policy_data() -> str:
        return json.dumps(policy_view(pipeline.settings), indent=1, default=str)

    @server.resource("remediation://routes", mime_type="application/json",
                     description="alert and Splunk search routes, per-function options")
    def routes() -> str:
        r = pipeline.routes
        return json.dumps({"alerts": dict(r.alerts), "searches": dict(r.searches),
                           "options": {k: dict(v) for k, v in r.options.items()}},
                          indent=1, default=str)

    @server.resource("remediation://labels", mime_type="application/json",
                     description="the alert labels each remediation reads")
    def labels() -> str:
        return json.dumps(dict(LABEL_CONTRACT), indent=1)

    @server.resource("remediation://outcomes/recent", mime_type="application/json",
                     description="the newest remediations in the ledger")
    def recent() -> str:
        return json.dumps(door.list_recent_outcomes(50), indent=1)

    # -- prompts ----------------------------------------------------------------------
    @server.prompt(title="Triage this alert")
    def triage_alert(alert: str) -> str:
        """Diagnose an alert and decide whether to request a remediation."""
        return ("Triage this alert for a GPU/LLM inference fleet.\n"
                f"Alert (JSON):\n{alert}\n\n"
                "1. Call explain_alert with it: read the route, the plan and the policy's "
                "reasons.\n2. Call get_history for the target: has it been remediated "
                "recently, and did verification succeed?\n3. If the plan fits the evidence, "
                "call request_remediation with a specific reason; if it was denied or needs "
                "approval, say why and who should act. Never try to get around a denial.")

    @server.prompt(title="Review this pending remediation")
    def review_pending(approval_id: str) -> str:
        """Summarise a pending remediation for the human who will approve or not."""
        return ("Review the pending remediation " + approval_id + " for a human approver.\n"
                "Call list_pending_approvals and find it; call get_history for its target "
                "and list_recent_outcomes. Summarise: what it will do (steps), why it was "
                "asked (the requester's reason), the policy's reasons, recent actions on the "
                "same target and fleet, and the risk. Recommend approve or not; you cannot "
                "approve it yourself: a human runs remediate approve.")

    return server


def serve_stdio(pipeline: Pipeline, *, gameday: Any = None) -> None:
    build_server(pipeline, gameday=gameday).run("stdio")


# -- streamable HTTP on the HTTP app ---------------------------------------------------
class _Loop:
    """One event loop thread for the MCP ASGI app under a WSGI server: the
    session manager's task group runs there for the process's lifetime."""

    def __init__(self, server: MCPServer, asgi: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.asgi = asgi
        ready = threading.Event()
        self._stop: asyncio.Event | None = None

        async def keep() -> None:
            self._stop = asyncio.Event()
            async with server.session_manager.run():
                ready.set()
                await self._stop.wait()

        self.thread = threading.Thread(target=self._run, args=(keep,), daemon=True,
                                       name="mcp-http")
        self.thread.start()
        if not ready.wait(10.0):
            raise RuntimeError("the MCP session manager did not start within 10s")

    def _run(self, keep: Any) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(keep())

    def close(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(5.0)


def http_wsgi_app(pipeline: Pipeline, *, max_body_bytes: int) -> Any:
    """The MCP endpoint as a WSGI app (the HTTP app is Flask): stateless
    streamable HTTP with JSON responses (any replica answers any request; no
    session to pin), on one background event loop. The caller checks the
    bearer token before a request gets here. DNS-rebinding protection is off:
    the service is reached by its cluster or route host name, and the bearer
    token, not the Host header, is what admits a caller."""
    from a2wsgi import ASGIMiddleware

    server = build_server(pipeline)
    asgi = server.streamable_http_app(
        streamable_http_path="/mcp", json_response=True, stateless_http=True,
        max_request_body_size=max_body_bytes,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    loop = _Loop(server, asgi)
    # Starlette is an ASGI app; a2wsgi's type names a narrower callable
    wsgi = ASGIMiddleware(asgi, loop=loop.loop)  # type: ignore[arg-type]
    wsgi.close = loop.close  # type: ignore[attr-defined]
    return wsgi
