"""The SLO file (guard.slo) and its wiring (runtime.build_slo): what a target
maps to, what is refused at start-up, and no configuration meaning no input."""

from __future__ import annotations

from pathlib import Path

import pytest

from remediation.errors import InvalidInput
from remediation.guard.slo import load_slo_config, slo_input
from remediation.model import ObjectRef
from remediation.runtime import build_slo
from remediation.settings import Settings, SLOSettings

SLOTH = {"service": "engine", "match": {"namespace": "llm-*", "name": "vllm-*"},
         "sloth": {"service": "vllm", "slo": "availability"}}
NODES = {"service": "fleet", "match": {"kind": "Node"},
         "queries": {"burn_rate": 'x:burnrate{window}{slo="f"}',
                     "error_budget_remaining": 'x:remaining{slo="f"}'}}


def test_the_first_matching_entry_is_the_targets_slo():
    cfg = load_slo_config({"slos": [SLOTH, NODES]})
    assert cfg.windows == ("5m", "1h", "6h")
    assert cfg.lookup(ObjectRef("Deployment", "llm-serving", "vllm-a")).service == "engine"
    assert cfg.lookup(ObjectRef("Node", "", "gpu-node-1")).service == "fleet"
    assert cfg.lookup(ObjectRef("Deployment", "default", "vllm-a")) is None
    queries = cfg.lookup(ObjectRef("Node", "", "n")).queries(("5m",))
    assert queries == {"burn_rate:5m": 'x:burnrate5m{slo="f"}',
                       "error_budget_remaining": 'x:remaining{slo="f"}'}
    sloth = cfg.lookup(ObjectRef("Deployment", "llm-serving", "vllm-a")).queries(("1h",))
    assert sloth["burn_rate:1h"].startswith(
        'slo:sli_error:ratio_rate1h{sloth_service="vllm",sloth_slo="availability"} / ')
    assert sloth["error_budget_remaining"] == \
        'slo:period_error_budget_remaining:ratio{sloth_service="vllm",sloth_slo="availability"}'


@pytest.mark.parametrize("doc, why", [
    ([], "expected a mapping"),
    ({"slos": {}}, "slos must be a list"),
    ({"slos": [SLOTH], "windows": ["5 minutes"]}, "windows must be a list"),
    ({"slos": [{**SLOTH, "match": {}}]}, "match must map"),
    ({"slos": [{**SLOTH, "match": {"pod": "x"}}]}, "match must map"),
    ({"slos": [{**SLOTH, "queries": NODES["queries"]}]}, "exactly one of sloth or queries"),
    ({"slos": [{**SLOTH, "sloth": {"service": 'a"}', "slo": "b"}}]}, "quotes"),
    ({"slos": [{**NODES, "queries": {"burn_rate": "x", "error_budget_remaining": "y"}}]},
     "must contain {window}"),
    ({"slos": [{"match": {"kind": "Node"}, "sloth": {"service": "a", "slo": "b"}}]},
     "service must be"),
])
def test_a_bad_slo_file_is_refused_naming_what_is_wrong(doc, why):
    with pytest.raises(InvalidInput, match=why.replace("{", r"\{").replace("}", r"\}")):
        load_slo_config(doc)


def test_missing_or_infinite_values_make_the_slo_unavailable():
    cfg = load_slo_config({"slos": [NODES], "windows": ["5m", "1h"]})
    entry = cfg.entries[0]
    full = {"burn_rate:5m": 20.0, "burn_rate:1h": 15.0, "error_budget_remaining": 0.5}
    assert slo_input(entry, cfg.windows, full, source="prometheus")["available"] is True
    assert slo_input(entry, cfg.windows, {**full, "burn_rate:1h": None}, source="p") == {
        "available": False, "service": "fleet", "reason": "no data for burn_rate:1h"}
    assert slo_input(entry, cfg.windows, {**full, "error_budget_remaining": float("nan")},
                     source="p")["reason"] == "no data for error_budget_remaining"


def test_without_both_settings_there_is_no_slo_source(tmp_path: Path):
    path = tmp_path / "slos.yaml"
    path.write_text("slos: []\n")
    assert build_slo(Settings()) is None
    assert build_slo(Settings(slo=SLOSettings(file=str(path)))) is None
    assert build_slo(Settings(slo=SLOSettings(prometheus_url="http://127.0.0.1:9"))) is None
    source = build_slo(Settings(slo=SLOSettings(prometheus_url="http://127.0.0.1:9",
                                                file=str(path))))
    assert source is not None
    try:  # no entry matches: no input at all, and Prometheus is never asked
        assert source.read(ObjectRef("Deployment", "llm", "x"), at=0.0) is None
    finally:
        source.close()


def test_a_bad_slo_file_stops_the_start(tmp_path: Path):
    bad = tmp_path / "slos.yaml"
    bad.write_text("slos: [{service: a}]\n")
    with pytest.raises(InvalidInput, match="match must map"):
        build_slo(Settings(slo=SLOSettings(prometheus_url="http://p", file=str(bad))))
    with pytest.raises(InvalidInput, match="REMEDIATION_SLO_FILE"):
        build_slo(Settings(slo=SLOSettings(prometheus_url="http://p",
                                           file=str(tmp_path / "missing.yaml"))))


def test_settings_read_the_slo_environment():
    s = Settings.from_env({"REMEDIATION_PROMETHEUS_URL": "http://prom:9090",
                           "REMEDIATION_SLO_FILE": "/etc/slos.yaml",
                           "REMEDIATION_PROMETHEUS_TIMEOUT": "0.5",
                           "REMEDIATION_PROMETHEUS_TOKEN": "prom-s3cret-77"})
    assert (s.slo.prometheus_url, s.slo.file, s.slo.timeout, s.slo.cache_seconds) == \
        ("http://prom:9090", "/etc/slos.yaml", 0.5, 30.0)
    assert s.slo.configured and "prom-s3cret-77" not in repr(s)
