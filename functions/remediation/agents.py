"""What an AI agent may do, as plain functions over the pipeline (no MCP here).

The MCP server (``mcp_server``, the only module that imports the SDK) maps
each tool to one method of :class:`AgentDoor`. The door adds nothing the
policy does not see: an acting call is a signal handled by
:meth:`Pipeline.handle` like any alert (route, plan, claim once, policy,
scoped credentials, execute, verify, report), with the signal's
``requester`` saying an agent asked (client, model, reason) and an event id
under :data:`~remediation.model.AGENT_EVENT_PREFIX` so the ledger counts the
agents' own requests. Approving is not here: it stays with humans
(``remediate approve``, signed approval events).

Every tool is checked when it is called (:meth:`AgentDoor.check`), not only
when tools are listed: a tool disabled in settings is refused.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .dispatch import report
from .errors import ActionFailed, InvalidInput, TemporaryError
from .events.alertmanager import alertmanager_to_events
from .events.binding import event_from_dict
from .events.signal import signal_from_event
from .events.splunk import splunk_to_event
from .guard.policy import decide
from .guard.targets import target_facts
from .model import AGENT_EVENT_PREFIX, Outcome, Plan, Signal, Status
from .pipeline import Pipeline, agent_prefix
from .records import LedgerRecord, LedgerStatus

#: tools that never change anything (readOnlyHint) and the one that can act
READ_ONLY_TOOLS = ("list_remediations", "explain_alert", "list_pending_approvals",
                   "get_history", "list_recent_outcomes", "get_policy", "run_gameday")
ACTING_TOOLS = ("request_remediation",)
TOOLS = READ_ONLY_TOOLS + ACTING_TOOLS
#: actions that disrupt more than one workload (destructiveHint on the door
#: that may lead to them; the shipped policy sends an agent's to a human)
DISRUPTIVE_ACTIONS = ("cordon-drain", "mark-reboot", "evict-pods")

#: the alert labels each function reads (any one of a tuple), what an alert
#: must carry to be planned; the label contract agents can read
LABEL_CONTRACT: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "restart-engine": {
        "namespace": ["namespace", "exported_namespace", "kubernetes_namespace"],
        "workload (one of)": ["deployment", "statefulset", "inferenceservice", "isvc", "pod",
                              "exported_pod", "kubernetes_pod_name", "pod_name"],
    },
    "drain-gpu-node": {
        "node (alerts)": ["kubernetes_node", "node", "Hostname"],
        "node (Splunk)": ["host", "kubernetes_node", "node"],
        "xid": ["xid", "err_code (DCGM), or an NVRM: Xid line in a Splunk result"],
        "optional": ["gpu", "UUID", "modelName", "namespace + pod (the GPU's workload)"],
    },
    "rebalance-gpu-pods": {
        "node": ["kubernetes_node", "node", "Hostname"],
    },
    "scale-engine": {
        "namespace": ["namespace", "exported_namespace", "kubernetes_namespace"],
        "workload (one of)": ["deployment", "statefulset", "pod", "exported_pod",
                              "kubernetes_pod_name", "pod_name"],
    },
})

MAX_REASON_CHARS = 500
MAX_NAME_CHARS = 100
_CLIENT = re.compile(r"[^A-Za-z0-9._-]+")


class ToolRefused(Exception):
    """A call the door refuses (disabled tool, bad arguments): nothing was done."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(float(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def client_slug(name: str) -> str:
    """An MCP client's name as it appears in event ids (and the ledger)."""
    slug = _CLIENT.sub("-", name or "").strip("-")[:MAX_NAME_CHARS]
    return slug or "unknown"


def events_from_document(doc: Any, pipeline: Pipeline) -> list[Any]:
    """CloudEvents from what an agent hands in: an Alertmanager webhook
    payload, one Alertmanager alert (``labels``, ``status``...), a Splunk
    webhook payload, or a structured CloudEvent. The same adapters as the
    webhooks and ``remediate replay``; ``InvalidInput`` says what is wrong."""
    routes = pipeline.routes
    if not isinstance(doc, Mapping) or not doc:
        raise InvalidInput("alert: expected a JSON object (an Alertmanager payload or alert, "
                           "a Splunk payload, or a structured CloudEvent)", "alert")
    if "specversion" in doc:
        return [event_from_dict(dict(doc))]
    if "alerts" in doc and "version" in doc:
        return alertmanager_to_events(doc, routes=lambda n, _l: routes.function_for(n))
    if "sid" in doc and "result" in doc:
        return [splunk_to_event(doc, routes=lambda n, _l: routes.function_for(n, splunk=True))]
    if isinstance(doc.get("labels"), Mapping):
        payload = {"version": "4", "receiver": "mcp", "status": doc.get("status", "firing"),
                   "alerts": [dict(doc)], "groupLabels": {}, "commonLabels": {},
                   "commonAnnotations": {}, "externalURL": "", "groupKey": "mcp"}
        payload["alerts"][0].setdefault("status", "firing")
        return alertmanager_to_events(payload, routes=lambda n, _l: routes.function_for(n))
    raise InvalidInput("alert: not an Alertmanager payload or alert, a Splunk payload or a "
                       "structured CloudEvent", "alert")


def as_agents(signal: Signal, requester: Mapping[str, str]) -> Signal:
    """The signal as an agent's request. Its incident is the agents' own (the
    alert's fingerprint under an ``agent:`` prefix): the same alert requested
    again, by any agent, is one incident (claimed once), but never the
    alert's own, so what an agent's request ends in (denied by an agent-only
    rule, or parked for a human) cannot stand for Alertmanager's delivery of
    the same alert. The two still never both act: the ledger's target window
    allows one action per target and action. The event id carries the client
    for the agents' counts."""
    fingerprint = "agent:" + (signal.fingerprint or f"{signal.source}#{signal.event_id}")
    return replace(signal, requester=MappingProxyType(dict(requester)), fingerprint=fingerprint,
                   event_id=f"{agent_prefix(requester)}{signal.event_id}")


def _requested(event: Any) -> str:
    try:
        return str(event.get_extension("remediation") or "")
    except Exception:  # noqa: BLE001
        return ""


class AgentDoor:
    """The tools, over one pipeline. ``client``: the MCP session's client name."""

    def __init__(self, pipeline: Pipeline, *, clock: Any = time.time,
                 gameday: Callable[[Mapping[str, Any], Path], dict[str, Any]] | None = None
                 ) -> None:
        """``gameday``: runs a scenario document plan-only (the entry point
        passes ``gameday``'s runner; that module sits above this layer). None:
        ``run_gameday`` is not offered on this door."""
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.clock = clock
        self.gameday = gameday

    # -- guardrails -----------------------------------------------------------
    def enabled(self, tool: str) -> bool:
        cfg = self.settings.mcp
        if tool not in TOOLS or tool in cfg.disabled_tools:
            return False
        if tool == "run_gameday" and self.gameday is None:
            return False
        return not (cfg.read_only and tool in ACTING_TOOLS)

    def check(self, tool: str) -> None:
        """Refuse a disabled tool when it is called (not only when listed)."""
        if not self.enabled(tool):
            if tool in ACTING_TOOLS and self.settings.mcp.read_only:
                why = "read-only mode (REMEDIATION_MCP_READ_ONLY)"
            elif tool == "run_gameday" and self.gameday is None:
                why = "not offered on this door (remediate mcp offers it)"
            else:
                why = "disabled in settings (REMEDIATION_MCP_DISABLED_TOOLS)"
            raise ToolRefused(f"tool {tool} is refused: {why}")

    def _signals(self, alert: Any, requester: Mapping[str, str] | None) -> list[tuple[Signal,
                                                                                        str]]:
        try:
            events = events_from_document(alert, self.pipeline)
            out = []
            for event in events:
                signal = signal_from_event(event)
                if requester is not None:
                    signal = as_agents(signal, requester)
                out.append((signal, _requested(event)))
        except InvalidInput as exc:
            where = f" ({exc.attribute})" if exc.attribute else ""
            raise ToolRefused(f"invalid alert{where}: {exc}") from None
        if not out:
            raise ToolRefused("the document holds no alert")
        return out

    @staticmethod
    def requester(client: str, reason: str, model: str = "") -> dict[str, str]:
        if not isinstance(reason, str) or not reason.strip():
            raise ToolRefused("reason is required: say why this remediation is needed")
        return {"kind": "agent", "client": client_slug(client),
                "model": (model or "")[:MAX_NAME_CHARS],
                "reason": reason.strip()[:MAX_REASON_CHARS]}

    # -- read-only tools ----------------------------------------------------------
    def list_remediations(self) -> dict[str, Any]:
        self.check("list_remediations")
        routes = self.pipeline.routes
        out = []
        for name, spec in sorted(self.pipeline.catalogue.items()):
            if self.settings.functions and name not in self.settings.functions:
                continue
            out.append({
                "name": name, "summary": spec.summary,
                "alerts": sorted(a for a, f in routes.alerts.items() if f == name),
                "splunk_searches": sorted(s for s, f in routes.searches.items() if f == name),
                "labels": json.loads(json.dumps(LABEL_CONTRACT.get(name, {}))),
                "handles_resolved": spec.handles_resolved,
            })
        return {"remediations": out}

    def explain_alert(self, alert: Any, *, client: str = "", model: str = "",
                      reason: str = "") -> dict[str, Any]:
        """Route, plan and policy decision for each alert of the document, as
        the agent would get them; nothing is claimed, held or written."""
        self.check("explain_alert")
        requester = {"kind": "agent", "client": client_slug(client), "model": model,
                     "reason": reason or "(explain only)"}
        results = []
        for signal, requested in self._signals(alert, requester):
            results.append(self._explain(signal, requested))
        return {"explanations": results}

    def _explain(self, signal: Signal, requested: str) -> dict[str, Any]:
        p = self.pipeline
        planned = p.plan(signal, requested=requested, via="mcp", schedule=False)
        if isinstance(planned, Outcome):
            return {"function": planned.function, "would": planned.status.value,
                    "reasons": list(planned.reasons),
                    "target": planned.target.as_dict() if planned.target else None,
                    "plan": None, "decision": None}
        plan: Plan = planned
        record = p.ledger.get(plan.key)
        cluster = self.settings.cluster  # the one cluster read and written (issue 15)
        try:
            facts = target_facts(plan, p.cluster.facts(cluster))
        except (TemporaryError, ActionFailed) as exc:
            return {"function": plan.function, "would": "retry",
                    "reasons": [f"cannot read cluster facts: {exc}"],
                    "target": plan.target.as_dict(), "plan": plan.as_dict(), "decision": None}
        decision = decide(p.policy, plan, signal, actor=self.settings.actor, via="mcp",
                          cluster=cluster, self_namespace=self.settings.kube.self_namespace,
                          dry_run=self.settings.dry_run or not p.cluster.live,
                          stats=p.stats(signal, plan), now=datetime.fromtimestamp(
                              p.clock(), tz=UTC), facts=facts)
        if record is not None and record.status is not LedgerStatus.EXPIRED:
            would = "duplicate"
        elif not decision.allow:
            would = "denied"
        elif decision.needs_approval:
            would = "pending"
        else:
            would = "applied" if p.cluster.live and not self.settings.dry_run else "planned"
        return {"function": plan.function, "would": would, "reasons": list(decision.reasons),
                "target": plan.target.as_dict(), "plan": plan.as_dict(),
                "decision": decision.as_dict(),
                "ledger": {"key": plan.key, "status": record.status.value} if record else None}

    def list_pending_approvals(self) -> dict[str, Any]:
        self.check("list_pending_approvals")
        rows = self.pipeline.ledger.pending(now=self.clock())
        return {"pending": [{
            "id": r.key, "function": r.function, "action": r.action,
            "target": r.target, "event_id": r.event_id,
            "requested_at": _iso(r.updated_at), "expires_at": _iso(r.expires_at),
            "reasons": list(r.reasons),
            "requested_by": r.signal.get("requester") or None,
            "approve": f"remediate approve {r.key} (a human, not an agent)",
        } for r in rows]}

    def get_history(self, kind: str, name: str, namespace: str = "",
                    limit: int = 20) -> dict[str, Any]:
        self.check("get_history")
        if not kind or not name:
            raise ToolRefused("kind and name are required")
        ns = f"{namespace}/" if namespace else ""
        target = f"{kind}/{ns}{name}"
        rows = self.pipeline.ledger.history(target=target, limit=max(1, min(limit, 100)))
        return {"target": target, "remediations": [_record(r) for r in rows]}

    def list_recent_outcomes(self, limit: int = 20) -> dict[str, Any]:
        self.check("list_recent_outcomes")
        rows = self.pipeline.ledger.history(limit=max(1, min(limit, 100)))
        return {"outcomes": [_record(r) for r in rows]}

    def get_policy(self) -> dict[str, Any]:
        self.check("get_policy")
        return policy_view(self.settings)

    def run_gameday(self, scenario: Any) -> dict[str, Any]:
        """A scenario (a mapping, as in a scenario file) on the snapshot stand:
        its own in-memory ledger and a snapshot, plan only; the real ledger and
        cluster are never touched. Paths are refused (only bundled demo events
        and inline objects): an agent reads no file of this machine."""
        self.check("run_gameday")
        assert self.gameday is not None  # check() refuses otherwise
        try:
            report = self.gameday(_safe_scenario(scenario), demo_dir())
        except InvalidInput as exc:
            raise ToolRefused(f"invalid scenario: {exc}") from None
        out: dict[str, Any] = json.loads(json.dumps(report, default=str))
        return out

    # -- the acting tool ------------------------------------------------------------
    def request_remediation(self, alert: Any, *, client: str, reason: str,
                            model: str = "") -> dict[str, Any]:
        """Submit the alert through the one path as the agent; one outcome per alert."""
        self.check("request_remediation")
        requester = self.requester(client, reason, model)
        # reported as every door reports: one outcome line (and its count on
        # /metrics) each, and the outcome sink when it takes every outcome
        outcomes = [report(self.pipeline,
                           self.pipeline.handle(signal, via="mcp", requested=requested),
                           alertname=signal.name[:200], via="mcp")
                    for signal, requested in self._signals(alert, requester)]
        return {"outcomes": [outcome_view(o) for o in outcomes]}


def outcome_view(o: Outcome) -> dict[str, Any]:
    d = o.as_dict()
    keep = ("status", "function", "event_id", "target", "actions", "reasons", "decision",
            "dry_run", "retryable", "approval", "verification", "requested_by")
    view = {k: d.get(k) for k in keep}
    if o.status is Status.PENDING:
        view["next"] = "a human approves it (remediate approve ID); agents cannot"
    return view


def _record(r: LedgerRecord) -> dict[str, Any]:
    agent = r.event_id[len(AGENT_EVENT_PREFIX):].split("/", 1)[0] \
        if r.event_id.startswith(AGENT_EVENT_PREFIX) else ""
    return {"key": r.key, "function": r.function, "action": r.action,
            "target": r.target, "status": r.status.value, "updated_at": _iso(r.updated_at),
            "event_id": r.event_id, "requested_by_agent": agent,
            "reasons": list(r.reasons), "approved_by": r.approved_by,
            "verification": r.verification}


def policy_view(settings: Any) -> dict[str, Any]:
    """The effective policy data (shipped defaults with the operator's file
    merged over) and the limits the pipeline adds, as the policy sees them."""
    from .clients.rego import default_policy_dir, load_policy_sources

    pol = settings.policy
    policy_dir = Path(pol.policy_dir) if pol.policy_dir else default_policy_dir()
    _modules, data = load_policy_sources(policy_dir, pol.data_file)
    return {
        "engine": "opa-server" if pol.opa_url else "embedded",
        "data": data,
        "note": ("with an OPA server, its own data bundle decides; this is the data "
                 "shipped here") if pol.opa_url else "",
        "pipeline": {"target_window_seconds": settings.ledger.target_window,
                     "stats_window_seconds": 3600,
                     "approval_ttl_seconds": settings.approval.ttl,
                     "dry_run": settings.dry_run},
    }


def demo_dir() -> Path:
    return Path(str(resources.files("remediation").joinpath("defaults/demo")))


def _safe_scenario(scenario: Any) -> dict[str, Any]:
    if not isinstance(scenario, Mapping):
        raise ToolRefused("scenario: expected a mapping (name, snapshot, events, expect)")
    doc: dict[str, Any] = json.loads(json.dumps(scenario))  # a plain copy: no non-JSON
    snapshot = doc.get("snapshot", "cluster.yaml")
    if snapshot not in ("cluster.yaml", "demo") and not isinstance(snapshot, list):
        raise ToolRefused("scenario.snapshot: the bundled demo fleet ('demo') or a list of "
                          "objects; paths are refused")
    doc["snapshot"] = "cluster.yaml" if not isinstance(snapshot, list) else snapshot
    if doc.get("settings"):
        raise ToolRefused("scenario.settings: refused through the agent door")
    for i, ev in enumerate(doc.get("events") or []):
        if isinstance(ev, Mapping) and "file" in ev and not str(ev["file"]).startswith("demo:"):
            raise ToolRefused(f"scenario.events[{i}].file: only bundled demo: events")
    return doc


def tool_names(door: AgentDoor) -> Sequence[str]:
    return [t for t in TOOLS if door.enabled(t)]
