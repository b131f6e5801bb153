"""Routing a user can live with (issue 13, §2): the alert's ``remediation``
label, Alertmanager-style matchers in the routes file (first match wins), and
a routes file with an unknown function or a bad matcher refused at start-up
with its line named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from remediation.cli import main
from remediation.errors import InvalidInput
from remediation.routing import Routes, load_routes, parse_matcher
from remediation.runtime import build_pipeline
from remediation.settings import Settings

from tests.test_app_e2e import AUTH, payload, restarted_at, writes

KNOWN = {"restart-engine", "drain-gpu-node", "rebalance-gpu-pods", "scale-engine"}


@pytest.mark.parametrize("text,labels,expected", [
    ('alertname="VLLMEngineHung"', {"alertname": "VLLMEngineHung"}, True),
    ('alertname="VLLMEngineHung"', {"alertname": "VLLMEngineHungToo"}, False),
    ('namespace!="sandbox"', {"namespace": "prod"}, True),
    ('namespace!="sandbox"', {"namespace": "sandbox"}, False),
    ('namespace!="sandbox"', {}, True),
    ('alertname=~"VLLM.*Hung"', {"alertname": "VLLMEngineHung"}, True),
    ('alertname=~"VLLM"', {"alertname": "VLLMEngineHung"}, False),  # anchored
    ('alertname!~"Watchdog|InfoInhibitor"', {"alertname": "Watchdog"}, False),
    ('alertname!~"Watchdog|InfoInhibitor"', {"alertname": "GPUNodeHot"}, True),
    ("team=ml", {"team": "ml"}, True),
    ('remediation=""', {}, True),
    ('remediation=""', {"remediation": "restart-engine"}, False),
    ('  severity = "critical" ', {"severity": "critical"}, True),
    ('msg="a \\"quoted\\" value"', {"msg": 'a "quoted" value'}, True),
])
def test_matchers_behave_as_alertmanagers(text, labels, expected):
    assert parse_matcher(text).matches(labels) is expected


@pytest.mark.parametrize("text", ["alertname", "=x", 'a=~"("', "a=b,c=d", 'a="unterminated',
                                  "1a=b", ""])
def test_unparsable_matchers_are_refused(text):
    with pytest.raises(InvalidInput, match="cannot parse matcher"):
        parse_matcher(text)


def test_first_matching_rule_wins_then_exact_names():
    routes = Routes.from_mapping({
        "rules": [{"matchers": ['alertname=~".*Hung"', 'namespace="batch"'],
                   "function": "scale-engine"},
                  {"matchers": ['alertname=~".*Hung"'], "function": "restart-engine"}],
        "alerts": {"GPUNodeHot": "rebalance-gpu-pods", "BatchHung": "drain-gpu-node"},
    }).check_functions(KNOWN)
    assert routes.function_for("MyHung", labels={"alertname": "MyHung",
                                                 "namespace": "batch"}) == "scale-engine"
    assert routes.function_for("MyHung", labels={"alertname": "MyHung",
                                                 "namespace": "prod"}) == "restart-engine"
    assert routes.function_for("BatchHung", labels={"alertname": "BatchHung"}) == \
        "restart-engine"  # rules before exact names
    assert routes.function_for("GPUNodeHot", labels={"alertname": "GPUNodeHot"}) == \
        "rebalance-gpu-pods"
    assert routes.function_for("Other", labels={"alertname": "Other"}) == ""
    # the remediation label, when it names a known function, comes first
    assert routes.function_for("Other", labels={"alertname": "Other",
                                                "remediation": "drain-gpu-node"}) == \
        "drain-gpu-node"
    assert routes.function_for("Other", labels={"alertname": "Other",
                                                "remediation": "format-disk"}) == ""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return str(path)


def test_an_unknown_function_is_refused_with_its_line(tmp_path):
    path = _write(tmp_path, "alerts:\n  VLLMEngineHung: restart-engine\n"
                            "  GPUNodeHot: rebalance-gpu-pod\n")
    with pytest.raises(InvalidInput) as exc:
        load_routes(path, known=KNOWN)
    assert f"{path} line 3: alerts.GPUNodeHot names unknown function 'rebalance-gpu-pod'" \
        in str(exc.value)
    path = _write(tmp_path, "rules:\n  - matchers: ['alertname=\"X\"']\n"
                            "    function: restart-engines\n")
    with pytest.raises(InvalidInput, match=r"line 3: rules\[0\] names unknown function"):
        load_routes(path, known=KNOWN)


def test_a_bad_matcher_is_refused_with_its_line(tmp_path):
    path = _write(tmp_path, "rules:\n  - function: restart-engine\n    matchers:\n"
                            "      - 'alertname=~\"VLLM.*\"'\n      - 'namespace=~\"(\"'\n")
    with pytest.raises(InvalidInput) as exc:
        load_routes(path, known=KNOWN)
    assert f"{path} line 5: rules[0].matchers[1]: cannot parse matcher" in str(exc.value)


def test_the_pipeline_refuses_to_start_with_a_bad_routes_file(tmp_path):
    path = _write(tmp_path, "alerts:\n  X: no-such-function\n")
    with pytest.raises(InvalidInput, match="line 2"):
        build_pipeline(Settings(routes_file=path))


def test_remediate_serve_refuses_to_start_with_a_bad_routes_file(tmp_path, monkeypatch, capsys):
    import waitress

    path = _write(tmp_path, "rules:\n  - matchers: ['alertname']\n    function: restart-engine\n")
    monkeypatch.setenv("REMEDIATION_ROUTES_FILE", path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    served: list[object] = []
    monkeypatch.setattr(waitress, "serve", lambda *a, **k: served.append(a))
    assert main(["serve", "--port", "0", "--sweep-every", "0"]) == 2
    assert served == []
    assert "line 2" in capsys.readouterr().err


def test_the_shipped_routes_file_loads_with_every_function_known():
    from remediation.actions.catalogue import CATALOGUE

    routes = load_routes(known=set(CATALOGUE))
    assert routes.functions == frozenset(CATALOGUE)
    assert routes.function_for("SGLangEngineHung") == "restart-engine"


# -- end to end: the label routes an alert nobody listed -------------------------------

def test_an_alert_naming_its_function_in_a_label_is_routed_there(fleet, make_settings,
                                                                 serve_app):
    app = serve_app(make_settings())
    doc = payload("01-vllm-hung")
    alert = doc["alerts"][0]
    alert["labels"]["alertname"] = "TeamXLlamaWedged"  # in no routes file
    alert["labels"]["remediation"] = "restart-engine"
    (outcome,) = app.post("/webhooks/alertmanager", json=doc, headers=AUTH).json()["outcomes"]
    assert outcome["status"] == "applied", outcome
    assert outcome["function"] == "restart-engine"
    assert restarted_at(fleet) is not None


def test_a_label_naming_no_function_is_skipped_with_the_reason(fleet, make_settings,
                                                               serve_app):
    app = serve_app(make_settings())
    doc = payload("01-vllm-hung")
    alert = copy.deepcopy(doc["alerts"][0])
    alert["labels"]["alertname"] = "TeamXLlamaWedged"
    alert["labels"]["remediation"] = "reboot-everything"
    doc["alerts"] = [alert]
    (outcome,) = app.post("/webhooks/alertmanager", json=doc, headers=AUTH).json()["outcomes"]
    assert outcome["status"] == "skipped"
    assert "label remediation='reboot-everything' names no function" in outcome["reasons"][0]
    assert writes(fleet) == []


def test_matcher_rules_route_on_the_live_path(fleet, make_settings, serve_app, tmp_path):
    path = _write(tmp_path, "rules:\n  - matchers: ['alertname=~\"TeamX.*\"', "
                            "'namespace=\"llm-serving\"']\n    function: restart-engine\n")
    app = serve_app(make_settings(routes_file=path))
    doc = payload("01-vllm-hung")
    doc["alerts"][0]["labels"]["alertname"] = "TeamXEngineStuck"
    (outcome,) = app.post("/webhooks/alertmanager", json=doc, headers=AUTH).json()["outcomes"]
    assert outcome["status"] == "applied", outcome
