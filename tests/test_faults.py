"""Fault injection through real HTTP: the Kubernetes API emulator throttling,
failing, slow or down; the policy engine and the credentials broker failing.

Properties (asserted on the emulator's objects and the replies, not on calls):
* no half-done plan: the Deployment is either untouched or restarted once;
* no duplicate: after recovery, redelivering N times gives exactly one
  successful PATCH on the Deployment;
* a retryable 503 with Retry-After where a retry can help, a 200 with status
  failed / denied where it cannot.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from remediation.actions.base import RESTARTED_AT_ANNOTATION
from remediation.cli import demo_dir
from remediation.credentials import AmbientCredentials
from remediation.errors import ActionFailed, DependencyUnavailable
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import to_structured
from remediation.runtime import load_policy_engine
from remediation.settings import PolicySettings

from tests.plugins.app import BEARER

AUTH = {"Authorization": f"Bearer {BEARER}"}
NS, DEPLOY = "llm-serving", "vllm-llama-7b"
ALERT = json.loads((demo_dir() / "events" / "01-vllm-hung.json").read_text())


def restarted_at(emu: Any) -> str | None:
    obj = emu.get("deployments", NS, DEPLOY)
    return ((obj["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(
        RESTARTED_AT_ANNOTATION)


def ok_patches(emu: Any) -> list[Any]:
    return [r for r in emu.requests if r.method == "PATCH" and r.status < 300
            and r.resource == "deployments" and r.name == DEPLOY
            and r.query.get("dryRun") != "All"]


def send(app: Any) -> Any:
    return app.post("/webhooks/alertmanager", json=ALERT, headers=AUTH)


def send_cloudevent(app: Any) -> Any:
    (event,) = alertmanager_to_events(ALERT, routes=lambda n, _l: "restart-engine")
    headers, body = to_structured(event)
    return app.post("/", headers=headers, content=body)


def assert_retry(resp: Any) -> None:
    assert resp.status_code == 503, resp.text
    assert int(resp.headers["Retry-After"]) > 0
    body = resp.json()
    if "outcomes" in body:  # webhooks: the per-alert summary
        assert [o["status"] for o in body["outcomes"]] == ["retry"]
        assert body["outcomes"][0]["reasons"]
    else:  # CloudEvents: an error body
        assert body["error"] == "temporarily-unavailable" and body["message"]


def status_of(resp: Any) -> str:
    return resp.json()["outcomes"][0]["status"]


def recover_and_redeliver(app: Any, emu: Any, n: int = 3) -> list[str]:
    statuses = []
    for _ in range(n):
        resp = send(app)
        assert resp.status_code == 200, resp.text
        statuses.append(status_of(resp))
    assert statuses[0] in ("applied", "duplicate")
    assert statuses.count("applied") <= 1 and set(statuses[1:]) <= {"duplicate"}
    assert restarted_at(emu) is not None
    assert len(ok_patches(emu)) == 1, ok_patches(emu)
    return statuses


# --------------------------------------------------------------------------- Kubernetes API


@pytest.mark.parametrize("status", [429, 500, 503])
@pytest.mark.parametrize("times", [1, 3, None])
@pytest.mark.parametrize("method", ["PATCH", "GET"])
def test_api_errors_in_bursts(fleet, make_settings, serve_app, status, times, method):
    app = serve_app(make_settings())
    fleet.fail(status=status, times=times, method=method, retry_after=1 if status == 429 else None)
    first = send(app)
    # either the client's own retries absorbed the burst, or nothing was done and we retry
    if first.status_code == 503:
        assert_retry(first)
        assert restarted_at(fleet) is None and ok_patches(fleet) == []
    else:
        assert first.status_code == 200 and status_of(first) == "applied", first.text
        assert len(ok_patches(fleet)) == 1
    fleet.clear_faults()
    recover_and_redeliver(app, fleet)


@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_api_slow_past_the_client_timeout(fleet, make_settings, serve_app, method):
    app = serve_app(make_settings())  # client timeout 2 s
    # reads are retried once by the client (urllib3): delay both attempts
    fleet.delay(3.0, times=2 if method == "GET" else 1, method=method)
    assert_retry(send(app))
    if method == "PATCH":  # the write lands after we gave up: wait for it
        deadline = time.monotonic() + 5
        while restarted_at(fleet) is None and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        assert restarted_at(fleet) is None
    statuses = recover_and_redeliver(app, fleet)
    if method == "PATCH":
        assert statuses == ["duplicate"] * 3  # found the incident mark, never twice


def test_api_down_answers_retry_on_every_entry_point(fleet, make_settings, serve_app):
    app = serve_app(make_settings())
    before = fleet.get("deployments", NS, DEPLOY)
    fleet.close()
    assert_retry(send(app))
    assert_retry(send_cloudevent(app))
    assert fleet.get("deployments", NS, DEPLOY) == before


# --------------------------------------------------------------------------- policy engine


class FlakyPolicy:
    """The real embedded engine behind a switch: raises, or answers garbage."""

    def __init__(self, mode: str, garbage: Any = None) -> None:
        self.inner = load_policy_engine(PolicySettings())
        self.mode = mode
        self.garbage = garbage

    def evaluate(self, input_doc: Any) -> Any:
        if self.mode == "down":
            raise DependencyUnavailable("OPA: connection refused (injected)")
        if self.mode == "garbage":
            return self.garbage
        return self.inner.evaluate(input_doc)

    def close(self) -> None:
        self.inner.close()


def test_policy_unavailable_answers_retry_then_acts_once(fleet, make_settings, serve_app):
    policy = FlakyPolicy("down")
    app = serve_app(make_settings(), policy=policy)
    for _ in range(3):
        assert_retry(send(app))
        assert_retry(send_cloudevent(app))
    assert restarted_at(fleet) is None and ok_patches(fleet) == []
    policy.mode = "ok"
    assert recover_and_redeliver(app, fleet)[0] == "applied"


@pytest.mark.parametrize("garbage", [{}, None, [], "allow", {"allow": "true"}, {"allow": 1},
                                     {"reasons": ["ok"]}, {"allow": None}])
def test_policy_garbage_is_denied(fleet, make_settings, serve_app, garbage):
    app = serve_app(make_settings(), policy=FlakyPolicy("garbage", garbage))
    resp = send(app)
    assert resp.status_code == 200, resp.text
    assert status_of(resp) == "denied"
    resp = send_cloudevent(app)
    assert resp.status_code == 200 and resp.json()["status"] in ("denied", "duplicate")
    assert restarted_at(fleet) is None and ok_patches(fleet) == []


# --------------------------------------------------------------------------- credentials


class FlakyCredentials(AmbientCredentials):
    def __init__(self, error: Exception | None) -> None:
        super().__init__("")
        self.error = error

    def lease(self, plan: Any, cluster: str) -> Any:
        if self.error is not None:
            raise self.error
        return super().lease(plan, cluster)


def test_credentials_unavailable_answers_retry_then_acts_once(fleet, make_settings, serve_app):
    creds = FlakyCredentials(DependencyUnavailable("Vault sealed (injected)"))
    app = serve_app(make_settings(), credentials=creds)
    for _ in range(3):
        assert_retry(send(app))
    assert restarted_at(fleet) is None and ok_patches(fleet) == []
    creds.error = None
    assert recover_and_redeliver(app, fleet)[0] == "applied"


def test_credentials_refused_is_a_final_failure(fleet, make_settings, serve_app):
    creds = FlakyCredentials(ActionFailed("permission denied: namespace not allowed (injected)"))
    app = serve_app(make_settings(), credentials=creds)
    resp = send(app)
    assert resp.status_code == 200, resp.text
    outcome = resp.json()["outcomes"][0]
    assert outcome["status"] == "failed"
    assert any("credentials refused" in r for r in outcome["reasons"]), outcome["reasons"]
    for _ in range(3):  # redelivery cannot help and must not act
        again = send(app)
        assert again.status_code == 200 and status_of(again) in ("failed", "duplicate")
    assert restarted_at(fleet) is None and ok_patches(fleet) == []
