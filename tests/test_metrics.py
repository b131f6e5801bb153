"""``GET /metrics`` (issue 14, item 1): what the running app exported after
real remediations through the HTTP app against the Kubernetes API emulator,
read back from the scrape (prometheus_client's own parser) and checked by
``promtool check metrics``; the multiprocess mode across real processes;
exact counts under concurrent requests."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from remediation import metrics
from remediation.settings import LedgerSettings, PolicySettings, VerifySettings

from tests.prometheus_tools import tool
from tests.scrape import scrape, total, value
from tests.test_app_e2e import AUTH, payload
from tests.test_vault_e2e import guarded  # noqa: F401 - the fixture: only Vault's tokens write

ROOT = Path(__file__).resolve().parents[1]


def fresh(name: str, *, minutes_ago: float = 2.0, fingerprint: str = "") -> dict[str, Any]:
    """A bundled Alertmanager payload whose alerts started ``minutes_ago``."""
    doc = copy.deepcopy(payload(name))
    starts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - minutes_ago * 60))
    for alert in doc["alerts"]:
        alert["startsAt"] = starts
        if fingerprint:
            alert["fingerprint"] = fingerprint
    return doc


def metrics_settings(make_settings: Any, tmp_path: Path) -> Any:
    """scale-out waits for a human here, so one approval is pending; the
    circuit breaker lets 3 of the fleet's 7 GPU nodes be cordoned (the
    demo fleet has 2 already), so the drain is the third."""
    data = {"remediation_config": {"actions": {"scale-out": {"approval": True}},
                                   "limits": {"max_cordoned_gpu_nodes_percent": 50}}}
    policy = tmp_path / "metrics-policy.yaml"
    policy.write_text(yaml.safe_dump(data))
    return make_settings(policy=PolicySettings(data_file=str(policy)),
                         ledger=LedgerSettings(path=str(tmp_path / "ledger.sqlite")),
                         verify=VerifySettings(deadline=5.0, interval=0.05))


def exercise(app: Any, fleet: Any) -> dict[str, list[str]]:
    """Real remediations of every kind the dashboard and alerts look at:
    applied and verified (a restart, a drain), a duplicate, a denial, one
    waiting for approval, a Kubernetes 503 (retry), rejected input, a
    truncated notification. Returns the statuses answered, by payload."""
    answered: dict[str, list[str]] = {}

    def send(name: str, doc: Any, **kw: Any) -> None:
        resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH, **kw)
        body = resp.json()
        answered[name] = [o["status"] for o in body.get("outcomes", [])] or [body.get("error")]

    fleet.fail(status=503, times=1, method="PATCH")
    send("api-down", fresh("01-vllm-hung"))  # the redelivery then acts
    send("restart", fresh("01-vllm-hung"))
    send("resent", fresh("01-vllm-hung"))
    send("protected", fresh("04-vllm-hung-protected-namespace"))
    send("drain", fresh("10-dcgm-xid79-fell-off-bus"))
    send("approval", fresh("17-vllm-kv-cache-saturated"))
    bad = fresh("01-vllm-hung", fingerprint="0badbadbadbadbad")
    bad["alerts"][0]["labels"]["pod"] = "Not_A/Valid name"
    bad["truncatedAlerts"] = 7
    send("bad-and-truncated", bad)
    answered["not-json"] = [str(app.post("/webhooks/alertmanager", content=b"{nope",
                                         headers={**AUTH, "Content-Type": "application/json"}
                                         ).status_code)]
    answered["no-auth"] = [str(app.post("/webhooks/alertmanager", json=bad).status_code)]
    return answered


def delta(after: str, before: str, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def test_a_scrape_after_real_remediations_counts_every_decision(fleet, make_settings, serve_app,
                                                                tmp_path):
    app = serve_app(metrics_settings(make_settings, tmp_path))
    before = scrape(app)
    answered = exercise(app, fleet)
    after = scrape(app)

    assert answered["restart"] == ["applied"] and answered["resent"] == ["duplicate"]
    assert answered["protected"] == ["denied"] and answered["drain"] == ["applied"]
    assert answered["approval"] == ["pending"] and answered["api-down"] == ["retry"]
    assert answered["not-json"] == ["400"] and answered["no-auth"] == ["401"]

    out = "remediation_outcomes_total"
    assert delta(after, before, out, function="restart-engine", action="rollout-restart",
                 status="applied") == 1
    assert delta(after, before, out, function="drain-gpu-node", action="mark-reboot",
                 status="applied") == 1
    assert delta(after, before, out, function="restart-engine", status="duplicate") == 1
    assert delta(after, before, out, function="restart-engine", status="denied") == 1
    assert delta(after, before, out, function="scale-engine", action="scale-out",
                 status="pending") == 1
    assert delta(after, before, out, status="retry") == 1
    assert delta(after, before, out, function="none", action="none", status="rejected") == 1

    decisions = "remediation_policy_decisions_total"
    assert delta(after, before, decisions, engine="rego", result="allow") >= 2
    assert delta(after, before, decisions, engine="rego", result="deny") == 1
    assert delta(after, before, decisions, engine="rego", result="needs_approval") == 1
    assert delta(after, before, "remediation_policy_denials_total",
                 rule="protected-namespace") == 1
    assert delta(after, before, "remediation_policy_decision_duration_seconds_count",
                 engine="rego") >= 4

    claims = "remediation_ledger_claims_total"
    assert delta(after, before, claims, result="won") >= 4
    assert delta(after, before, "remediation_ledger_operation_duration_seconds_count",
                 operation="claim") >= 4

    for fn in ("restart-engine", "drain-gpu-node"):
        assert delta(after, before, "remediation_time_to_applied_seconds_count", function=fn) == 1
        assert delta(after, before, "remediation_verifications_total", function=fn,
                     result="succeeded") == 1
        assert delta(after, before, "remediation_time_to_verified_seconds_count",
                     function=fn) == 1
    # the alerts started two minutes ago: applied between 1 and 10 minutes after
    assert delta(after, before, "remediation_time_to_applied_seconds_bucket",
                 function="restart-engine", le="60.0") == 0
    assert delta(after, before, "remediation_time_to_applied_seconds_bucket",
                 function="restart-engine", le="600.0") == 1

    assert delta(after, before, "remediation_dependency_request_duration_seconds_count",
                 system="kubernetes") > 10
    assert delta(after, before, "remediation_dependency_errors_total", system="kubernetes",
                 code="503") == 1

    rejected = "remediation_input_rejected_total"
    assert delta(after, before, rejected, reason="invalid-alert") == 1
    assert delta(after, before, rejected, reason="invalid-alertmanager-payload") == 1
    assert delta(after, before, rejected, reason="unauthorized") == 1
    assert delta(after, before, "remediation_alertmanager_truncated_alerts_total") == 7
    assert delta(after, before, "remediation_alertmanager_truncated_notifications_total") == 1

    # gauges: read at scrape time from the emulator's nodes and the ledger
    nodes = [n for n in fleet.list("nodes") if int(
        ((n.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu") or 0) > 0]
    cordoned = [n for n in nodes if (n.get("spec") or {}).get("unschedulable")]
    ours = [n for n in cordoned if "inferenceremediation.io/cordoned-by"
            in ((n["metadata"].get("annotations")) or {})]
    assert "gpu-node-5" in {n["metadata"]["name"] for n in ours}
    assert value(after, "remediation_gpu_nodes") == len(nodes)
    assert value(after, "remediation_gpu_nodes_cordoned", by="remediation") == len(ours)
    assert value(after, "remediation_gpu_nodes_cordoned", by="other") == len(cordoned) - len(ours)
    assert value(after, "remediation_gpu_nodes_cordon_limit") == len(nodes) * 50 // 100
    assert value(after, "remediation_pending_approvals") == 1
    assert 0 <= value(after, "remediation_oldest_pending_approval_age_seconds") < 300
    assert total(after, "remediation_build_info") == 1


def test_promtool_check_metrics_finds_nothing_to_fix(fleet, make_settings, serve_app, tmp_path):
    app = serve_app(metrics_settings(make_settings, tmp_path))
    exercise(app, fleet)
    text = scrape(app)
    proc = subprocess.run([tool("promtool"), "check", "metrics"], input=text, text=True, check=False,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr


def test_no_label_carries_an_object_name_or_an_event_id(fleet, make_settings, serve_app,
                                                       tmp_path):
    app = serve_app(metrics_settings(make_settings, tmp_path))
    exercise(app, fleet)
    text = scrape(app)
    for forbidden in ("vllm-llama-7b", "gpu-node-5", "llm-serving", "0badbadbadbadbad",
                      "Not_A", "gpu-east"):
        assert forbidden not in text
    allowed = {"function", "action", "status", "engine", "result", "rule", "operation",
               "system", "code", "reason", "by", "le", "version", "python"}
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        if family.name.startswith("remediation_"):
            for sample in family.samples:
                assert set(sample.labels) <= allowed, (sample.name, sample.labels)


def test_the_dead_letter_function_reports_the_letters_it_keeps(make_settings, serve_app,
                                                             tmp_path):
    from dataclasses import replace

    settings = make_settings(functions=("dead-letter",))
    settings = replace(settings, http=replace(settings.http,
                                              dead_letter_store=str(tmp_path / "dl.sqlite")))
    app = serve_app(settings)
    assert value(scrape(app), "remediation_dead_letters") == 0
    for n in range(3):
        resp = app.post("/", headers={"ce-specversion": "1.0", "ce-id": f"lost-{n}",
                                      "ce-source": "/alertmanager/remediation",
                                      "ce-type": "io.inferenceremediation.alert.firing.v1",
                                      "Content-Type": "application/json"}, content=b"{}")
        assert resp.status_code == 202, resp.text
    assert value(scrape(app), "remediation_dead_letters") == 3


def test_concurrent_requests_are_each_counted_once(fleet, make_settings, serve_app, tmp_path):
    app = serve_app(make_settings())
    before = scrape(app)
    errors: list[BaseException] = []

    def refuse(n: int) -> None:
        try:
            for _ in range(n):
                assert app.post("/webhooks/alertmanager", json={}).status_code == 401
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=refuse, args=(25,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert delta(scrape(app), before, "remediation_input_rejected_total",
                 reason="unauthorized") == 200


def test_waitress_threads_count_every_request_once(make_settings):
    """The plain container's server: waitress, several threads, one app."""
    import httpx
    from remediation.app import create_app
    from waitress.server import create_server

    server = create_server(create_app(make_settings()), host="127.0.0.1", port=0, threads=6)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.effective_port}"
    try:
        with httpx.Client(timeout=30) as client:
            before = client.get(url + "/metrics").text
            errors: list[BaseException] = []

            def refuse(n: int) -> None:
                try:
                    with httpx.Client(timeout=30) as own:
                        for _ in range(n):
                            resp = own.post(url + "/webhooks/splunk/wrong", json={})
                            assert resp.status_code == 401
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=refuse, args=(20,)) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors
            after = client.get(url + "/metrics").text
    finally:
        server.close()
        thread.join(timeout=10)
    assert delta(after, before, "remediation_input_rejected_total", reason="unauthorized") == 120


WORKER = """
import sys
sys.path.insert(0, {functions!r})
from remediation import metrics
from remediation.model import Outcome, Status
for _ in range({n}):
    metrics.outcome(Outcome(status=Status.APPLIED, function="restart-engine", event_id="e",
                            event_source="s"))
metrics.input_rejected("unauthorized")
"""


def test_multiprocess_mode_answers_for_every_worker_process(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR, each worker process writes its samples
    there and any process's /metrics answers for all of them."""
    shared = tmp_path / "prometheus-multiproc"
    shared.mkdir()
    env = {**os.environ, metrics.MULTIPROC_ENV: str(shared)}
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", WORKER.format(functions=str(ROOT / "functions"),
                                                            n=n)],
                       env=env, check=True, timeout=120)
    body, content_type = metrics.exposition(None, environ={metrics.MULTIPROC_ENV: str(shared)})
    text = body.decode()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert value(text, "remediation_outcomes_total", function="restart-engine", action="none",
                 status="applied") == 7
    assert value(text, "remediation_input_rejected_total", reason="unauthorized") == 2
    assert total(text, "remediation_build_info") == 1


@pytest.mark.parametrize(("message", "rule"), [
    ("namespace kube-system is protected", "protected-namespace"),
    ("circuit breaker: 3 of 8 GPU nodes would be cordoned (limit 25%)", "circuit-breaker"),
    ("cooldown: vllm already acted on 3 time(s) in the window (limit 3)", "cooldown"),
    ("rate limit: 20 rollout-restart action(s) in the window (limit 20)", "rate-limit"),
    ("cluster-wide rate limit: 50 action(s) in the window (limit 50)", "cluster-rate-limit"),
    ("change freeze holidays until 2027-01-02T00:00:00Z", "change-freeze"),
    ("action cordon-drain may not touch a Secret", "kind-not-allowed"),
    ("action cordon-drain may not delete", "verb-not-allowed"),
    ("node gpu-1 is off limits", "node-off-limits"),
    ("agents may not request cordon-drain", "agent-forbidden-action"),
    ("policy returned no decision (undefined)", "undefined"),
    ("something new in a later policy", "other"),
])
def test_a_denial_is_counted_by_its_rule_never_its_text(message, rule):
    assert metrics.denial_rule(message) == rule
    assert rule in metrics.DENIAL_RULE_NAMES


def test_every_deny_rule_of_the_shipped_policy_has_a_class():
    """Each ``deny`` message of policies/remediation.rego, its format's
    placeholders filled in, maps to a rule (not ``other``)."""
    import re

    rego = (ROOT / "policies" / "remediation.rego").read_text()
    formats = re.findall(r'msg := sprintf\("((?:[^"\\]|\\.)*)"', rego)
    formats += re.findall(r'deny contains "((?:[^"\\]|\\.)*)" if', rego)
    assert len(formats) > 25
    for fmt in formats:
        message = fmt.replace("%v%%", "25%").replace("%v", "x1").replace("%s", "x1")
        message = re.sub(r"\b(x1) (steps|pods|replicas)", r"3 \2", message)
        message = message.replace("plan has x1", "plan has 3").replace("to x1", "to 3")
        assert metrics.denial_rule(json.loads(f'"{message}"')) != "other", fmt


def test_the_readme_table_lists_exactly_the_exported_metrics():
    from tests.test_self_monitoring import exported_names

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Metrics (`GET /metrics`)", 1)[1].split("\n### ", 1)[0]
    listed = set(re.findall(r"^\| `(remediation_\w+)` \|", section, re.MULTILINE))
    families = set()
    for name in exported_names():
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix) and name[:-len(suffix)] + "_count" in exported_names():
                name = name[:-len(suffix)]
        families.add(name)
    assert listed == families


@pytest.mark.usefixtures("guarded")
def test_vault_and_opa_calls_are_timed_and_their_errors_counted(vault_server, opa_server,
                                                                serve_app, make_settings):
    """OPA answers 500 once (the alert is answered 503, nothing done), then
    the redelivery is decided by OPA and acts with a Vault-issued credential."""
    app = serve_app(make_settings(vault=vault_server.settings(), policy=PolicySettings(
        opa_url=opa_server.url, opa_retries=0, opa_timeout=2.0)))
    before = scrape(app)
    opa_server.mode = "error"
    resp = app.post("/webhooks/alertmanager", json=fresh("01-vllm-hung"), headers=AUTH)
    assert resp.status_code == 503
    opa_server.mode = "ok"
    resp = app.post("/webhooks/alertmanager", json=fresh("01-vllm-hung"), headers=AUTH)
    assert resp.json()["outcomes"][0]["status"] == "applied", resp.text
    after = scrape(app)

    timed = "remediation_dependency_request_duration_seconds_count"
    errors = "remediation_dependency_errors_total"
    assert delta(after, before, timed, system="opa") == 2
    assert delta(after, before, errors, system="opa", code="500") == 1
    assert delta(after, before, errors, system="opa") == 1
    # a login, the cluster's KV entry, the credential, its revocation
    assert delta(after, before, timed, system="vault") >= 3
    assert delta(after, before, errors, system="vault") == 0
    decisions = "remediation_policy_decisions_total"
    assert delta(after, before, decisions, engine="opa", result="error") == 1
    assert delta(after, before, decisions, engine="opa", result="allow") == 1
    assert delta(after, before, "remediation_ledger_claims_total", result="won") == 2
