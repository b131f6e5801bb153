"""Policy decisions: build the input (pure), normalise the answer (pure).

The engine is a port (``PolicyEngine.evaluate(input) -> decision document``)
with two implementations chosen by the composition root: the embedded Rego
engine (``clients.rego``) and an OPA server (``clients.opa``). Both return
the same document, ``{"allow", "reasons", "needs_approval", "dry_run"}``.
Anything else denies (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..model import Decision, Plan, Signal
from ..ports import PolicyEngine

__all__ = ["PolicyEngine", "decide", "decision_from_document", "policy_input"]


def policy_input(plan: Plan, signal: Signal, *, actor: str, via: str, cluster: str,
                 self_namespace: str, dry_run: bool, stats: Mapping[str, Any],
                 now: datetime, approval: Mapping[str, Any] | None = None,
                 facts: Mapping[str, Any] | None = None,
                 requester: Mapping[str, str] | None = None,
                 slo: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``facts``: the touched objects as the cluster has them (guard.targets).
    ``requester``: who asked besides an alert (an agent, through the MCP
    door): its fields join ``actor`` (``kind: "agent"``, ``client``, ``model``,
    ``reason``) so the policy can hold agents to rules of their own.
    ``slo``: the target's error budget (guard.slo); None (no SLO configured
    for the target): no ``slo`` key, and the policy decides as without."""
    namespaces = {s.namespace for s in plan.steps if s.namespace}
    if plan.target.namespace:
        namespaces.add(plan.target.namespace)
    doc: dict[str, Any] = {
        "action": plan.action,
        "function": plan.function,
        "plan": plan.as_dict(),
        "target": plan.target.as_dict(),
        "namespaces": sorted(namespaces),
        "kinds": sorted({s.kind for s in plan.steps}),
        "event": signal.as_dict(),
        "actor": {**dict(requester or {}), "name": actor, "via": via},
        "cluster": cluster,
        "self_namespace": self_namespace,
        "dry_run": dry_run,
        "stats": dict(stats),
        "now": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "approval": dict(approval or {}),
        # the touched nodes, namespaces and workloads as the cluster has them
        # (guard.targets); absent facts make the policy refuse
        "facts": dict(facts or {}),
    }
    if slo is not None:
        doc["slo"] = dict(slo)
    return doc


def decision_from_document(doc: Any) -> Decision:
    if not isinstance(doc, Mapping) or not doc:
        return Decision(False, ("policy returned no decision (undefined)",))
    allow = doc.get("allow")
    raw = doc.get("reasons") or []
    reasons = tuple(str(r) for r in raw) if isinstance(raw, (list, tuple)) else (str(raw),)
    decision_id = str(doc.get("decision_id") or "")
    if not isinstance(allow, bool):
        return Decision(False, reasons + ("policy decision has no boolean 'allow'",), decision_id)
    return Decision(allow, reasons, decision_id,
                    needs_approval=doc.get("needs_approval") is True,
                    dry_run=doc.get("dry_run") is True)


def decide(engine: PolicyEngine, plan: Plan, signal: Signal, *, actor: str, via: str,
           cluster: str, self_namespace: str, dry_run: bool, stats: Mapping[str, Any],
           now: datetime, approval: Mapping[str, Any] | None = None,
           facts: Mapping[str, Any] | None = None,
           slo: Mapping[str, Any] | None = None) -> Decision:
    doc = engine.evaluate(policy_input(plan, signal, actor=actor, via=via, cluster=cluster,
                                       self_namespace=self_namespace, dry_run=dry_run,
                                       stats=stats, now=now, approval=approval, facts=facts,
                                       requester=signal.requester, slo=slo))
    return decision_from_document(doc)
