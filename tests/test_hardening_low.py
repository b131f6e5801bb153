"""Issue 15, low findings 10-15: each test sends the attack (or makes the
fault) and checks the refusal and that the (emulated) cluster did not
change, or changed exactly once.

10. a signed approval of an earlier request is not replayable after the
    alert parks the same key again;
11. a ledger failing after an apply answers ``applied`` with a warning;
12. the SQLite ledger is 0600 and a vanished ledger refuses to start;
13. ``remediate dlq list`` prints no terminal escape sequences;
14. JSON nested past the limit is a 400, no traceback;
15. no Splunk token from the query string; shipped placeholders refuse to
    start.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediation import cli
from remediation.errors import DependencyUnavailable
from remediation.guard.deadletters import DeadLetterStore
from remediation.guard.ledger import LedgerMissing, SQLiteLedger
from remediation.settings import (ApprovalSettings, HTTPSettings, LedgerSettings,
                                  PolicySettings, Secret, Settings, VerifySettings)

from tests.plugins.app import BEARER, SPLUNK_TOKEN
from tests.test_approval_e2e import (SECRET, alert_event, approval_event, patches, post,
                                     restarted_at)

AUTH = {"Authorization": f"Bearer {BEARER}"}


# --------------------------------------------------------------------------- 10


def test_an_approval_of_an_earlier_request_is_not_replayable(fleet, make_settings, serve_app,
                                                            tmp_path):
    data = tmp_path / "approval-policy.yaml"
    data.write_text(yaml.safe_dump({"remediation_config": {"actions": {
        "rollout-restart": {"approval": True}}}}))
    app = serve_app(make_settings(
        policy=PolicySettings(data_file=str(data)),
        ledger=LedgerSettings(path=str(tmp_path / "ledger.sqlite")),
        approval=ApprovalSettings(ttl=1.0, secret=Secret(SECRET)),
        verify=VerifySettings(deadline=5.0, interval=0.05)))
    first = post(app, alert_event()).json()["approval"]
    signed_then = approval_event(first["id"], "alice", expires_at=first["expires_at"])
    time.sleep(2.2)  # the request expires unanswered
    expired = post(app, signed_then)
    assert expired.status_code == 400 and "expired" in expired.json()["message"]
    second = post(app, alert_event()).json()  # the alert parks the same key again
    assert second["status"] == "pending" and second["approval"]["id"] == first["id"]
    assert second["approval"]["expires_at"] != first["expires_at"]
    replayed = post(app, signed_then)  # the captured approval, replayed
    assert replayed.status_code == 400, replayed.text  # rejected: answered 400
    assert "signed for an earlier request" in replayed.json()["message"]
    assert restarted_at(fleet) is None and patches(fleet) == []
    fresh = approval_event(first["id"], "alice", expires_at=second["approval"]["expires_at"])
    assert post(app, fresh).json()["status"] == "applied"  # the real approval still works


# --------------------------------------------------------------------------- 11


class LedgerDownAfterApply(SQLiteLedger):
    def finish(self, key: str, status: str, **kwargs: Any) -> None:
        if status == "applied":
            raise DependencyUnavailable("ledger: 503 etcd timeout")
        super().finish(key, status, **kwargs)


def test_a_ledger_failure_after_an_apply_still_reports_applied(fleet, make_settings,
                                                              serve_app):
    app = serve_app(make_settings(verify=VerifySettings(deadline=0)),
                    ledger=LedgerDownAfterApply())
    (event,) = [alert_event()]
    resp = post(app, event)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["status"] == "applied"
    assert any("ledger could not record it" in r for r in out["reasons"]), out["reasons"]
    assert len(patches(fleet)) == 1 and restarted_at(fleet) is not None
    again = post(app, event)  # a redelivery: the claim is still held, nothing repeats
    assert again.status_code in (200, 503)
    assert len(patches(fleet)) == 1


# --------------------------------------------------------------------------- 12


def test_the_sqlite_ledger_is_private_and_must_not_vanish(tmp_path):
    path = tmp_path / "ledger.sqlite"
    SQLiteLedger(str(path)).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o644)  # an old ledger made before the fix
    SQLiteLedger(str(path)).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.unlink()
    with pytest.raises(LedgerMissing, match="refusing to start"):
        SQLiteLedger(str(path))
    assert not path.exists()


def test_a_vanished_ledger_stops_the_app_from_starting(tmp_path, make_settings):
    from remediation.runtime import build_pipeline

    settings = make_settings(ledger=LedgerSettings(path=str(tmp_path / "l.sqlite")))
    SQLiteLedger(settings.ledger.path).close()
    Path(settings.ledger.path).unlink()
    with pytest.raises(LedgerMissing):
        build_pipeline(settings)


def test_the_dead_letter_store_is_private(tmp_path):
    path = tmp_path / "dlq.sqlite"
    DeadLetterStore(str(path)).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --------------------------------------------------------------------------- 13


def test_dlq_list_prints_no_terminal_escapes(tmp_path, capsys):
    path = tmp_path / "dlq.sqlite"
    store = DeadLetterStore(str(path))
    evil = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\u202eevil"
    store.add({"specversion": "1.0", "id": "e1", "source": "/x",
               "type": "io.inferenceremediation.alert.firing.v1",
               "knativeerrorcode": "500", "knativeerrordest": "http://x/" + evil,
               "knativeerrordata": base64.b64encode(evil.encode()).decode(), "data": {}})
    store.close()
    assert cli.main(["dlq", "list", "--store", str(path)]) == 0
    assert cli.main(["dlq", "list", "--store", str(path), "--json"]) == 0
    out = capsys.readouterr()
    for text in (out.out, out.err):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b" in out.out


# --------------------------------------------------------------------------- 14


@pytest.mark.parametrize("depth", [100, 500, 900, 5000])
def test_deeply_nested_json_is_a_400_without_a_traceback(fleet, make_settings, serve_app,
                                                         caplog, depth):
    app = serve_app(make_settings())
    deep = "[" * depth + "]" * depth
    event = ('{"specversion":"1.0","id":"d","source":"/x","type":'
             '"io.inferenceremediation.alert.firing.v1","data":{"alert":' + deep + "}}")
    with caplog.at_level(logging.DEBUG):
        resp = app.post("/", content=event,
                        headers={"Content-Type": "application/cloudevents+json"})
        webhook = app.post("/webhooks/alertmanager", headers={**AUTH, "Content-Type":
                           "application/json"}, content='{"alerts":' + deep + "}")
    for r in (resp, webhook):
        assert r.status_code == 400, r.text[:200]
        assert "nested deeper than" in r.json()["message"]
    assert "Traceback" not in caplog.text
    assert not [r for r in fleet.requests if r.method != "GET"]


# --------------------------------------------------------------------------- 15


def test_the_splunk_token_is_not_taken_from_the_query_string(fleet, make_settings,
                                                             serve_app):
    app = serve_app(make_settings())
    doc = json.loads((cli.demo_dir() / "events" / "05-splunk-nccl-watchdog.json").read_text())
    resp = app.post(f"/webhooks/splunk?token={SPLUNK_TOKEN}", json=doc)
    assert resp.status_code == 401
    assert "query string" in resp.json()["message"]
    resp = app.post(f"/webhooks/splunk/{SPLUNK_TOKEN}?token={SPLUNK_TOKEN}", json=doc)
    assert resp.status_code == 401
    assert not [r for r in fleet.requests if r.method != "GET"]


@pytest.mark.parametrize("field, settings", [
    ("SPLUNK_WEBHOOK_TOKEN",
     Settings(http=HTTPSettings(splunk_token=Secret("CHANGE-ME-splunk-webhook-token")))),
    ("ALERTMANAGER_BEARER_TOKEN",
     Settings(http=HTTPSettings(alertmanager_bearer=Secret("CHANGE-ME-alertmanager")))),
    ("REMEDIATION_APPROVAL_SECRET",
     Settings(approval=ApprovalSettings(secret=Secret("CHANGE-ME-approval-hmac-key")))),
])
def test_shipped_placeholder_secrets_refuse_to_start(field, settings):
    from remediation.app import create_app

    with pytest.raises(RuntimeError, match=field):
        create_app(settings, pipeline=object())  # type: ignore[arg-type]
    assert "CHANGE-ME" not in repr(settings)


def test_the_shipped_manifest_placeholders_are_what_start_up_refuses():
    manifest = (Path(__file__).parents[1] / "eventing" / "base" / "kustomization.yaml")
    literals = [line.split("=", 1)[1] for line in manifest.read_text().splitlines()
                if "=CHANGE-ME" in line]
    assert len(literals) >= 4
    for value in literals:
        s = Settings.from_env({"SPLUNK_WEBHOOK_TOKEN": value})
        assert s.placeholder_secrets() == ["SPLUNK_WEBHOOK_TOKEN"]
