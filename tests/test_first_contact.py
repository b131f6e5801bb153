"""The eight fixes from first contact with a real Alertmanager (issue 13, §3),
each through the HTTP app against the Kubernetes API emulator, outcomes read
back from the replies, the emulator, the log and the ledger."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediation.cli import default_ledger_path, serve_settings
from remediation.errors import InvalidInput
from remediation.events.alertmanager import max_alerts_for
from remediation.settings import HTTPSettings, LedgerSettings, PolicySettings

from tests.test_app_e2e import AUTH, DEPLOY, NS, payload, restarted_at, writes
from datetime import UTC

START = 1_793_000_000.0  # a fixed epoch for the clocks below (2026-10-26)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def node_patches(emu: Any, name: str) -> list[Any]:
    return [w for w in writes(emu) if w.resource == "nodes" and w.name == name]


def outcome_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records
            if r.name == "remediation.outcome" and r.getMessage().startswith("{")]


# -- 1. one bad alert never blocks its group --------------------------------------

def test_a_bad_alert_is_rejected_alone_and_the_rest_of_its_group_acts(fleet, make_settings,
                                                                      serve_app):
    app = serve_app(make_settings())
    doc = payload("01-vllm-hung")
    bad = copy.deepcopy(doc["alerts"][0])
    bad["labels"]["pod"] = "Not_A/Valid name"
    bad["fingerprint"] = "0badbadbadbadbad"
    doc["alerts"].insert(0, bad)
    resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["received"] == 2
    rejected, applied = body["outcomes"]
    assert rejected["status"] == "rejected"
    assert rejected["reasons"][0].startswith("alerts[0].labels.pod: not a valid")
    assert rejected["event_id"], "the rejected alert is named by its event id"
    assert applied["status"] == "applied"
    assert restarted_at(fleet) is not None
    # Alertmanager re-sends the group at its next group_interval: still 200,
    # the valid alert now a duplicate, the bad one rejected again, no new write
    again = app.post("/webhooks/alertmanager", json=doc, headers=AUTH).json()
    assert [o["status"] for o in again["outcomes"]] == ["rejected", "duplicate"]
    assert len([w for w in writes(fleet) if w.resource == "deployments"]) == 1


def test_a_group_answers_503_only_when_an_alert_needs_a_retry(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    doc = payload("01-vllm-hung")
    bad = copy.deepcopy(doc["alerts"][0])
    bad["labels"]["namespace"] = "../etc"
    doc["alerts"].append(bad)
    fleet.fail(status=503, times=1, method="PATCH")
    resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    assert resp.status_code == 503
    assert resp.headers["Retry-After"]
    resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    assert resp.status_code == 200
    assert [o["status"] for o in resp.json()["outcomes"]] == ["rejected", "applied"]


def test_a_payload_that_is_not_a_group_still_gets_400_and_a_log_line(fleet, make_settings,
                                                                      serve_app, caplog):
    app = serve_app(make_settings())
    with caplog.at_level(logging.WARNING, logger="remediation.app"):
        resp = app.post("/webhooks/alertmanager", json={"version": "3", "alerts": []},
                        headers=AUTH)
    assert resp.status_code == 400
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "remediation.app"
             and r.getMessage().startswith("{")]
    assert {"http_status": 400, "endpoint": "alertmanager",
            "error": "invalid-alertmanager-payload"}.items() <= lines[-1].items()
    assert "version" in lines[-1]["message"]


def test_refusals_never_log_the_splunk_token_in_the_path(fleet, make_settings, serve_app,
                                                         caplog):
    from tests.plugins.app import SPLUNK_TOKEN

    app = serve_app(make_settings())
    with caplog.at_level(logging.DEBUG):
        resp = app.post(f"/webhooks/splunk/{SPLUNK_TOKEN}", content=b"{not json",
                        headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert any(r.name == "remediation.app" and '"http_status":400' in r.getMessage()
               for r in caplog.records)
    assert SPLUNK_TOKEN not in "\n".join(r.getMessage() for r in caplog.records
                                         if r.name.startswith("remediation"))


# -- 3. truncation is visible; the receiver's max_alerts fits the body limit --------

def test_truncated_alerts_are_logged_counted_and_in_the_reply(fleet, make_settings, serve_app,
                                                              caplog):
    from tests.scrape import scrape, value

    app = serve_app(make_settings())
    before = scrape(app)  # the counters are the process's: compare with before
    doc = payload("01-vllm-hung")
    doc["truncatedAlerts"] = 1234
    with caplog.at_level(logging.WARNING, logger="remediation.app"):
        resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    assert resp.status_code == 200
    assert resp.json()["truncated_alerts"] == 1234
    assert any('"truncated_alerts":1234' in r.getMessage() for r in caplog.records)
    after = scrape(app)
    truncated = "remediation_alertmanager_truncated_alerts_total"
    assert value(after, truncated) - value(before, truncated) == 1234
    applied = {"function": "restart-engine", "action": "rollout-restart", "status": "applied"}
    assert (value(after, "remediation_outcomes_total", **applied)
            - value(before, "remediation_outcomes_total", **applied)) == 1


def test_a_group_over_the_body_limit_gets_413_saying_which_max_alerts_fits(fleet,
                                                                           make_settings,
                                                                           serve_app):
    settings = make_settings()
    app = serve_app(settings)
    doc = payload("01-vllm-hung")
    template = doc["alerts"][0]
    doc["alerts"] = [dict(template, fingerprint=f"{i:016x}") for i in range(2000)]
    body = json.dumps(doc).encode()
    assert len(body) > settings.http.max_body_bytes
    resp = app.post("/webhooks/alertmanager", content=body,
                    headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 413
    fits = max_alerts_for(settings.http.max_body_bytes)
    assert f"max_alerts: {fits}" in resp.json()["message"]
    # and that many alerts of this shape do fit
    doc["alerts"] = doc["alerts"][:fits]
    assert len(json.dumps(doc).encode()) <= settings.http.max_body_bytes
    assert writes(fleet) == []


def test_the_shipped_receiver_fits_the_default_body_limit() -> None:
    example = Path(__file__).resolve().parents[1] / "eventing/examples/alertmanager-receiver.yaml"
    hook = yaml.safe_load(example.read_text())["receivers"][0]["webhook_configs"][0]
    limit = HTTPSettings().max_body_bytes
    assert 0 < hook["max_alerts"] <= max_alerts_for(limit)


# -- 4. denied, skipped, failed: judged again on the next delivery -----------------

def _limits(path: Path, max_restarts: int) -> str:
    path.write_text(yaml.safe_dump({"remediation_config": {
        "actions": {"rollout-restart": {"max_per_window": max_restarts}}}}))
    return str(path)


def test_a_denial_is_judged_again_when_the_alert_comes_back(fleet, make_settings, serve_app,
                                                            tmp_path):
    ledger = LedgerSettings(path=str(tmp_path / "ledger.sqlite"))
    strict = make_settings(ledger=ledger, policy=PolicySettings(
        data_file=_limits(tmp_path / "strict.yaml", 0)))
    first = serve_app(strict).post("/webhooks/alertmanager", json=payload("01-vllm-hung"),
                                   headers=AUTH).json()["outcomes"][0]
    assert first["status"] == "denied", first
    assert any("rate limit" in r for r in first["reasons"])
    again = serve_app(strict).post("/webhooks/alertmanager", json=payload("01-vllm-hung"),
                                   headers=AUTH).json()["outcomes"][0]
    assert again["status"] == "denied"  # judged again, not "duplicate (denied)"
    assert restarted_at(fleet) is None
    # the operator raises the limit; the still-firing alert's next delivery acts
    raised = make_settings(ledger=ledger, policy=PolicySettings(
        data_file=_limits(tmp_path / "raised.yaml", 10)))
    app = serve_app(raised)
    third = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"),
                     headers=AUTH).json()["outcomes"][0]
    assert third["status"] == "applied", third
    assert restarted_at(fleet) is not None
    # only now is it a duplicate
    fourth = app.post("/webhooks/alertmanager", json=payload("02-vllm-hung-resent"),
                      headers=AUTH).json()["outcomes"][0]
    assert fourth["status"] == "duplicate"
    assert len([w for w in writes(fleet) if w.resource == "deployments"]) == 1
    assert app.pipeline.ledger.history(target=f"Deployment/{NS}/{DEPLOY}")[0].status \
        == "applied"


def test_a_failed_incident_is_judged_again(fleet, make_settings, serve_app):
    from remediation.credentials import AmbientCredentials
    from remediation.errors import ActionFailed

    class Refusing(AmbientCredentials):
        refuse = True

        def lease(self, plan: Any, cluster: str) -> Any:
            if Refusing.refuse:
                raise ActionFailed("permission denied: role not bound")
            return super().lease(plan, cluster)

    app = serve_app(make_settings(), credentials=Refusing(""))
    first = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"),
                     headers=AUTH).json()["outcomes"][0]
    assert first["status"] == "failed"
    Refusing.refuse = False  # the role was fixed
    second = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"),
                      headers=AUTH).json()["outcomes"][0]
    assert second["status"] == "applied", second
    assert restarted_at(fleet) is not None


# -- 5. recovery: ownership first, answered at once, uncordon by the sweep ----------

def _resolved(node: str, ends_at: float) -> dict[str, Any]:
    doc = payload("15-dcgm-xid48-resolved-uncordon")
    alert = doc["alerts"][0]
    alert["labels"]["Hostname"] = node
    alert["endsAt"] = _iso(ends_at)
    return doc


def _iso(ts: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_recovery_of_a_node_we_never_cordoned_is_answered_at_once(fleet, make_settings,
                                                                   serve_app):
    clock = Clock(START)
    app = serve_app(make_settings(), clock=clock)
    for node in ("gpu-node-6", "gpu-node-1"):  # cordoned by someone else; not cordoned
        resp = app.post("/webhooks/alertmanager", json=_resolved(node, START - 10),
                        headers=AUTH)
        assert resp.status_code == 200, resp.text
        (outcome,) = resp.json()["outcomes"]
        assert outcome["status"] == "skipped", outcome
        assert "healthy for" not in " ".join(outcome["reasons"])
    assert writes(fleet) == []
    assert app.pipeline.ledger.due(now=START + 10_000) == []


def test_recovery_is_answered_at_once_and_the_sweep_uncordons_when_due(fleet, make_settings,
                                                                        serve_app, caplog):
    clock = Clock(START)
    app = serve_app(make_settings(), clock=clock)
    resp = app.post("/webhooks/alertmanager", json=_resolved("gpu-node-7", START - 60),
                    headers=AUTH)
    assert resp.status_code == 200  # not 503: Alertmanager has nothing to retry
    (outcome,) = resp.json()["outcomes"]
    assert outcome["status"] == "scheduled"
    assert f"the sweep acts at {_iso(START + 240)}" in outcome["reasons"][-1]
    resend = app.post("/webhooks/alertmanager", json=_resolved("gpu-node-7", START - 60),
                      headers=AUTH).json()["outcomes"][0]
    assert resend["status"] == "duplicate"
    ping = {"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "tick-1",
            "ce-source": "/apis/v1/namespaces/remediation/pingsources/drain-gpu-node-sweep",
            "ce-type": "dev.knative.sources.ping"}
    clock.now = START + 120  # too early: the ping finds nothing due
    early = app.post("/", headers=ping, content=b'{"sweep": "drain-gpu-node"}')
    assert early.status_code == 200 and early.json()["swept"] == 0
    assert fleet.get("nodes", "", "gpu-node-7")["spec"].get("unschedulable") is True
    clock.now = START + 241
    with caplog.at_level(logging.INFO, logger="remediation.outcome"):
        due = app.post("/", headers={**ping, "ce-id": "tick-2"},
                       content=b'{"sweep": "drain-gpu-node"}')
    assert due.status_code == 200
    assert [o["status"] for o in due.json()["outcomes"]] == ["applied"]
    node = fleet.get("nodes", "", "gpu-node-7")
    assert not node["spec"].get("unschedulable")
    assert any(line["via"] == "sweep" and line["status"] == "applied"
               for line in outcome_lines(caplog))
    clock.now = START + 400  # swept once: a later tick does nothing more
    later = app.post("/", headers={**ping, "ce-id": "tick-3"}, content=b"{}")
    assert later.json()["swept"] == 0
    assert len(node_patches(fleet, "gpu-node-7")) == 1


# -- 6. remediate serve keeps its ledger across restarts ----------------------------

def test_serve_uses_a_persistent_ledger_by_default(tmp_path):
    import argparse

    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "REMEDIATION_DRY_RUN": "false"}
    args = argparse.Namespace(ledger="")
    settings = serve_settings(args, env)
    assert settings.ledger.path == default_ledger_path(env)
    assert settings.ledger.path.startswith(str(tmp_path / "state"))
    assert Path(settings.ledger.path).parent.is_dir()
    with pytest.raises(InvalidInput, match="in-memory ledger"):
        serve_settings(argparse.Namespace(ledger="memory"), env)
    dry = serve_settings(argparse.Namespace(ledger="memory"), {**env,
                                                               "REMEDIATION_DRY_RUN": "true"})
    assert dry.ledger.path == ""


def test_a_restarted_server_remembers_what_it_did(fleet, make_settings, serve_app, tmp_path,
                                                  caplog):
    import argparse

    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "REMEDIATION_DRY_RUN": "false"}
    path = serve_settings(argparse.Namespace(ledger=""), env).ledger.path
    settings = make_settings(ledger=LedgerSettings(path=path))
    with caplog.at_level(logging.INFO, logger="remediation.app"):
        first = serve_app(settings)
    started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("serving")]
    described = json.loads(started[-1].split(" ", 2)[2])
    assert described["ledger"] == f"sqlite:{path}"
    assert described["policy"].startswith("embedded-rego")
    assert described["credentials"].startswith("ambient")
    assert described["clusters"].startswith("any")
    assert first.post("/webhooks/alertmanager", json=payload("01-vllm-hung"),
                      headers=AUTH).json()["outcomes"][0]["status"] == "applied"
    second = serve_app(settings)  # the process restarted, same default ledger
    again = second.post("/webhooks/alertmanager", json=payload("02-vllm-hung-resent"),
                        headers=AUTH).json()["outcomes"][0]
    assert again["status"] == "duplicate"
    assert len([w for w in writes(fleet) if w.resource == "deployments"]) == 1


# -- 7. an alert for another cluster is rejected ------------------------------------

def test_an_alert_for_a_cluster_not_served_here_is_rejected(fleet, make_settings, serve_app):
    app = serve_app(make_settings(clusters=("gpu-east",)))
    doc = payload("01-vllm-hung")
    doc["alerts"][0]["labels"]["cluster"] = "gpu-west"
    (outcome,) = app.post("/webhooks/alertmanager", json=doc, headers=AUTH).json()["outcomes"]
    assert outcome["status"] == "rejected"
    assert "cluster 'gpu-west' is not served here" in outcome["reasons"][0]
    assert writes(fleet) == []
    (ours,) = app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"),
                       headers=AUTH).json()["outcomes"]
    assert ours["status"] == "applied"  # its cluster label is gpu-east


def test_the_default_cluster_is_the_allow_list_when_no_list_is_given(make_settings):
    settings = make_settings(cluster="gpu-east")
    assert settings.served_clusters == ("gpu-east",)
    assert make_settings().served_clusters == ()
    assert replace(settings, clusters=("a", "b")).served_clusters == ("a", "b")


# -- 8. every outcome is one log line; optionally every outcome to the sink ---------

def test_every_outcome_is_one_structured_log_line(fleet, make_settings, serve_app, caplog):
    app = serve_app(make_settings())
    doc = payload("01-vllm-hung")
    doc["alerts"][0]["annotations"]["traceparent"] = "ignored"
    with caplog.at_level(logging.INFO, logger="remediation.outcome"):
        app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
        app.post("/webhooks/alertmanager", json=payload("04-vllm-hung-protected-namespace"),
                 headers=AUTH)
        app.post("/webhooks/alertmanager", json=payload("08-unrouted-alert"), headers=AUTH)
    lines = outcome_lines(caplog)
    assert [line["status"] for line in lines] == ["applied", "denied", "skipped"]
    applied = lines[0]
    assert set(applied) >= {"event_id", "alertname", "function", "status", "target", "reasons",
                            "traceparent"}
    assert applied["alertname"] == "VLLMEngineHung"
    assert applied["function"] == "restart-engine"
    assert applied["target"] == f"Deployment/{NS}/{DEPLOY}"
    assert applied["verification"] == "succeeded"
    assert any("protected" in r for r in lines[1]["reasons"])


def test_every_outcome_can_go_to_the_outcome_sink(fleet, make_settings, serve_app, broker):
    settings = make_settings()
    app = serve_app(replace(settings, http=replace(settings.http, outcome_sink=broker.url,
                                                   outcome_sink_all=True)))
    app.post("/webhooks/alertmanager", json=payload("04-vllm-hung-protected-namespace"),
             headers=AUTH)
    app.post("/webhooks/alertmanager", json=payload("08-unrouted-alert"), headers=AUTH)
    statuses = [h.get("ce-remediationstatus") for h in broker.received]
    assert statuses == ["denied", "skipped"]


def test_without_the_option_only_applied_outcomes_reach_the_sink(fleet, make_settings,
                                                                 serve_app, broker):
    settings = make_settings()
    app = serve_app(replace(settings, http=replace(settings.http, outcome_sink=broker.url)))
    app.post("/webhooks/alertmanager", json=payload("04-vllm-hung-protected-namespace"),
             headers=AUTH)
    app.post("/webhooks/alertmanager", json=payload("01-vllm-hung"), headers=AUTH)
    assert [h.get("ce-remediationstatus") for h in broker.received] == ["applied"]


def test_the_start_up_line_names_no_credential(make_settings):
    from remediation.runtime import build_pipeline, close_pipeline, describe
    from remediation.settings import VaultSettings

    settings = make_settings(policy=PolicySettings(opa_url="https://svc:s3cr3t@opa:8181/v1?t=x"),
                             vault=VaultSettings(addr="https://vault:8200"))
    pipeline = build_pipeline(settings, policy=object(), credentials=object())
    try:
        text = json.dumps(describe(pipeline))
    finally:
        close_pipeline(pipeline)
    assert "opa-server:https://opa:8181/v1" in text and "vault:https://vault:8200" in text
    assert "s3cr3t" not in text and "t=x" not in text
