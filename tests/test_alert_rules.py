"""The shipped detection rules (eventing/components/monitoring/).

- ``promtool check rules`` on the plain rules file, and ``promtool test rules``
  on every unit test in tests/rules/ (firing, and not firing for an idle
  engine, an application Xid, a short blip);
- the PrometheusRule objects hold exactly the plain file's groups, render
  with kustomize and are valid against the Prometheus Operator's CRD schema;
- every alert a function acts on names a known function in its
  ``remediation`` label, carries ``severity`` and a ``runbook_url`` to an
  existing section of docs/runbooks.md, and keeps the labels its function
  needs (namespace and pod for engines, the node for GPU faults) in its
  ``by`` clauses.

``python -m tests.test_alert_rules`` prints prometheusrule.yaml from the plain
file (regenerate it after an edit).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prometheus_tools import tool

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "eventing" / "components" / "monitoring"
RULES_FILE = MONITORING / "inference-remediation.rules.yaml"
OPERATOR_FILE = MONITORING / "prometheusrule.yaml"
UNIT_TESTS = sorted((ROOT / "tests" / "rules").glob("*.test.yaml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"

#: labels each function reads to find its target (see the README's label contract)
NEEDS = {"restart-engine": {"namespace", "pod"},
         "scale-engine": {"namespace", "pod"},
         "drain-gpu-node": {"kubernetes_node", "Hostname"},
         "rebalance-gpu-pods": {"kubernetes_node", "Hostname"}}


def plain_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in plain_groups() for r in g["rules"] if "alert" in r]


def operator_documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(OPERATOR_FILE.read_text(encoding="utf-8")) if d]


def render_operator_file() -> str:
    """prometheusrule.yaml as generated from the plain file."""
    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: Any, data: str) -> Any:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data,
                                       style="|" if "\n" in data else None)

    Dumper.add_representer(str, text)
    head = OPERATOR_FILE.read_text(encoding="utf-8").split("---", 1)[0]
    docs = [{"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
             "metadata": {"name": g["name"],
                          "labels": {"app.kubernetes.io/part-of": "inference-remediation",
                                     "app.kubernetes.io/component": "detection-rules"}},
             "spec": {"groups": [g]}} for g in plain_groups()]
    return head + yaml.dump_all(docs, Dumper=Dumper, sort_keys=False, width=100,
                                explicit_start=True)


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


# -- promtool -------------------------------------------------------------------

def test_promtool_checks_the_rules_file() -> None:
    proc = promtool("check", "rules", str(RULES_FILE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len([r for g in plain_groups() for r in g['rules']])} rules found" \
        in proc.stdout


@pytest.mark.parametrize("unit", UNIT_TESTS, ids=[p.stem for p in UNIT_TESTS])
def test_promtool_unit_tests_pass(unit: Path) -> None:
    proc = promtool("test", "rules", str(unit), cwd=unit.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_remediating_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """Each alert is tested firing, and quiet: an empty expectation, or a
    twin in the same input (an idle engine, a blip, an application Xid, a
    steady queue) left out of the exact list of expected alerts."""
    tested: dict[str, set[str]] = {}
    for unit in UNIT_TESTS:
        for case in yaml.safe_load(unit.read_text(encoding="utf-8"))["tests"]:
            subjects = {m.group(2) for s in case["input_series"]
                        for m in re.finditer(r'\b(pod|kubernetes_node|Hostname)="([^"]+)"',
                                             s["series"])}
            for check in case.get("alert_rule_test", []):
                expected = {v for a in check.get("exp_alerts") or []
                            for k, v in a["exp_labels"].items()
                            if k in ("pod", "kubernetes_node", "Hostname")}
                kinds = tested.setdefault(check["alertname"], set())
                if check.get("exp_alerts"):
                    kinds.add("fires")
                if not check.get("exp_alerts") or subjects - expected:
                    kinds.add("quiet")
    for rule in alert_rules():
        assert tested.get(rule["alert"], set()) == {"fires", "quiet"}, \
            (rule["alert"], tested.get(rule["alert"]))


def test_a_broken_expectation_fails_promtool(tmp_path: Path) -> None:
    """The unit tests can fail: an idle engine expected to fire is reported."""
    unit = yaml.safe_load((ROOT / "tests" / "rules" / "engines.test.yaml").read_text())
    unit["rule_files"] = [str(RULES_FILE)]
    case = unit["tests"][0]
    case["alert_rule_test"] = [{"eval_time": "12m", "alertname": "VLLMEngineHung",
                                "exp_alerts": [{"exp_labels": {
                                    "namespace": "llm-serving", "pod": "vllm-idle",
                                    "severity": "critical", "remediation": "restart-engine"}}]}]
    path = tmp_path / "broken.test.yaml"
    path.write_text(yaml.safe_dump(unit))
    proc = promtool("test", "rules", str(path), cwd=tmp_path)
    assert proc.returncode != 0
    assert "vllm-idle" in proc.stdout + proc.stderr


# -- the PrometheusRule objects ---------------------------------------------------

def test_prometheusrules_hold_the_plain_files_groups() -> None:
    docs = operator_documents()
    assert [d["kind"] for d in docs] == ["PrometheusRule"] * len(docs)
    assert [g for d in docs for g in d["spec"]["groups"]] == plain_groups()
    assert OPERATOR_FILE.read_text(encoding="utf-8") == render_operator_file(), \
        "prometheusrule.yaml is stale: python -m tests.test_alert_rules > " \
        "eventing/components/monitoring/prometheusrule.yaml"


def test_the_component_renders_and_matches_the_operator_schema() -> None:
    from tests.test_manifests import SCHEMAS, _schema_errors, _structural_to_jsonschema
    import jsonschema
    import shutil

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found: component rendering not checked")
    proc = subprocess.run([kubectl, "kustomize", str(MONITORING)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "PrometheusRule"
                and d["metadata"]["labels"]["app.kubernetes.io/component"] == "detection-rules"]
    by_name = sorted(plain_groups(), key=lambda g: g["name"])
    assert sorted((g for d in rendered for g in d["spec"]["groups"]),
                  key=lambda g: g["name"]) == by_name
    crd_file = SCHEMAS / "monitoring-prometheusrules.yaml"
    if not crd_file.exists():
        pytest.skip(f"{crd_file} not found")
    crd = next(d for d in yaml.safe_load_all(crd_file.read_text()) if d)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = _structural_to_jsonschema(version["schema"]["openAPIV3Schema"])
    for doc in rendered:
        errors = _schema_errors(jsonschema.Draft7Validator, schema, doc)
        assert errors == [], (doc["metadata"]["name"], errors)
    # and the schema does catch a mistake
    bad = {**rendered[0], "spec": {"groups": [{"name": "x", "rules": [{"alert": "A"}]}]}}
    assert _schema_errors(jsonschema.Draft7Validator, schema, bad)


# -- the label contract -------------------------------------------------------------

def _by_labels(expr: str) -> set[str]:
    found: set[str] = set()
    for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        found |= {label.strip() for label in group.split(",") if label.strip()}
    return found


def test_remediating_alerts_carry_their_functions_labels() -> None:
    from remediation.actions.catalogue import CATALOGUE

    anchors = {re.sub(r"[^a-z0-9]+", "", line[3:].lower())
               for line in RUNBOOKS.read_text(encoding="utf-8").splitlines()
               if line.startswith("## ")}
    acting = 0
    for rule in alert_rules():
        labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
        assert labels.get("severity") in ("critical", "warning", "info"), rule["alert"]
        url = annotations.get("runbook_url", "")
        assert url.startswith("https://") and "docs/runbooks.md#" in url, rule["alert"]
        assert url.split("#", 1)[1] in anchors, f"{rule['alert']}: no runbook section {url}"
        assert annotations.get("summary"), rule["alert"]
        function = labels.get("remediation")
        if function is None:
            assert "absent(" in rule["expr"], f"{rule['alert']}: acts on nothing, says so"
            continue
        acting += 1
        assert function in CATALOGUE, f"{rule['alert']}: unknown function {function}"
        by = _by_labels(rule["expr"])
        if by:  # an aggregation must keep what the function reads
            assert NEEDS[function] & by == NEEDS[function] or (
                function in ("drain-gpu-node", "rebalance-gpu-pods")
                and NEEDS[function] <= by), (rule["alert"], sorted(by))
    assert acting >= 10


def test_every_engine_and_fault_of_the_issue_has_a_rule() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert {"VLLMEngineHung", "SGLangEngineHung", "TGIEngineHung", "TritonServerHung",
            "KServeInferenceServiceHung", "VLLMKVCacheSaturated", "GPUXidError",
            "GPUXidApplicationError", "DCGMXidErrors", "GPUNodeHot"} <= names
    text = RULES_FILE.read_text(encoding="utf-8")
    assert "vllm:kv_cache_usage_perc" in text and "vllm:gpu_cache_usage_perc" not in text
    assert "increase(DCGM_EXP_XID_ERRORS_TOTAL" in text
    for counter in re.findall(r"vllm:\w+", text):
        if counter.endswith(("tokens", "success", "preemptions")):
            pytest.fail(f"{counter}: counters are scraped with _total")


def test_the_readme_documents_the_rules_and_the_receiver_as_shipped() -> None:
    from remediation.events.alertmanager import BYTES_PER_ALERT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Prometheus and Alertmanager", 1)[1].split("\n## ", 1)[0]
    for rule in alert_rules():
        assert f"`{rule['alert']}`" in section, rule["alert"]
        if "remediation" in rule.get("labels", {}):
            row = next(line for line in section.splitlines()
                       if line.startswith(f"| `{rule['alert']}`"))
            assert f"`{rule['labels']['remediation']}`" in row, row
    example = ROOT / "eventing" / "examples" / "alertmanager-receiver.yaml"
    hook = yaml.safe_load(example.read_text())["receivers"][0]["webhook_configs"][0]
    assert f"**`max_alerts: {hook['max_alerts']}`**" in section
    assert f"{BYTES_PER_ALERT / 1024:g} KiB an alert" in section
    for label in ("kubernetes_node", "Hostname", "remediation", "namespace", "pod", "xid"):
        assert f"`{label}`" in section


if __name__ == "__main__":  # pragma: no cover - regenerate prometheusrule.yaml
    sys.stdout.write(render_operator_file())
