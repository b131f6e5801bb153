"""Issue 15, finding 1: ``POST /`` and ``POST /dead-letters`` hear only
authenticated senders.

The attack: a forged CloudEvent, from anyone who can reach the function,
asks drain-gpu-node to drain a GPU node. Each test sends it (or a variant:
wrong key, tampered data, replayed old signature, a forged or expired JWT)
and asserts the 401 and that the emulated cluster saw no write. The JWTs are
real: RS256/ES256 tokens from a locally generated key, whose JWKS a loopback
issuer serves (discovery document and keys), as the kube-apiserver does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from remediation.cli import demo_dir
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import new_event, to_batch, to_binary, to_structured
from remediation.guard.sender_auth import SIGNATURE_EXTENSION, sign_events
from remediation.settings import PolicySettings, SenderAuthSettings, Settings

from tests.plugins.app import BEARER

EVENTS = demo_dir() / "events"
KEY = "event-hmac-key-for-tests-0f3a9c"
AUDIENCE = "serving.knative.dev/service/remediation/drain-gpu-node"
SUBJECT = "system:serviceaccount:remediation:oidc-trigger-drain-gpu-node"


def drain_event(tmp: str = "10-dcgm-xid79-fell-off-bus") -> Any:
    (event,) = alertmanager_to_events(json.loads((EVENTS / f"{tmp}.json").read_text()))
    return event


def signed(event: Any, key: str = KEY, now: float | None = None) -> Any:
    (out,) = sign_events([event], key, now=time.time() if now is None else now,
                         rebuild=new_event)
    return out


def writes(emu: Any) -> list[Any]:
    return [r for r in emu.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]


def policy(tmp_path: Path) -> PolicySettings:
    f = tmp_path / "policy-data.yaml"
    f.write_text(yaml.safe_dump({"remediation_config": {"limits": {
        "max_cordoned_gpu_nodes_percent": 50}}}))
    return PolicySettings(data_file=str(f))


def secured(make_settings: Any, tmp_path: Path, **auth: Any) -> Settings:
    return make_settings(sender_auth=SenderAuthSettings(**auth), policy=policy(tmp_path))


def assert_untouched(fleet: Any) -> None:
    assert writes(fleet) == []
    node = fleet.get("nodes", "gpu-node-5")
    assert not node["spec"].get("unschedulable")
    assert not [r for r in fleet.requests if r.resource == "pods/eviction"]


# --------------------------------------------------------------------------- default


def test_a_forged_event_is_refused_by_default_and_drains_nothing(fleet, make_settings,
                                                                 serve_app, tmp_path):
    settings = secured(make_settings, tmp_path)  # nothing configured, no opt-out
    app = serve_app(settings)
    headers, body = to_binary(drain_event())
    resp = app.post("/", headers=headers, content=body)
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "unauthorized"
    resp = app.post("/", **dict(zip(("headers", "content"), to_structured(drain_event()))))
    assert resp.status_code == 401
    resp = app.post("/", **dict(zip(("headers", "content"), to_batch([drain_event()]))))
    assert resp.status_code == 401
    assert_untouched(fleet)


def test_dead_letters_refuse_strangers_and_store_nothing(fleet, make_settings, serve_app,
                                                        tmp_path):
    app = serve_app(secured(make_settings, tmp_path, hmac_key=_secret(KEY)))
    headers, body = to_binary(drain_event())
    resp = app.post("/dead-letters", headers=headers, content=body)
    assert resp.status_code == 401
    headers, body = to_binary(signed(drain_event()))
    headers["ce-knativeerrorcode"] = "500"  # what the Broker adds when it dead-letters
    resp = app.post("/dead-letters", headers=headers, content=body)
    assert resp.status_code == 202, resp.text
    assert_untouched(fleet)


def test_explicit_opt_out_is_warned_about_at_start_up(make_settings, serve_app, caplog):
    with caplog.at_level(logging.WARNING, logger="remediation.runtime"):
        serve_app(make_settings(sender_auth=SenderAuthSettings(allow_unauthenticated=True)))
    assert any("sender authentication is OFF" in r.getMessage() for r in caplog.records)


def test_the_opt_out_is_an_explicit_setting():
    assert Settings().sender_auth.allow_unauthenticated is False
    env = Settings.from_env({"REMEDIATION_ALLOW_UNAUTHENTICATED_EVENTS": "true"})
    assert env.sender_auth.allow_unauthenticated is True
    env = Settings.from_env({"REMEDIATION_EVENT_HMAC_KEY": "s3cr3t-zq", "REMEDIATION_OIDC_ISSUER":
                             "https://kubernetes.default.svc", "REMEDIATION_OIDC_SUBJECTS":
                             "a, b*"})
    assert env.sender_auth.hmac_key.reveal() == "s3cr3t-zq" and "s3cr3t-zq" not in repr(env)
    assert env.sender_auth.oidc_subjects == ("a", "b*")


# --------------------------------------------------------------------------- HMAC


def _secret(value: str) -> Any:
    from remediation.settings import Secret

    return Secret(value)


def test_hmac_signed_event_is_admitted_and_acts(fleet, make_settings, serve_app, tmp_path):
    app = serve_app(secured(make_settings, tmp_path, hmac_key=_secret(KEY)))
    headers, body = to_binary(signed(drain_event()))
    resp = app.post("/", headers=headers, content=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "applied"
    assert fleet.get("nodes", "gpu-node-5")["spec"]["unschedulable"] is True


@pytest.mark.parametrize("attack", ["unsigned", "wrong-key", "tampered-data",
                                    "re-routed", "other-cluster", "old", "malformed", "one-of-batch"])
def test_hmac_attacks_are_refused_and_change_nothing(fleet, make_settings, serve_app, tmp_path,
                                                     attack):
    app = serve_app(secured(make_settings, tmp_path, hmac_key=_secret(KEY), max_age=600))
    event = drain_event()
    if attack == "unsigned":
        headers, body = to_binary(event)
    elif attack == "wrong-key":
        headers, body = to_binary(signed(event, key="guessed"))
    elif attack == "tampered-data":
        headers, body = to_binary(signed(event))
        data = json.loads(body)
        data["alert"]["labels"]["Hostname"] = "gpu-node-1"
        body = json.dumps(data).encode()
    elif attack == "re-routed":
        headers, body = to_binary(signed(event))
        headers["ce-remediation"] = "rebalance-gpu-pods"
    elif attack == "other-cluster":
        headers, body = to_binary(signed(event))
        headers["ce-cluster"] = "payments-prod"
    elif attack == "old":
        headers, body = to_binary(signed(event, now=time.time() - 3600))
    elif attack == "malformed":
        headers, body = to_binary(event)
        headers[f"ce-{SIGNATURE_EXTENSION}"] = "t=1,v1=zz"
    else:
        headers, body = to_batch([signed(event), drain_event()])  # the second unsigned
    resp = app.post("/", headers=headers, content=body)
    assert resp.status_code == 401, resp.text
    assert_untouched(fleet)


def test_unsigned_binary_event_is_refused_before_its_body_is_read(make_settings, serve_app,
                                                                 tmp_path):
    app = serve_app(secured(make_settings, tmp_path, hmac_key=_secret(KEY)))
    headers, _ = to_binary(drain_event())
    big = b"x" * (4 * 256 * 1024)  # over the body limit: 413 if it were read first
    resp = app.post("/", headers=headers, content=big)
    assert resp.status_code == 401


def test_an_unsigned_ping_is_only_a_clock_tick(fleet, make_settings, serve_app, tmp_path):
    """A PingSource cannot sign (HMAC installs): its binary-mode tick is let
    through as a clock. An attacker dressing a drain request as a ping gets a
    sweep of nothing due, and the next tick within the interval is throttled."""
    app = serve_app(secured(make_settings, tmp_path, hmac_key=_secret(KEY)))
    headers, body = to_binary(drain_event())
    headers["ce-type"] = "dev.knative.sources.ping"
    resp = app.post("/", headers=headers, content=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["swept"] == 0 and resp.json()["outcomes"] == []
    again = app.post("/", headers=headers, content=body)
    assert again.status_code == 200 and again.json()["throttled"] is True
    assert_untouched(fleet)
    # the same data in structured mode is an event, not a tick: authenticated
    event = new_event({**drain_event().get_attributes(), "type": "dev.knative.sources.ping"},
                      drain_event().get_data())
    resp = app.post("/", **dict(zip(("headers", "content"), to_structured(event))))
    assert resp.status_code == 401
    assert_untouched(fleet)


def test_the_adapter_signs_what_it_forwards(serve_app, broker, kube_emulator, make_settings,
                                            tmp_path):
    from dataclasses import replace as dc_replace

    base = make_settings(sender_auth=SenderAuthSettings(hmac_key=_secret(KEY)))
    adapter = serve_app(dc_replace(base, http=dc_replace(base.http, sink=broker.url)))
    doc = json.loads((EVENTS / "10-dcgm-xid79-fell-off-bus.json").read_text())
    resp = adapter.post("/webhooks/alertmanager", json=doc,
                        headers={"Authorization": f"Bearer {BEARER}"})
    assert resp.status_code == 200, resp.text
    (received,) = broker.received
    assert received[f"ce-{SIGNATURE_EXTENSION}"].startswith("t=")
    # what the Broker delivers verifies at the function
    kube_emulator.load(demo_dir() / "cluster.yaml")
    fn = serve_app(secured(make_settings, tmp_path, hmac_key=_secret(KEY)))
    headers = {k: v for k, v in received.items() if k.startswith("ce-")}
    headers["content-type"] = "application/json"
    resp = fn.post("/", headers=headers, content=received["body"])
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "applied"


# --------------------------------------------------------------------------- OIDC


class Issuer:
    """A loopback OIDC issuer: discovery document and JWKS, counting reads."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.fetches = 0
        self.down = False
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if issuer.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                if self.path == "/.well-known/openid-configuration":
                    doc = {"issuer": issuer.url, "jwks_uri": issuer.url + "/openid/v1/jwks"}
                elif self.path == "/openid/v1/jwks":
                    issuer.fetches += 1
                    doc = issuer.jwks()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in (("rsa-1", self.rsa), ("ec-1", self.ec)):
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[
                "RS256" if kid.startswith("rsa") else "ES256"].to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": keys}

    def token(self, *, key: Any = None, kid: str = "rsa-1", alg: str = "RS256",
              **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": [AUDIENCE], "sub": SUBJECT, "iat": now,
                "nbf": now, "exp": now + 600, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key if key is not None else self.rsa, algorithm=alg,
                          headers={"kid": kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    iss = Issuer()
    yield iss
    iss.close()


def oidc(make_settings: Any, tmp_path: Path, issuer: Issuer, **extra: Any) -> Settings:
    return secured(make_settings, tmp_path, oidc_issuer=issuer.url, oidc_audience=AUDIENCE,
                   oidc_subjects=("system:serviceaccount:remediation:oidc-trigger-*",),
                   oidc_timeout=2.0, **extra)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_valid_knative_oidc_token_is_admitted(fleet, make_settings, serve_app, tmp_path,
                                                issuer):
    app = serve_app(oidc(make_settings, tmp_path, issuer))
    headers, body = to_binary(drain_event())
    resp = app.post("/", headers={**headers, **bearer(issuer.token())}, content=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "applied"
    # an ES256 token from the second key works too; the keys were read once
    headers, body = to_binary(drain_event("11-dcgm-xid13-restart-app"))
    resp = app.post("/", headers={**headers, **bearer(issuer.token(key=issuer.ec, kid="ec-1",
                                                                   alg="ES256"))}, content=body)
    assert resp.status_code == 200, resp.text
    assert issuer.fetches == 1


def _forged(issuer: Issuer, attack: str) -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if attack == "other-key":
        return issuer.token(key=other)
    if attack == "expired":
        return issuer.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)
    if attack == "wrong-audience":
        return issuer.token(aud=["serving.knative.dev/service/remediation/scale-engine"])
    if attack == "wrong-issuer":
        return issuer.token(iss="https://evil.example")
    if attack == "subject-not-allowed":
        return issuer.token(sub="system:serviceaccount:default:default")
    if attack == "no-exp":
        return issuer.token(exp=None)
    if attack == "alg-none":
        return jwt.encode({"iss": issuer.url, "aud": AUDIENCE, "sub": SUBJECT,
                           "exp": int(time.time()) + 600, "iat": int(time.time())},
                          None, algorithm="none", headers={"kid": "rsa-1"})
    if attack == "hs256-with-public-key":
        import base64
        import hmac as hm
        import hashlib

        def b64(b: bytes) -> str:
            return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        head = b64(json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode())
        claims = b64(json.dumps({"iss": issuer.url, "aud": AUDIENCE, "sub": SUBJECT,
                                 "exp": int(time.time()) + 600,
                                 "iat": int(time.time())}).encode())
        pub = json.dumps(issuer.jwks()["keys"][0]).encode()
        sig = b64(hm.new(pub, f"{head}.{claims}".encode(), hashlib.sha256).digest())
        return f"{head}.{claims}.{sig}"
    if attack == "garbage":
        return "not.a.jwt"
    raise AssertionError(attack)


@pytest.mark.parametrize("attack", ["other-key", "expired", "wrong-audience", "wrong-issuer",
                                    "subject-not-allowed", "no-exp", "alg-none",
                                    "hs256-with-public-key", "garbage"])
def test_forged_or_misused_tokens_are_refused_and_change_nothing(fleet, make_settings,
                                                                 serve_app, tmp_path, issuer,
                                                                 attack):
    # an HMAC key is configured too: a bad bearer token must not fall through to it
    app = serve_app(oidc(make_settings, tmp_path, issuer, hmac_key=_secret(KEY)))
    headers, body = to_binary(signed(drain_event()))
    resp = app.post("/", headers={**headers, **bearer(_forged(issuer, attack))}, content=body)
    assert resp.status_code == 401, resp.text
    assert "bearer token" in resp.json()["message"]
    assert_untouched(fleet)


def test_unknown_key_ids_do_not_flood_the_issuer(fleet, make_settings, serve_app, tmp_path,
                                                 issuer):
    app = serve_app(oidc(make_settings, tmp_path, issuer))
    headers, body = to_binary(drain_event())
    for i in range(20):
        token = issuer.token(kid=f"made-up-{i}")
        resp = app.post("/", headers={**headers, **bearer(token)}, content=body)
        assert resp.status_code == 401
    assert issuer.fetches == 1  # read once, not once per forged kid
    assert_untouched(fleet)


def test_issuer_down_answers_retry_and_acts_on_nothing(fleet, make_settings, serve_app,
                                                       tmp_path, issuer):
    issuer.down = True
    app = serve_app(oidc(make_settings, tmp_path, issuer))
    headers, body = to_binary(drain_event())
    resp = app.post("/", headers={**headers, **bearer(issuer.token())}, content=body)
    assert resp.status_code == 503
    assert_untouched(fleet)


def test_replayed_dead_letters_are_signed_afresh(broker, tmp_path):
    """An operator's ``remediate replay --from-dlq --sink`` re-signs with the
    event key: a letter older than the signature's age limit would otherwise
    be refused by the functions."""
    import io
    from dataclasses import replace as dc_replace

    from remediation.cli import replay_dead_letters
    from remediation.events.binding import event_dict, parse_http
    from remediation.guard.deadletters import DeadLetterStore
    from remediation.guard.sender_auth import verify_event_signature

    store_path = tmp_path / "dlq.sqlite"
    store = DeadLetterStore(str(store_path))
    old = signed(drain_event(), now=time.time() - 7200)  # past the hour
    store.add({**event_dict(old), "knativeerrorcode": "503"})
    store.close()
    settings = dc_replace(Settings(), sender_auth=SenderAuthSettings(hmac_key=_secret(KEY)))
    assert replay_dead_letters([], str(store_path), settings, sink=broker.url, as_json=True,
                               out=io.StringIO(), err=io.StringIO()) == 0
    (got,) = broker.received
    headers = {k: v for k, v in got.items() if k.startswith("ce-")}
    headers["content-type"] = "application/json"
    (event,) = parse_http(headers, got["body"].encode())
    verify_event_signature(KEY, event, now=time.time(), max_age=600)  # fresh, and ours
