"""Watching the remediator itself (issue 14, items 2 and 3): the PodMonitor
and its NetworkPolicy, the self-alerts (plain rules file and PrometheusRule
objects, ``promtool check rules`` and the ``promtool test rules`` cases in
tests/rules/self.test.yaml), each naming only metrics the app exports.

``python -m tests.test_self_monitoring`` prints prometheusrule-self.yaml from
the plain file (regenerate it after an edit).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prometheus_tools import tool

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "eventing" / "components" / "monitoring"
SELF_RULES = MONITORING / "inference-remediation-self.rules.yaml"
SELF_OPERATOR = MONITORING / "prometheusrule-self.yaml"
SELF_UNIT = ROOT / "tests" / "rules" / "self.test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
SCHEMAS = ROOT.parent / "shared" / "schemas"

#: the Knative Services whose pods serve GET /metrics (eventing/base)
SCRAPED = {"restart-engine", "drain-gpu-node", "rebalance-gpu-pods", "scale-engine",
           "dead-letter", "webhook-adapter"}


def self_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(SELF_RULES.read_text(encoding="utf-8"))["groups"]


def self_alerts() -> list[dict[str, Any]]:
    return [r for g in self_groups() for r in g["rules"] if "alert" in r]


def render_self_operator_file() -> str:
    """prometheusrule-self.yaml as generated from the plain file."""
    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: Any, data: str) -> Any:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data,
                                       style="|" if "\n" in data else None)

    Dumper.add_representer(str, text)
    head = ("# PrometheusRule objects (Prometheus Operator) with the same groups as the\n"
            "# plain rules file inference-remediation-self.rules.yaml beside this file\n"
            "# (tests/test_self_monitoring.py checks they are equal). Regenerate from the\n"
            "# plain file after an edit:  python -m tests.test_self_monitoring\n")
    docs = [{"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
             "metadata": {"name": g["name"],
                          "labels": {"app.kubernetes.io/part-of": "inference-remediation",
                                     "app.kubernetes.io/component": "self-monitoring"}},
             "spec": {"groups": [g]}} for g in self_groups()]
    return head + yaml.dump_all(docs, Dumper=Dumper, sort_keys=False, width=100,
                                explicit_start=True)


def exported_names() -> set[str]:
    """Every series name the app can export: the registry's families with
    their samples' suffixes, and the gauges read at scrape time."""
    from remediation import metrics

    names = {s.name for family in metrics.REGISTRY.collect() for s in family.samples}
    for family in metrics.REGISTRY.collect():
        if family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"}
        elif family.type == "counter":
            names.add(f"{family.name}_total")
    state = metrics.State(gpu_nodes=1, gpu_nodes_cordoned_by_us=0,
                          gpu_nodes_cordoned_by_others=0, gpu_nodes_cordon_limit=0,
                          pending_approvals=0, oldest_pending_approval_seconds=0.0,
                          dead_letters=0)
    text = metrics.exposition(lambda: state, environ={})[0].decode()
    names |= set(re.findall(r"^(remediation_\w+)", text, re.MULTILINE))
    return names


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


# -- the self-alerts ----------------------------------------------------------------

def test_promtool_checks_the_self_rules() -> None:
    proc = promtool("check", "rules", str(SELF_RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(self_alerts())} rules found" in proc.stdout


def test_promtool_unit_tests_of_the_self_rules_pass() -> None:
    proc = promtool("test", "rules", str(SELF_UNIT), cwd=SELF_UNIT.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_self_alert_is_tested_firing_and_quiet() -> None:
    tested: dict[str, set[str]] = {}
    for case in yaml.safe_load(SELF_UNIT.read_text(encoding="utf-8"))["tests"]:
        for check in case.get("alert_rule_test", []):
            tested.setdefault(check["alertname"], set()).add(
                "fires" if check.get("exp_alerts") else "quiet")
    for rule in self_alerts():
        assert tested.get(rule["alert"]) == {"fires", "quiet"}, rule["alert"]


def test_the_issue_asks_for_each_of_these_self_alerts() -> None:
    assert {"RemediationVerificationFailing", "RemediationCircuitBreakerAtLimit",
            "RemediationCircuitBreakerNearLimit", "RemediationApprovalWaiting",
            "RemediationDeadLettersGrowing", "RemediationNoOutcomes",
            "RemediationDependencyErrors", "RemediationSlowDecisions"} == \
        {r["alert"] for r in self_alerts()}


def test_self_alerts_have_a_runbook_a_severity_and_act_on_nothing() -> None:
    anchors = {re.sub(r"[^a-z0-9]+", "", line[3:].lower())
               for line in RUNBOOKS.read_text(encoding="utf-8").splitlines()
               if line.startswith("## ")}
    for rule in self_alerts():
        labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
        assert labels.get("severity") in ("critical", "warning"), rule["alert"]
        assert "remediation" not in labels, f"{rule['alert']}: a human acts on it"
        url = annotations.get("runbook_url", "")
        assert url.startswith("https://") and "docs/runbooks.md#" in url, rule["alert"]
        assert url.split("#", 1)[1] in anchors, f"{rule['alert']}: no runbook section {url}"
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]


def test_self_alerts_name_only_metrics_the_app_exports() -> None:
    exported = exported_names()
    for rule in self_alerts():
        for name in re.findall(r"\b(remediation_\w+)", rule["expr"]):
            assert name in exported, f"{rule['alert']}: {name} is not exported"


def test_the_prometheusrules_hold_the_plain_files_groups() -> None:
    docs = [d for d in yaml.safe_load_all(SELF_OPERATOR.read_text(encoding="utf-8")) if d]
    assert [g for d in docs for g in d["spec"]["groups"]] == self_groups()
    assert SELF_OPERATOR.read_text(encoding="utf-8") == render_self_operator_file(), \
        "prometheusrule-self.yaml is stale: python -m tests.test_self_monitoring > " \
        "eventing/components/monitoring/prometheusrule-self.yaml"


# -- the component: scraping, the rules, the dashboard --------------------------------

def render_component() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found: component rendering not checked")
    proc = subprocess.run([kubectl, "kustomize", str(MONITORING)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _schema(name: str) -> Any:
    from tests.test_manifests import _structural_to_jsonschema

    crd_file = SCHEMAS / name
    if not crd_file.exists():
        pytest.skip(f"{crd_file} not found")
    crd = next(d for d in yaml.safe_load_all(crd_file.read_text()) if d)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return _structural_to_jsonschema(version["schema"]["openAPIV3Schema"])


def test_the_component_scrapes_every_function_and_lets_prometheus_in() -> None:
    import jsonschema

    from tests.test_manifests import _schema_errors

    docs = render_component()
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    assert len(monitors) == 1
    monitor = monitors[0]
    assert _schema_errors(jsonschema.Draft7Validator, _schema("monitoring-podmonitors.yaml"),
                          monitor) == []
    assert monitor["metadata"]["labels"]["app.kubernetes.io/part-of"] == "inference-remediation"
    (expr,) = monitor["spec"]["selector"]["matchExpressions"]
    assert expr["key"] == "serving.knative.dev/service" and expr["operator"] == "In"
    assert set(expr["values"]) == SCRAPED
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    # Knative names the revision pod's serving port user-port
    assert endpoint["port"] == "user-port" and endpoint["path"] == "/metrics"

    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    (sel,) = policy["spec"]["podSelector"]["matchExpressions"]
    assert set(sel["values"]) == SCRAPED
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    namespaces = {v for peer in rule["from"]
                  for e in peer["namespaceSelector"]["matchExpressions"] for v in e["values"]}
    assert {"monitoring", "openshift-monitoring"} <= namespaces


def test_the_scraped_port_is_the_port_every_function_serves() -> None:
    """Each Knative Service of the base serves 8080 as its one port (what
    Knative calls user-port in the pod), and the PodMonitor selects all."""
    from tests.test_manifests import _container, ksvcs, render

    services = ksvcs(render("base"))
    assert SCRAPED <= set(services)
    for name in SCRAPED:
        ports = _container(services[name]).get("ports") or [{"containerPort": 8080}]
        assert [p["containerPort"] for p in ports] == [8080], name


def test_the_component_ships_both_rule_sets_and_the_dashboard() -> None:
    import json

    import jsonschema

    from tests.test_alert_rules import plain_groups
    from tests.test_manifests import _schema_errors

    docs = render_component()
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    by_component: dict[str, list[Any]] = {}
    for d in rules:
        by_component.setdefault(d["metadata"]["labels"]["app.kubernetes.io/component"],
                                []).extend(d["spec"]["groups"])

    def key(g: dict) -> str:
        return str(g["name"])

    assert sorted(by_component["detection-rules"], key=key) == sorted(plain_groups(), key=key)
    assert sorted(by_component["self-monitoring"], key=key) == sorted(self_groups(), key=key)
    schema = _schema("monitoring-prometheusrules.yaml")
    for d in rules:
        assert _schema_errors(jsonschema.Draft7Validator, schema, d) == []
    (dashboard,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["grafana-dashboard.json"]) == json.loads(
        (MONITORING / "grafana-dashboard.json").read_text(encoding="utf-8"))


if __name__ == "__main__":
    sys.stdout.write(render_self_operator_file())
