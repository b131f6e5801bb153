"""The real OPA (the pinned ``opa`` binary built by tests/realstack/build.sh):

* ``opa test policies/`` passes, with the same tests the embedded runner runs;
* ``opa run --server`` loaded with policies/ and its data.json, as deployed,
  answers the product's own OPA adapter (opa-python-client);
* a differential test: thousands of generated policy inputs, under the
  deployed data and under operator data, get identical decisions from the
  embedded engine (regorus) and the real OPA server, and every deny rule of
  the policy fires at least once;
* faults against the real server: stopped (connection refused) and SIGSTOPped
  (accepts, never answers) give "no action, retry" as with the stand-in;
* the stand-in (tests/plugins/opa.py) answers raw HTTP requests as the real
  server does.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest
from remediation.clients.opa import OpaServerPolicyEngine
from remediation.clients.rego import EmbeddedPolicyEngine, load_policy_sources, run_rego_tests
from remediation.errors import DependencyUnavailable, InvalidInput
from remediation.guard.policy import decide, decision_from_document, policy_input
from remediation.model import TYPE_ALERT_FIRING, ObjectRef, Plan, Signal, Step, freeze
from remediation.settings import PolicySettings

from tests.realstack.opa_server import POLICY_DIR, OpaServer, opa_binary, run_opa_test

pytestmark = [pytest.mark.realstack, pytest.mark.timeout(300)]

NOW = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
SIGNAL = Signal(event_id="e", source="/alertmanager/r", type=TYPE_ALERT_FIRING, status="firing",
                name="VLLMEngineHung", labels=MappingProxyType({"namespace": "llm"}))
DEFAULT_DATA = json.loads((POLICY_DIR / "data.json").read_text())


# -- fixtures -------------------------------------------------------------------

@pytest.fixture(scope="module")
def opa_bin() -> Path:
    return opa_binary()


def _serve(opa_bin: Path, log: Path, **kw: Any) -> Iterator[OpaServer]:
    server = OpaServer(opa_bin, log, **kw).start()
    try:
        yield server
    finally:
        server.stop()
        # Captured output: pytest shows it with the failing test's report.
        print(f"--- {log}\n{server.log_tail(80)}")


@pytest.fixture(scope="module")
def real_opa(opa_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaServer]:
    """One server for the module: policies/ and its data.json, as deployed."""
    yield from _serve(opa_bin, tmp_path_factory.mktemp("opa") / "opa.log")


@pytest.fixture
def own_opa(opa_bin: Path, tmp_path: Path) -> Iterator[OpaServer]:
    """A server of this test's own (it will be stopped or paused), with
    decision logging on so that OPA sends decision ids."""
    yield from _serve(opa_bin, tmp_path / "opa.log",
                      extra_args=["--set", "decision_logs.console=true"])


def adapter(url: str, **kw: Any) -> OpaServerPolicyEngine:
    return OpaServerPolicyEngine(PolicySettings(opa_url=url, **kw))


def embedded(data_file: str = "") -> EmbeddedPolicyEngine:
    return EmbeddedPolicyEngine(PolicySettings(policy_dir=str(POLICY_DIR), data_file=data_file))


def plan(action: str, kind: str, ns: str, params: dict | None = None, verb: str = "patch",
         name: str = "x") -> Plan:
    steps = (Step(verb, kind, ns, name, "why"),)
    return Plan("f", action, ObjectRef(kind, ns, name), steps, key="k",
                params=freeze(params or {}))


def healthy_facts(p: Plan) -> dict:
    """``input.facts`` of a cluster where the plan's targets are what they
    should be: GPU worker nodes, inference namespaces, engine workloads."""
    label = DEFAULT_DATA["remediation_config"]["inference_namespace_label"]
    nodes = {s.name for s in p.steps if s.kind == "Node"} | (
        {p.target.name} if p.target.kind == "Node" else set())
    return {"nodes": {n: {"found": True, "labels": {}, "gpu_capacity": 8,
                          "control_plane": False} for n in nodes},
            "namespaces": {s.namespace: {"found": True, "labels": {label: "true"}}
                           for s in p.steps if s.namespace},
            "workloads": {f"{s.kind}/{s.namespace}/{s.name}": {
                "found": True, "kind": s.kind, "labels": {"inferenceremediation.io/engine":
                                                          "vllm"},
                "template_labels": {}, "images": []}
                for s in p.steps if s.kind in ("Deployment", "StatefulSet", "Pod")}}


def inputs(p: Plan, stats: dict | None = None, now: datetime = NOW,
           approval: dict | None = None, requester: dict | None = None) -> dict:
    return policy_input(p, SIGNAL, actor="t", via="mcp" if requester else "trigger",
                        cluster="", self_namespace="remediation", dry_run=False,
                        stats=stats or {}, now=now, approval=approval, requester=requester,
                        facts=healthy_facts(p))


# -- opa test -------------------------------------------------------------------

def test_opa_test_passes_every_policy_unit_test(opa_bin):
    """``opa test policies/`` with the real OPA passes, and it runs exactly the
    tests the embedded runner (``remediate policy test``) runs."""
    result = run_opa_test(opa_bin)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = set(re.findall(r"^(?:data\.)?([\w.]+): PASS", result.stdout, re.MULTILINE))
    summary = re.search(r"^PASS: (\d+)/(\d+)$", result.stdout, re.MULTILINE)
    assert summary and summary.group(1) == summary.group(2), result.stdout
    embedded_results = run_rego_tests(POLICY_DIR)
    assert all(ok for _, ok, _ in embedded_results)
    assert {name.removeprefix("data.") for name, _, _ in embedded_results} == passed
    assert int(summary.group(1)) == len(embedded_results) >= 40


# -- decisions through the product's adapter --------------------------------------

def test_the_server_holds_the_policy_and_data_as_deployed(real_opa):
    data = httpx.get(f"{real_opa.url}/v1/data/remediation_config", timeout=5).json()
    assert data["result"] == DEFAULT_DATA["remediation_config"]
    policies = httpx.get(f"{real_opa.url}/v1/policies", timeout=5).json()["result"]
    assert {Path(p["id"]).name for p in policies} >= {"remediation.rego"}


DECISIONS = [
    # (plan, stats, expected allow, a reason that must be there)
    (plan("rollout-restart", "Deployment", "llm-serving", name="vllm"), {}, True,
     "allowed: rollout-restart on Deployment/vllm"),
    (plan("rollout-restart", "Deployment", "kube-system"), {}, False,
     "namespace kube-system is protected"),
    (plan("rollout-restart", "Deployment", "openshift-ai"), {}, False,
     "namespace openshift-ai is protected"),
    (plan("rollout-restart", "Deployment", "remediation"), {}, False,
     "namespace remediation is protected"),
    (plan("rm-rf", "Deployment", "llm"), {}, False, "unknown action rm-rf"),
    (plan("cordon-drain", "Node", "", {"cordon": True, "gpu_nodes": 4,
                                       "cordoned_gpu_nodes_after": 2}), {}, False,
     "circuit breaker: 2 of 4 GPU nodes would be cordoned (limit 25%)"),
    (plan("scale-out", "Deployment", "llm", {"to_replicas": 5, "max_replicas": 4}, verb="scale"),
     {}, False, "scale to 5 replicas exceeds the workload maximum 4"),
    (plan("rollout-restart", "Deployment", "llm"), {"target_actions_in_window": 3}, False,
     "cooldown: x already acted on 3 time(s) in the window (limit 3)"),
]


@pytest.mark.parametrize("p,stats,allow,reason", DECISIONS,
                         ids=[f"{d[0].action}-{d[0].target.namespace or 'cluster'}-{i}"
                              for i, d in enumerate(DECISIONS)])
def test_real_opa_decides_through_the_product_adapter(real_opa, p, stats, allow, reason):
    server, local = adapter(real_opa.url), embedded()
    try:
        kw = {"actor": "t", "via": "trigger", "cluster": "", "self_namespace": "remediation",
              "dry_run": False, "stats": stats, "now": NOW, "facts": healthy_facts(p)}
        got = decide(server, p, SIGNAL, **kw)
        assert got.allow is allow and reason in got.reasons
        assert got.needs_approval is False and got.dry_run is False
        assert got == decide(local, p, SIGNAL, **kw)
    finally:
        server.close()
        local.close()


def test_an_undefined_decision_from_the_real_opa_denies(real_opa):
    """A rule the server does not have: OPA answers 200 {} and the product
    denies (as with the stand-in's "undefined" mode)."""
    server = adapter(real_opa.url, rule="no_such_rule")
    try:
        assert server.evaluate(inputs(DECISIONS[0][0])) == {}
        d = decide(server, DECISIONS[0][0], SIGNAL, actor="t", via="trigger", cluster="",
                   self_namespace="remediation", dry_run=False, stats={}, now=NOW,
                   facts=healthy_facts(DECISIONS[0][0]))
    finally:
        server.close()
    assert not d.allow and "undefined" in d.reasons[0]


# -- the differential test ----------------------------------------------------------

# Every deny rule of remediation.rego, recognised by its message. The two
# "node ... is off limits" rules share a message: told apart by the input.
RULES: list[tuple[str, str]] = [
    ("not-an-approver", r" is not an approver$"),
    ("unknown-action", r"^unknown action "),
    ("kind-not-allowed", r"^action \S* may not touch a "),
    ("verb-not-allowed", r"^action \S* may not "),
    ("too-many-steps", r"^plan has \d+ steps; action "),
    ("no-steps", r"^plan has no steps$"),
    ("protected-namespace", r"^namespace .* is protected$"),
    ("node-off-limits", r"^node .* is off limits$"),
    ("cooldown", r"^cooldown: "),
    ("rate-limit", r"^rate limit: "),
    ("cluster-rate-limit", r"^cluster-wide rate limit: "),
    ("too-many-evictions", r"^plan evicts "),
    ("circuit-breaker", r"^circuit breaker: "),
    ("scale-over-policy-max", r" exceeds the policy maximum "),
    ("scale-over-workload-max", r" exceeds the workload maximum "),
    ("consent-unmanaged", r"^deleting pods without a controller "),
    ("consent-local-data", r"^evicting pods with local \(emptyDir\) data "),
    ("freeze-malformed", r"^change freeze .* is not an RFC 3339 time"),
    ("freeze-open", r"^change freeze .* until "),
    ("maintenance-window-only", r" runs only in a maintenance window$"),
    ("node-without-facts", r"^node \S+: no facts from the cluster "),
    ("control-plane-node", r"^node \S+ is a control-plane node: never touched$"),
    ("node-without-gpus", r"^node \S+ has no GPU capacity: "),
    ("not-an-inference-namespace", r"^namespace \S* is not an inference namespace "),
    ("restart-without-facts", r"^restart of an unknown workload: no facts from the cluster$"),
    ("workload-not-found", r": not found in the cluster$"),
    ("not-an-inference-engine", r" is not an inference engine "),
    ("agent-no-reason", r"^an agent's request needs a reason$"),
    ("agent-rate-limit", r"^agent rate limit: agents requested "),
    ("agent-client-rate-limit", r"^agent rate limit: \S+ requested "),
    ("agent-forbidden-action", r"^agents may not request "),
    ("slo-unavailable", r"^slo: unavailable \(.*\): cooldown not relaxed$"),
]


def rules_of(doc: dict, inp: dict) -> set[str]:
    """The deny rules (or "allowed") behind a decision's reasons; "UNKNOWN"
    for a reason no rule writes (an engine error, say)."""
    if doc.get("allow") is True:
        return {"allowed"}
    fired = set()
    for reason in doc.get("reasons") or []:
        rule = next((r for r, rx in RULES if re.search(rx, str(reason))), "UNKNOWN:" + reason)
        if rule == "node-off-limits":
            node = reason.split(" ")[1]
            steps = (inp.get("plan") or {}).get("steps") or []
            if any(isinstance(s, dict) and s.get("kind") == "Node" and s.get("name") == node
                   for s in steps):
                fired.add("node-off-limits (step)")
            if ((inp.get("plan") or {}).get("params") or {}).get("node") == node:
                fired.add("node-off-limits (params.node)")
            continue
        fired.add(rule)
    return fired


def test_every_deny_rule_has_a_classifier():
    """A new deny rule in the policy must be added to RULES (and then the
    differential test proves both engines fire it)."""
    text = (POLICY_DIR / "remediation.rego").read_text()
    assert len(re.findall(r"^deny contains ", text, re.MULTILINE)) == len(RULES) + 1  # node: two rules


ACTIONS = list(DEFAULT_DATA["remediation_config"]["actions"]) + ["rm-rf", "Rollout-Restart"]
KINDS = ["Deployment", "StatefulSet", "Pod", "Node", "DaemonSet", "Secret"]
VERBS = ["patch", "delete", "evict", "scale", "create"]
NAMESPACES = ["llm-serving", "llm", "default", "kube-system", "kube-flannel", "openshift-ai",
              "knative-serving", "vault", "remediation", "gpu-operator", "kube", "openshifted"]
NODES = ["gpu-node-0", "gpu-node-1", "gpu-node-7", "cpu-1", "ctrl-1"]
SHAPES = {  # a plan the planners would make for the action: (kinds, verbs)
    "rollout-restart": (["Deployment", "StatefulSet"], ["patch"]),
    "delete-pod": (["Pod"], ["delete"]),
    "reschedule-pod": (["Deployment", "Pod"], ["patch", "evict", "delete"]),
    "cordon-drain": (["Node", "Pod"], ["patch", "evict"]),
    "mark-reboot": (["Node", "Pod"], ["patch", "evict"]),
    "uncordon": (["Node"], ["patch"]),
    "evict-pods": (["Pod"], ["evict"]),
    "scale-out": (["Deployment", "StatefulSet"], ["scale"]),
}
STEP_COUNTS = [0, 1, 1, 1, 2, 3, 3, 5, 11, 121]


def _number(rng: random.Random, around: int) -> Any:
    """Mostly an integer near a limit; now and then something a careless
    caller might send."""
    roll = rng.random()
    if roll < 0.85:
        return max(0, around + rng.randint(-3, 3))
    return rng.choice([around + 0.5, str(around), None, True, -1, 0, 10 ** 6])


def _now(rng: random.Random) -> Any:
    """Instants around the operator profile's windows, in the product's
    format; a few in other RFC 3339 spellings or not times at all."""
    base = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
    when = base + timedelta(minutes=rng.randint(-60 * 24 * 3, 60 * 24 * 65))
    roll = rng.random()
    if roll < 0.85:
        return when
    return rng.choice([
        when.strftime("%Y-%m-%dT%H:%M:%S.123456789Z"),
        when.strftime("%Y-%m-%dT%H:%M:%S+02:00"),
        when.strftime("%Y-%m-%dt%H:%M:%Sz"),
        when.strftime("%Y-%m-%d %H:%M:%SZ"),
        "2026-02-30T10:00:00Z", "2026-11-31T10:00:00Z", "2028-02-29T10:00:00Z",
        "1600-01-01T00:00:00Z", "2300-01-01T00:00:00Z", "", 1761991200, None,
    ])


def _facts(rng: random.Random, p: Plan) -> dict:
    """``input.facts`` as guard.targets gathers them for the plan (nodes,
    namespaces, workloads), each one found or not, a GPU node or not, an
    engine or not; now and then absent or of the wrong shape. Most plans
    meet a healthy cluster, so that the other rules still decide them."""
    if rng.random() < 0.6:
        return healthy_facts(p)
    nodes = {s.name for s in p.steps if s.kind == "Node"}
    if p.target.kind == "Node":
        nodes.add(p.target.name)
    if isinstance(p.params.get("node"), str):
        nodes.add(p.params["node"])
    namespaces = {s.namespace for s in p.steps if s.namespace} | (
        {p.target.namespace} if p.target.namespace else set())
    label = DEFAULT_DATA["remediation_config"]["inference_namespace_label"]
    facts: dict[str, Any] = {
        "nodes": {n: {"found": rng.random() < 0.9,
                      "labels": ({"node-role.kubernetes.io/control-plane": ""}
                                 if n.startswith("ctrl") or rng.random() < 0.05 else {}),
                      "gpu_capacity": rng.choice([0, 8, 8, 8, 4, "8", None]),
                      "control_plane": rng.random() < 0.05} for n in sorted(nodes)},
        "namespaces": {ns: {"found": True,
                            "labels": {label: rng.choice(["true", "true", "false", ""])}
                            if rng.random() < 0.8 else {}} for ns in sorted(namespaces)},
        "workloads": {}}
    for s in p.steps:
        if s.kind in ("Deployment", "StatefulSet", "Pod") and rng.random() < 0.95:
            roll = rng.random()
            facts["workloads"][f"{s.kind}/{s.namespace}/{s.name}"] = {
                "found": rng.random() < 0.9, "kind": s.kind,
                "labels": {"inferenceremediation.io/engine": "vllm"} if roll < 0.4 else {},
                "template_labels": ({"serving.kserve.io/inferenceservice": "llama"}
                                    if 0.4 <= roll < 0.55 else {}),
                "images": [rng.choice(["vllm/vllm-openai:v0.6", "ghcr.io/x/TritonServer:24",
                                       "nginx:1.27", "busybox"])] if roll >= 0.55 else []}
    roll = rng.random()
    if roll < 0.05:
        return {}
    if roll < 0.08:
        return rng.choice([{"nodes": [], "namespaces": None, "workloads": "x"},
                           {"nodes": {n: None for n in nodes}}])
    return facts


def _slo(rng: random.Random) -> Any:
    """An error budget as clients/prometheus.py gives it: burn rates and
    budgets on both sides of the shipped thresholds, unavailable ones, and
    now and then a shape no client sends."""
    roll = rng.random()
    if roll < 0.55:
        rates = [1, 14.3, 14.4, 20, 99]
        return {"available": True, "service": "svc", "source": "prometheus",
                "burn_rates": {w: rng.choice(rates) for w in ("5m", "1h", "6h")
                               if rng.random() < 0.95},
                "error_budget_remaining": rng.choice([-0.25, 0, 0, 0.01, 0.5, 1])}
    if roll < 0.85:
        return {"available": False, "service": "svc",
                "reason": rng.choice(["prometheus: timed out", "no data for burn_rate:5m"])}
    return rng.choice([None, [], "up", {"available": "true", "burn_rates": {"5m": 20, "1h": 20}},
                       {"available": True, "burn_rates": None, "error_budget_remaining": "0"},
                       {"available": False}])


def generate(rng: random.Random) -> dict:
    """One policy input: the product's own ``policy_input`` of a generated
    plan, then (for a quarter of them) a field or two bent out of shape."""
    shaped = rng.random() < 0.7
    action = rng.choice(ACTIONS)
    kinds, verbs = SHAPES.get(action, (KINDS, VERBS))
    n_steps = rng.choice(STEP_COUNTS)
    steps = []
    for i in range(n_steps):
        kind = rng.choice(kinds if shaped and rng.random() < 0.9 else KINDS)
        verb = rng.choice(verbs if shaped and rng.random() < 0.9 else VERBS)
        ns = "" if kind == "Node" else rng.choice(NAMESPACES[:3] if shaped else NAMESPACES)
        name = rng.choice(NODES) if kind == "Node" else f"{kind.lower()}-{i}"
        steps.append(Step(verb, kind, ns, name, "why"))
    target = steps[0].ref if steps else ObjectRef("Deployment", rng.choice(NAMESPACES), "vllm")
    params: dict[str, Any] = {}
    if rng.random() < 0.3:
        params["node"] = rng.choice(NODES)
    if rng.random() < 0.4:
        params["evict_count"] = _number(rng, rng.choice([4, 8, 110]))
    if action in ("cordon-drain", "mark-reboot", "reschedule-pod") or rng.random() < 0.2:
        total = rng.randint(0, 16)
        params.update(cordon=rng.choice([True, True, False, "true"]),
                      already_cordoned_by_us=rng.random() < 0.15,
                      gpu_nodes=_number(rng, total),
                      cordoned_gpu_nodes_after=_number(rng, rng.randint(0, max(total, 1))))
    if action == "scale-out" or rng.random() < 0.1:
        params.update(to_replicas=_number(rng, rng.randint(1, 40)),
                      max_replicas=_number(rng, rng.randint(1, 40)))
    if rng.random() < 0.2:
        params.update(delete_unmanaged=rng.random() < 0.7,
                      unmanaged_pods=rng.choice([[], ["p-1"], ["p-1", "p-2"], "p-1"]))
    if rng.random() < 0.2:
        params.update(delete_local_data=rng.random() < 0.7,
                      local_data_pods=rng.choice([[], ["cache-0"], None]))
    stats = {}
    for key, around in (("target_actions_in_window", rng.choice([1, 2, 3, 4, 5])),
                        ("action_count_in_window", rng.choice([3, 5, 10, 20])),
                        ("cluster_actions_in_window", 50)):
        if rng.random() < 0.5:
            stats[key] = _number(rng, around if rng.random() < 0.5 else 0)
    approval = rng.choice([None, None, {"approved_by": "alice"}, {"approved_by": "mallory"},
                           {"approved_by": ""}, {"approved_by": 7}])
    requester = None
    if rng.random() < 0.3:  # an agent asked, through the MCP door
        requester = {"kind": "agent", "client": rng.choice(["claude-code", "gemini-cli"]),
                     "model": rng.choice(["", "m"]),
                     "reason": rng.choice(["engine hung", "engine hung", "", "  "])}
        for key, around in (("agent_actions_in_window", 10),
                            ("agent_client_actions_in_window", 5)):
            if rng.random() < 0.6:
                stats[key] = _number(rng, around if rng.random() < 0.6 else 0)
    now = _now(rng)
    p = Plan(rng.choice(["restart-engine", "drain-gpu-node", "scale-engine"]), action, target,
             tuple(steps), key="k", params=freeze(params))
    doc = inputs(p, stats, now if isinstance(now, datetime) else NOW, approval, requester)
    if requester is not None and rng.random() < 0.05:  # a reason of the wrong type
        doc["actor"]["reason"] = rng.choice([None, 7, ["why"]])
    doc["facts"] = _facts(rng, p)
    if rng.random() < 0.4:  # an SLO is configured for the target (issue 16)
        doc["slo"] = _slo(rng)
    if not isinstance(now, datetime):
        doc["now"] = now
    if not shaped and rng.random() < 0.5:  # a field of the wrong type altogether
        field, value = rng.choice([("stats", None), ("stats", []), ("plan", {"steps": None}),
                                   ("namespaces", "llm"), ("approval", None),
                                   ("target", None), ("action", 42), ("self_namespace", None)])
        doc[field] = value
    return doc


# Operator data (merged over data.json by the product's own data-file path):
# what the deployed data leaves empty, so that every deny rule can fire.
OPERATOR = {"remediation_config": {
    "approvers": ["alice", "bob"],
    "protected_nodes": ["gpu-node-0", "ctrl-1"],
    "force_dry_run": True,
    "consent": {"delete_local_data": True},
    "freezes": [
        {"name": "year-end", "start": "2026-12-20T00:00:00Z", "end": "2027-01-02T00:00:00+01:00"},
        {"start": "2026-11-01T09:00:00.5Z", "end": "2026-11-01T09:30:00Z"},
    ],
    "maintenance_windows": [
        {"start": "2026-11-01T02:00:00Z", "end": "2026-11-01T04:00:00Z"},
        {"start": "2026-11-07T22:00:00-05:00", "end": "2026-11-08T06:00:00-05:00"},
    ],
    "agents": {"forbidden_actions": ["uncordon"], "max_per_client_per_window": 3},
    "actions": {"rollout-restart": {"approval": True},
                "uncordon": {"only_in_maintenance_window": True},
                "scale-out": {"approval": True, "only_in_maintenance_window": True}},
}}
# Freezes and windows whose bounds are not times (each must deny everything,
# the same way in both engines), beside a good one.
MALFORMED = {"remediation_config": {
    "protected_nodes": ["gpu-node-1"],
    "freezes": [
        {"name": "month-13", "start": "2026-13-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
        {"name": "feb-30", "start": "2026-02-30T00:00:00Z", "end": "2026-03-02T00:00:00Z"},
        {"name": "apr-31", "start": "2026-04-31T00:00:00Z", "end": "2026-05-02T00:00:00Z"},
        {"name": "leap-2028", "start": "2028-02-29T00:00:00Z", "end": "2028-03-01T00:00:00Z"},
        {"name": "lower-case", "start": "2026-11-01t00:00:00z", "end": "2026-11-02T00:00:00Z"},
        {"name": "far-future", "start": "2300-01-01T00:00:00Z", "end": "2301-01-01T00:00:00Z"},
        {"name": "far-past", "start": "1600-01-01T00:00:00Z", "end": "1601-01-01T00:00:00Z"},
        {"name": "epoch-number", "start": 1761955200, "end": "2026-11-02T00:00:00Z"},
        {"name": "no-end", "start": "2026-11-01T00:00:00Z"},
        {"start": "2026-11-01T00:00:00", "end": "2026-11-03T00:00:00Z"},
    ],
    "maintenance_windows": [{"start": "2026-02-29T00:00:00Z", "end": "2030-01-01T00:00:00Z"}],
    "actions": {"uncordon": {"only_in_maintenance_window": True}},
}}
PROFILES = [("deployed", None, 1500), ("operator", OPERATOR, 1200), ("malformed", MALFORMED, 300)]
SEED = 20261201


def test_embedded_and_real_opa_decide_identically(real_opa, tmp_path):
    """3,000 generated inputs under three data profiles: the embedded engine and
    the real OPA server (through the product's adapter, one kept-alive
    connection) give the very same decision document, and between them every
    deny rule of the policy fired."""
    rng = random.Random(SEED)
    started = time.monotonic()
    seen: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    differences: list[str] = []
    total = 0
    server = adapter(real_opa.url, opa_timeout=10, opa_retries=0)
    try:
        for profile, overlay, count in PROFILES:
            data_file = ""
            if overlay is not None:
                data_file = str(tmp_path / f"{profile}.json")
                Path(data_file).write_text(json.dumps(overlay))
            _, merged = load_policy_sources(POLICY_DIR, data_file)
            httpx.put(f"{real_opa.url}/v1/data/remediation_config",
                      json=merged["remediation_config"], timeout=10).raise_for_status()
            try:
                local = embedded(data_file)
            except InvalidInput as exc:  # OPA serves this data: a difference too
                differences.append(f"[{profile}] the embedded engine refuses the data: {exc}")
                continue
            try:
                for _ in range(count):
                    inp = generate(rng)
                    a = local.evaluate(inp)
                    b = {k: v for k, v in server.evaluate(inp).items() if k != "decision_id"}
                    total += 1
                    if a != b or decision_from_document(a) != decision_from_document(b):
                        differences.append(f"[{profile}] input={json.dumps(inp)}\n"
                                           f"  embedded={a}\n  real OPA={b}")
                    if profile == "malformed":  # a freeze that is not a time holds everything
                        assert b.get("allow") is False, (inp, b)
                    for rule in rules_of(b, inp):
                        seen[rule] += 1
                    for flag in ("needs_approval", "dry_run"):
                        flags[flag] += b.get(flag) is True
            finally:
                local.close()
    finally:
        server.close()
        httpx.put(f"{real_opa.url}/v1/data/remediation_config",
                  json=DEFAULT_DATA["remediation_config"], timeout=10).raise_for_status()
    elapsed = time.monotonic() - started
    print(f"differential: {total} inputs in {elapsed:.1f} s, seed {SEED}; rules fired: "
          + ", ".join(f"{r}={n}" for r, n in sorted(seen.items())) + f"; {dict(flags)}")
    assert not differences, (f"{len(differences)} of {total} decisions differ:\n"
                             + "\n".join(differences[:8]))
    assert not [r for r in seen if r.startswith("UNKNOWN")], seen
    expected = {r for r, _ in RULES if r != "node-off-limits"} | {
        "node-off-limits (step)", "node-off-limits (params.node)", "allowed"}
    assert expected <= set(seen), f"never fired: {sorted(expected - set(seen))}"
    assert flags["needs_approval"] and flags["dry_run"]
    assert total >= 1000 and elapsed < 60


# -- faults against the real server ---------------------------------------------------

def test_decision_id_from_a_real_server_is_kept(own_opa):
    d = decide(adapter(own_opa.url), DECISIONS[0][0], SIGNAL, actor="t", via="trigger",
               cluster="", self_namespace="remediation", dry_run=False, stats={}, now=NOW,
               facts=healthy_facts(DECISIONS[0][0]))
    assert d.allow and re.fullmatch(r"[0-9a-f-]{36}", d.decision_id)


def test_stopped_server_is_unavailable(own_opa):
    url = own_opa.url
    own_opa.stop()
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable, match="unreachable: ConnectionError"):
        adapter(url, opa_retries=1).evaluate(inputs(DECISIONS[0][0]))
    assert time.monotonic() - started < 5


def test_paused_server_times_out_as_unavailable(own_opa):
    """SIGSTOP: the kernel still accepts the connection, OPA never answers:
    the client's timeout ends the wait, then "no action, retry"."""
    engine = adapter(own_opa.url, opa_timeout=0.3, opa_retries=1)
    assert engine.evaluate(inputs(DECISIONS[0][0]))["allow"] is True  # connection open
    own_opa.pause()
    try:
        started = time.monotonic()
        with pytest.raises(DependencyUnavailable, match="unreachable: (Read|Connect)?Timeout"):
            engine.evaluate(inputs(DECISIONS[0][0]))
        assert time.monotonic() - started < 3
    finally:
        own_opa.resume()
    assert engine.evaluate(inputs(DECISIONS[0][0]))["allow"] is True  # and back


@pytest.mark.parametrize("fault", ["paused", "stopped"])
def test_end_to_end_real_opa_fault_means_no_action_and_a_retry(fleet, make_settings, serve_app,
                                                               own_opa, fault):
    """The alert that would restart the engine, while OPA is paused or down:
    503 (the sender redelivers) and the Deployment untouched; once OPA is
    back the redelivery applies."""
    from remediation.cli import demo_dir

    from tests.plugins.app import BEARER

    doc = json.loads((demo_dir() / "events" / "01-vllm-hung.json").read_text())
    opa = own_opa
    if fault == "paused":
        opa.pause()
    else:
        opa.stop()
    app = serve_app(make_settings(policy=PolicySettings(opa_url=opa.url, opa_retries=0,
                                                        opa_timeout=0.5)))
    auth = {"Authorization": f"Bearer {BEARER}"}
    resp = app.post("/webhooks/alertmanager", json=doc, headers=auth)
    assert resp.status_code == 503, resp.text
    assert resp.headers.get("Retry-After")
    dep = fleet.get("deployments", "llm-serving", "vllm-llama-7b")
    assert "kubectl.kubernetes.io/restartedAt" not in (
        dep["spec"]["template"]["metadata"].get("annotations") or {})
    if fault == "paused":
        opa.resume()
    else:  # the same port again: the app's OPA_URL still points at it
        opa.start(port=opa.port)
    resp = app.post("/webhooks/alertmanager", json=doc, headers=auth)
    assert resp.status_code == 200, resp.text
    assert resp.json()["outcomes"][0]["status"] == "applied"


# -- the stand-in answers as the real server does ------------------------------------

RESTART = {"action": "rollout-restart", "target": {"kind": "Deployment", "namespace": "llm",
                                                   "name": "v"},
           "plan": {"steps": [{"verb": "patch", "kind": "Deployment", "namespace": "llm",
                               "name": "v"}]},
           "namespaces": ["llm"], "now": "2026-11-01T10:00:00Z"}
RAW_REQUESTS = [  # (method, path, body): what a client of OPA's REST API may send
    ("POST", "/v1/data/remediation/decision", json.dumps({"input": RESTART})),
    ("POST", "/v1/data/remediation/decision?metrics=false", json.dumps({"input": RESTART})),
    ("POST", "/v1/data/remediation/allow", json.dumps({"input": RESTART})),
    ("POST", "/v1/data/remediation/deny", json.dumps({"input": {}})),  # a set
    ("POST", "/v1/data/remediation/nope", json.dumps({"input": RESTART})),
    ("POST", "/v1/data/nope/decision", json.dumps({"input": RESTART})),
    ("POST", "/v1/data/remediation/decision", json.dumps({})),  # no input: a warning
    ("POST", "/v1/data/remediation/decision", json.dumps({"input": None})),
    ("POST", "/v1/data/remediation/decision", ""),
    ("POST", "/v1/data/remediation/decision", json.dumps({"input": [1]})),
    ("POST", "/v1/data/remediation/decision", "not json"),
    ("POST", "/v1/data/remediation/decision", "[1, 2]"),
    ("POST", "/v1/data/remediation_config/limits", json.dumps({"input": {}})),  # plain data
    ("GET", "/v1/data/remediation_config/limits", None),
    ("GET", "/health", None),
    ("POST", "/v1/nothing", json.dumps({"input": {}})),
    ("PUT", "/v1/policies/probe", "package probe\n\nx := 1\n"),
    ("POST", "/v1/data/probe/x", json.dumps({"input": {}})),
    ("PUT", "/v1/policies/broken", "package broken\n\nx := \n"),
    ("POST", "/v1/data/remediation/decision", json.dumps({"input": RESTART})),  # still there
]


def _answer(url: str, method: str, path: str, body: str | None) -> tuple[int, Any]:
    ctype = "text/plain" if method == "PUT" else "application/json"
    resp = httpx.request(method, url + path, content=body, headers={"Content-Type": ctype},
                         timeout=10)
    try:
        doc = resp.json()
    except ValueError:
        return resp.status_code, resp.text
    if isinstance(doc, dict) and "code" in doc:  # an error: the parsers' own words differ
        doc = {**doc, "message": str(doc.get("message")).split(":")[0],
               "errors": sorted({e.get("code") for e in doc.get("errors") or []})}
    return resp.status_code, doc


def test_the_stand_in_answers_raw_requests_as_the_real_opa(real_opa, opa_server):
    """Every request in RAW_REQUESTS, in order, to the real OPA and to the
    stand-in (tests/plugins/opa.py): the same status and document."""
    try:
        for method, path, body in RAW_REQUESTS:
            real = _answer(real_opa.url, method, path, body)
            stand_in = _answer(opa_server.url, method, path, body)
            assert stand_in == real, f"{method} {path} {body!r}"
    finally:
        httpx.delete(f"{real_opa.url}/v1/policies/probe", timeout=10)
