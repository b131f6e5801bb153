"""The HTTP app (Flask): CloudEvents in, outcome events out; webhooks.

Routes:
- ``POST /``: CloudEvents in binary, structured or batched mode. A single
  event gets its outcome back as a binary-mode reply event (200); a batch
  gets a batch of outcomes. Any retryable outcome answers 503 so Knative
  redelivers (finished items then come back as duplicates).
- ``POST /webhooks/alertmanager``: bearer or basic auth, as Alertmanager's
  ``http_config`` sends; converts the group to one event per alert.
- ``POST /webhooks/splunk/<token>`` (or ``?token=``): Splunk cannot send
  headers, so the secret rides in the URL.
- ``GET /health/liveness``, ``/health/readiness``.

Malformed input gets a 400 JSON error naming the problem and never reaches
the pipeline; bodies over the limit get 413 before they are read.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request

from .dispatch import handle_event, handle_events, http_status
from .errors import InvalidInput
from .events.alertmanager import alertmanager_to_events
from .events.binding import event_dict, load_json, parse_http, to_batch, to_binary
from .events.outcome import outcome_event
from .events.splunk import splunk_to_event
from .model import Outcome, Status
from .pipeline import Pipeline
from .settings import Settings

log = logging.getLogger("remediation.app")


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status,
                    mimetype="application/json", headers=headers or {})


def _error(status: int, error: str, message: str, attribute: str | None = None) -> Response:
    body = {"error": error, "message": message}
    if attribute:
        body["attribute"] = attribute
    return _json(body, status)


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def create_app(settings: Settings | None = None, pipeline: Pipeline | None = None,
               *, pipeline_factory: Callable[[Settings], Pipeline] | None = None) -> Flask:
    """The WSGI app. Without arguments it reads Settings from the environment
    (the only place that does) and builds the pipeline once."""
    if settings is None:
        settings = Settings.from_env(os.environ)
    if pipeline is None:
        from .runtime import build_pipeline

        pipeline = (pipeline_factory or build_pipeline)(settings)
    http = settings.http
    app = Flask("remediation")
    routes = pipeline.routes

    def read_body() -> bytes | Response:
        length = request.content_length
        if length is not None and length > http.max_body_bytes:
            return _error(413, "too-large", f"body exceeds {http.max_body_bytes} bytes")
        body = request.stream.read(http.max_body_bytes + 1)
        if len(body) > http.max_body_bytes:
            return _error(413, "too-large", f"body exceeds {http.max_body_bytes} bytes")
        return body

    def reply(outcomes: list[Outcome], *, batch: bool) -> Response:
        status = http_status(outcomes)
        if status == 400 and not batch:
            o = outcomes[0]
            return _error(400, "invalid-event", "; ".join(o.reasons) or "invalid event")
        if status == 503:
            reasons = sorted({r for o in outcomes if o.status is Status.RETRY for r in o.reasons})
            return _json({"error": "temporarily-unavailable", "message": "; ".join(reasons)},
                         503, {"Retry-After": "5"})
        events = [outcome_event(o) for o in outcomes]
        headers, body = to_batch(events) if batch else to_binary(events[0])
        return Response(body, status=200, headers=headers)

    def run_webhook(events: list[Any]) -> Response:
        if http.sink:
            from .forward import forward_events

            return forward_events(events, http)
        outcomes = handle_events(pipeline, events, via="webhook")
        status = http_status(outcomes)
        summary = {"received": len(events),
                   "outcomes": [{"status": o.status.value, "function": o.function,
                                 "event_id": o.event_id, "reasons": list(o.reasons),
                                 "target": o.target.as_dict() if o.target else None,
                                 **({"verification": dict(o.verification)}
                                    if o.verification else {}),
                                 **({"approval": dict(o.approval)} if o.approval else {})}
                                for o in outcomes]}
        headers = {"Retry-After": "5"} if status == 503 else {}
        return _json(summary, 200 if status == 400 else status, headers)

    dead_letter_mode = "dead-letter" in settings.functions
    store: Any = None

    def dead_letters() -> Any:
        nonlocal store
        if store is None:
            from .guard.deadletters import DeadLetterStore

            store = DeadLetterStore(http.dead_letter_store)
            app.extensions["remediation.dead_letters"] = store
        return store

    def keep_dead_letters(events: list[Any]) -> Response:
        seqs = [dead_letters().add(event_dict(e)) for e in events]
        log.warning("stored %d dead letter(s): %s", len(seqs),
                    ", ".join(f"{e.get_type()} {e.get_id()}" for e in events)[:500])
        return _json({"stored": seqs}, 202)  # 202: not a reply, nothing goes back to the broker

    @app.post("/dead-letters")
    def dead_letter_endpoint() -> Response:
        body = read_body()
        if isinstance(body, Response):
            return body
        try:
            events = parse_http(dict(request.headers), body)
        except InvalidInput as exc:
            return _error(400, "invalid-cloudevent", str(exc), exc.attribute)
        return keep_dead_letters(events)

    @app.post("/")
    def cloudevents() -> Response:
        body = read_body()
        if isinstance(body, Response):
            return body
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            events = parse_http(dict(request.headers), body)
        except InvalidInput as exc:
            return _error(400, "invalid-cloudevent", str(exc), exc.attribute)
        if dead_letter_mode:
            return keep_dead_letters(events)
        batch = ctype == "application/cloudevents-batch+json"
        if batch:
            outcomes = handle_events(pipeline, events, via="trigger")
        else:
            outcomes = [handle_event(pipeline, events[0], via="trigger")]
        return reply(outcomes, batch=batch)

    def parse_json(body: bytes) -> Any:
        return load_json(body, "body", "body")

    @app.post("/webhooks/alertmanager")
    def alertmanager() -> Response:
        if not authorised_alertmanager():
            return _error(401, "unauthorized", "valid bearer or basic credentials required")
        body = read_body()
        if isinstance(body, Response):
            return body
        try:
            events = alertmanager_to_events(parse_json(body), routes=alert_route)
        except InvalidInput as exc:
            return _error(400, "invalid-alertmanager-payload", str(exc), exc.attribute)
        return run_webhook(events)

    @app.post("/webhooks/splunk")
    @app.post("/webhooks/splunk/<token>")
    def splunk(token: str = "") -> Response:
        given = token or request.args.get("token", "")
        if not _same(given, http.splunk_token.reveal()):
            return _error(401, "unauthorized", "a valid token is required in the URL")
        body = read_body()
        if isinstance(body, Response):
            return body
        try:
            event = splunk_to_event(parse_json(body), routes=search_route)
        except InvalidInput as exc:
            return _error(400, "invalid-splunk-payload", str(exc), exc.attribute)
        return run_webhook([event])

    def alert_route(name: str, labels: Any) -> str:
        return routes.function_for(name)

    def search_route(name: str, labels: Any) -> str:
        return routes.function_for(name, splunk=True)

    def authorised_alertmanager() -> bool:
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            return _same(value.strip(), http.alertmanager_bearer.reveal())
        if scheme.lower() == "basic" and http.alertmanager_basic_user:
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return (_same(user, http.alertmanager_basic_user)
                    and _same(password, http.alertmanager_basic_password.reveal()))
        return False

    @app.get("/health/liveness")
    @app.get("/healthz")
    def liveness() -> Response:
        return _json({"status": "alive"}, 200)

    @app.get("/health/readiness")
    def readiness() -> Response:
        return _json({"status": "ready"}, 200)

    @app.errorhandler(404)
    def not_found(_: Any) -> Response:
        return _error(404, "not-found", "no such endpoint")

    @app.errorhandler(405)
    def not_allowed(_: Any) -> Response:
        return _error(405, "method-not-allowed", "method not allowed on this endpoint")

    @app.errorhandler(413)
    def too_large(_: Any) -> Response:
        return _error(413, "too-large", f"body exceeds {http.max_body_bytes} bytes")

    @app.errorhandler(500)
    def internal(_: Any) -> Response:
        # An unexpected error: retryable for the sender, details only in our logs.
        return _error(500, "internal-error", "internal error; the event was not acted on")

    app.extensions["remediation.pipeline"] = pipeline
    return app
