"""Human approval, end to end through the HTTP app against the API emulator:
policy asks for a human, the reply is an approval-requested event and nothing
changes; a signed approval event (or ``remediate approve``) releases it once,
before it expires; the policy sees who approved."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediation import cli
from remediation.actions.base import RESTARTED_AT_ANNOTATION
from remediation.cli import demo_dir
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import (JSON_CONTENT_TYPE, SPECVERSION, new_event, to_binary,
                                        validate_attributes)
from remediation.guard.approval import approval_data
from remediation.model import TYPE_APPROVAL_GRANTED, TYPE_APPROVAL_REQUESTED, TYPE_OUTCOME
from remediation.settings import (ApprovalSettings, LedgerSettings, PolicySettings, Secret,
                                  VerifySettings)

NS, DEPLOY = "llm-serving", "vllm-llama-7b"
SECRET = "approval-hmac-key-31f9"


def restarted_at(emu: Any) -> str | None:
    obj = emu.get("deployments", NS, DEPLOY)
    return ((obj["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(
        RESTARTED_AT_ANNOTATION)


def patches(emu: Any) -> list[Any]:
    return [r for r in emu.requests if r.method == "PATCH" and r.resource == "deployments"]


def alert_event() -> Any:
    body = json.loads((demo_dir() / "events" / "01-vllm-hung.json").read_text())
    (event,) = alertmanager_to_events(body, routes=lambda n, _l: "restart-engine")
    return event


#: the expiry of each request for approval seen (key -> expires_at): a signed
#: approval names the request it approves
REQUESTED: dict[str, str] = {}


def approval_event(key: str, approver: str, secret: str = SECRET,
                   overrides: dict[str, Any] | None = None,
                   expires_at: str | None = None) -> Any:
    expires = REQUESTED.get(key, "") if expires_at is None else expires_at
    data = {**approval_data(secret, key, approver, expires), **(overrides or {})}
    attrs = {"specversion": SPECVERSION, "type": TYPE_APPROVAL_GRANTED, "source": "/chatops",
             "id": f"approve-{key[:8]}-{approver}", "datacontenttype": JSON_CONTENT_TYPE}
    return new_event(validate_attributes(attrs), data)


def post(app: Any, event: Any) -> Any:
    headers, body = to_binary(event)
    return app.post("/", headers=headers, content=body)


@pytest.fixture
def approval_settings(make_settings, tmp_path: Path) -> Any:
    def make(approvers: list[str] | None = None, ttl: float = 600.0, **over: Any) -> Any:
        data = {"remediation_config": {"actions": {"rollout-restart": {"approval": True}}}}
        if approvers is not None:
            data["remediation_config"]["approvers"] = approvers
        f = tmp_path / "approval-policy.yaml"
        f.write_text(yaml.safe_dump(data))
        return make_settings(
            policy=PolicySettings(data_file=str(f)),
            ledger=LedgerSettings(path=str(tmp_path / "ledger.sqlite")),
            approval=ApprovalSettings(ttl=ttl, secret=Secret(SECRET)),
            verify=VerifySettings(deadline=5.0, interval=0.05), **over)
    return make


def request_approval(app: Any, fleet: Any) -> str:
    resp = post(app, alert_event())
    assert resp.status_code == 200, resp.text
    assert resp.headers["ce-type"] == TYPE_APPROVAL_REQUESTED
    assert resp.headers["ce-remediationstatus"] == "pending"
    data = resp.json()
    assert data["status"] == "pending"
    assert data["approval"]["approve"] == f"remediate approve {data['approval']['id']}"
    assert restarted_at(fleet) is None and patches(fleet) == []
    REQUESTED[data["approval"]["id"]] = data["approval"]["expires_at"]
    return data["approval"]["id"]


def test_pending_then_signed_approval_applies_once_and_is_verified(fleet, approval_settings,
                                                                   serve_app):
    app = serve_app(approval_settings())
    key = request_approval(app, fleet)

    again = post(app, alert_event())  # a redelivery while it waits does nothing
    assert again.status_code == 200 and again.json()["status"] == "pending"
    assert patches(fleet) == []

    resp = post(app, approval_event(key, "alice"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["ce-type"] == TYPE_OUTCOME
    data = resp.json()
    assert data["status"] == "applied", data
    assert data["approval"] == {"id": key, "approved_by": "alice"}
    assert data["verification"]["result"] == "succeeded"
    assert resp.headers["ce-remediationverification"] == "succeeded"
    assert restarted_at(fleet) is not None and len(patches(fleet)) == 1

    replayed = post(app, approval_event(key, "alice"))  # at-least-once delivery
    assert replayed.status_code == 200 and replayed.json()["status"] == "duplicate"
    assert post(app, alert_event()).json()["status"] == "duplicate"
    assert len(patches(fleet)) == 1
    rec = app.pipeline.ledger.get(key)
    assert (rec.status, rec.approved_by, rec.verification) == (
        "applied", "alice", "succeeded")


@pytest.mark.parametrize("tamper", ["wrong-secret", "other-approver", "other-key", "unsigned"])
def test_unauthenticated_approvals_are_refused_and_change_nothing(fleet, approval_settings,
                                                                  serve_app, tamper):
    app = serve_app(approval_settings())
    key = request_approval(app, fleet)
    event = {
        "wrong-secret": lambda: approval_event(key, "alice", secret="guessed"),
        "other-approver": lambda: approval_event(key, "alice", overrides={"approver": "mallory"}),
        "other-key": lambda: approval_event(key, "alice", overrides={"approval_id": key[:-1] + "0"}),
        "unsigned": lambda: approval_event(key, "alice", overrides={"signature": ""}),
    }[tamper]()
    resp = post(app, event)
    assert resp.status_code == 400, resp.text
    assert "signature" in resp.json()["message"] or "approval" in resp.json()["message"]
    assert patches(fleet) == []
    assert app.pipeline.ledger.get(key).status == "pending"


def test_no_secret_configured_means_approval_events_are_refused(fleet, approval_settings,
                                                               serve_app):
    settings = approval_settings()
    app = serve_app(replace(settings, approval=replace(settings.approval, secret=Secret(""))))
    key = request_approval(app, fleet)
    resp = post(app, approval_event(key, "alice"))
    assert resp.status_code == 400 and "disabled" in resp.json()["message"]
    assert patches(fleet) == []


def test_an_approver_the_policy_does_not_list_is_denied(fleet, approval_settings, serve_app):
    app = serve_app(approval_settings(approvers=["alice"]))
    key = request_approval(app, fleet)
    resp = post(app, approval_event(key, "mallory"))
    assert resp.status_code == 200
    data = resp.json()
    assert data["status"] == "denied" and "mallory is not an approver" in data["reasons"]
    assert patches(fleet) == []


def test_approval_after_expiry_is_rejected(fleet, approval_settings, serve_app):
    now = [1_800_000_000.0]
    app = serve_app(approval_settings(ttl=60.0), clock=lambda: now[0])
    key = request_approval(app, fleet)
    assert [r.key for r in app.pipeline.ledger.pending(now=now[0])] == [key]
    now[0] += 61
    resp = post(app, approval_event(key, "alice"))
    assert resp.status_code == 400 and "expired" in resp.json()["message"]
    assert patches(fleet) == [] and app.pipeline.ledger.pending(now=now[0]) == []


def test_an_approval_survives_an_api_outage(fleet, approval_settings, serve_app):
    app = serve_app(approval_settings())
    key = request_approval(app, fleet)
    fleet.fail(503, times=None, method="PATCH")
    resp = post(app, approval_event(key, "alice"))
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert app.pipeline.ledger.get(key).status == "approved"  # not lost, not done
    fleet.clear_faults()
    resp = post(app, approval_event(key, "alice"))  # Knative redelivers
    assert resp.status_code == 200 and resp.json()["status"] == "applied"
    assert restarted_at(fleet) is not None


def test_remediate_pending_and_approve_from_the_cli(fleet, approval_settings, serve_app,
                                                    kubeconfig, tmp_path, monkeypatch, capsys):
    settings = approval_settings()
    app = serve_app(settings)
    key = request_approval(app, fleet)
    monkeypatch.setenv("REMEDIATION_LEDGER", settings.ledger.path)
    monkeypatch.setenv("REMEDIATION_POLICY_DATA", settings.policy.data_file)
    monkeypatch.setenv("REMEDIATION_DRY_RUN", "false")
    monkeypatch.setenv("REMEDIATION_VERIFY_DEADLINE", "5")
    monkeypatch.setenv("REMEDIATION_VERIFY_INTERVAL", "0.05")
    assert cli.main(["pending", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    listed = json.loads(line)
    assert listed["id"] == key and listed["action"] == "rollout-restart"
    assert listed["target"] == f"Deployment/{NS}/{DEPLOY}"

    monkeypatch.setenv("REMEDIATION_APPROVERS", "alice")
    assert cli.main(["approve", key, "--by", "bob", "--kubeconfig", str(kubeconfig)]) == 2
    assert patches(fleet) == []
    assert cli.main(["approve", key, "--by", "alice", "--kubeconfig", str(kubeconfig),
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["status"] == "applied" and out["approval"]["approved_by"] == "alice"
    assert len(patches(fleet)) == 1
    assert cli.main(["pending", "--json"]) == 0
    assert capsys.readouterr().out == ""


def test_a_webhook_alert_that_needs_approval_sends_the_request_to_the_outcome_sink(
        fleet, approval_settings, serve_app, broker):
    """The webhook path has no reply event: the approval request goes to the
    outcome sink (the Broker, where a notifier subscribes), once, even when
    Alertmanager re-sends."""
    settings = approval_settings()
    app = serve_app(replace(settings, http=replace(settings.http, outcome_sink=broker.url)))
    body = json.loads((demo_dir() / "events" / "01-vllm-hung.json").read_text())
    from tests.plugins.app import BEARER

    for _ in range(2):
        resp = app.post("/webhooks/alertmanager", json=body,
                        headers={"Authorization": f"Bearer {BEARER}"})
        assert resp.status_code == 200 and resp.json()["outcomes"][0]["status"] == "pending"
    (sent,) = broker.received  # the re-send finds it pending: not asked twice
    assert sent["ce-type"] == TYPE_APPROVAL_REQUESTED
    assert sent["ce-remediationstatus"] == "pending"
    data = json.loads(sent["body"])
    assert data["approval"]["approve"].startswith("remediate approve ")
    assert restarted_at(fleet) is None and patches(fleet) == []


def test_a_trigger_delivery_gets_the_request_as_its_reply_only(fleet, approval_settings,
                                                               serve_app, broker):
    settings = approval_settings()
    app = serve_app(replace(settings, http=replace(settings.http, outcome_sink=broker.url)))
    resp = post(app, alert_event())
    assert resp.headers["ce-type"] == TYPE_APPROVAL_REQUESTED
    assert broker.received == []  # the reply goes to the Broker already


def test_approve_send_posts_a_signed_event(broker, monkeypatch, capsys):
    monkeypatch.setenv("REMEDIATION_APPROVAL_SECRET", SECRET)
    assert cli.main(["approve", "abc123", "--by", "alice", "--send", broker.url,
                     "--function", "restart-engine",
                     "--expires-at", "2026-11-01T11:00:00Z"]) == 0
    (got,) = broker.received
    assert got["ce-type"] == TYPE_APPROVAL_GRANTED and got["ce-remediation"] == "restart-engine"
    assert json.loads(got["body"]) == approval_data(SECRET, "abc123", "alice",
                                                    "2026-11-01T11:00:00Z")
    assert SECRET not in json.dumps(got) and SECRET not in capsys.readouterr().out
