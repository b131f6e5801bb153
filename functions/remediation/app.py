"""The HTTP app (Flask): CloudEvents in, outcome events out; webhooks.

Routes:
- ``POST /``: CloudEvents in binary, structured or batched mode, from an
  authenticated sender only (``guard.sender_auth``: a Knative OIDC token or
  the adapter's HMAC signature; 401 otherwise, before the body is read
  where the headers settle it). A single
  event gets its outcome back as a binary-mode reply event (200); a batch
  gets a batch of outcomes. Any retryable outcome answers 503 so Knative
  redelivers (finished items then come back as duplicates).
- ``POST /webhooks/alertmanager``: bearer or basic auth, as Alertmanager's
  ``http_config`` sends; converts the group to one event per alert and
  judges each alert on its own: a bad one is answered ``rejected`` with its
  reason in the reply, the others go ahead, and the group's answer is 200
  unless an alert needs a retry (503). Alertmanager 0.25 re-sends a group
  after a 4xx too (not within the attempt, but at every ``group_interval``
  while the group has alerts), so a 400 for one alert would hold back the
  others forever. ``truncatedAlerts`` is logged, counted and echoed.
- ``POST /webhooks/splunk/<token>``: Splunk cannot send headers, so the
  secret rides in the URL path (never the query string, which proxies log).
- ``GET /health/liveness``, ``/health/readiness``.
- ``/mcp``: the MCP server for AI agents (streamable HTTP), only when
  ``REMEDIATION_MCP_HTTP`` is on, behind the bearer token
  ``REMEDIATION_MCP_TOKEN`` (see ``mcp_server``).

- ``GET /metrics``: Prometheus metrics (:mod:`.metrics`; the README's table).

Malformed input gets a 400 JSON error naming the problem and never reaches
the pipeline; bodies over the limit get 413 before they are read. Every 4xx
is logged with its reason (one JSON line, no path: Splunk's token rides in
it); every outcome is logged by :mod:`.dispatch`.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from flask import Flask, Response, request

from . import metrics
from .dispatch import handle_event, handle_events, http_status, log_outcome
from .errors import InvalidInput, TemporaryError
from .events.alertmanager import SOURCE_PREFIX, convert_alertmanager, max_alerts_for
from .events.binding import event_dict, load_json, parse_http, to_batch, to_binary
from .events.outcome import outcome_event
from .events.splunk import splunk_to_event
from .model import Outcome, Status
from .pipeline import Pipeline
from .settings import Settings

log = logging.getLogger("remediation.app")

#: A Knative PingSource's event type: the tick that runs the sweep.
PING_TYPE = "dev.knative.sources.ping"
#: seconds between two sweeps a ping may start (the shipped PingSource ticks every 60)
SWEEP_MIN_INTERVAL = 20.0


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status,
                    mimetype="application/json", headers=headers or {})


def _error(status: int, error: str, message: str, attribute: str | None = None) -> Response:
    body = {"error": error, "message": message}
    if attribute:
        body["attribute"] = attribute
    if 400 <= status < 500:
        metrics.input_rejected(error)
        # One line per refusal; the endpoint's name, never the path (Splunk's
        # token rides in it) and never a header.
        try:
            endpoint = request.endpoint or "-"
        except RuntimeError:  # outside a request
            endpoint = "-"
        log.warning("%s", json.dumps({"http_status": status, "endpoint": endpoint, **body},
                                     separators=(",", ":")))
    return _json(body, status)


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def create_app(settings: Settings | None = None, pipeline: Pipeline | None = None,
               *, pipeline_factory: Callable[[Settings], Pipeline] | None = None,
               sender_auth: Any = None) -> Flask:
    """The WSGI app. Without arguments it reads Settings from the environment
    (the only place that does) and builds the pipeline once."""
    if settings is None:
        settings = Settings.from_env(os.environ)
    placeholders = settings.placeholder_secrets()
    if placeholders:  # the manifests' CHANGE-ME values: refuse to start (issue 15)
        raise RuntimeError("refusing to start with the shipped placeholder value of "
                           f"{', '.join(placeholders)}: set real secrets (see README, Security)")
    if pipeline is None:
        from .runtime import build_pipeline

        pipeline = (pipeline_factory or build_pipeline)(settings)
    from .runtime import describe

    log.info("serving with %s", json.dumps(describe(pipeline), separators=(",", ":")))
    if not settings.served_clusters:
        log.warning("no cluster allow-list: an event naming any cluster is planned against "
                    "this instance's cluster (set REMEDIATION_CLUSTERS)")
    if sender_auth is None:
        from .runtime import build_sender_auth

        sender_auth = build_sender_auth(settings)
    http = settings.http
    app = Flask("remediation")
    routes = pipeline.routes
    if not routes.functions:  # the alert's remediation label may name any known function
        routes = replace(routes, functions=frozenset(pipeline.catalogue))

    metrics.known_functions(pipeline.catalogue)
    too_large_msg = f"body exceeds {http.max_body_bytes} bytes"
    # Alertmanager re-sends the same group at every group_interval: say what to change
    too_large_am = (f"{too_large_msg}; Alertmanager re-sends this group at every group_interval "
                    f"and gets 413 again: set max_alerts: {max_alerts_for(http.max_body_bytes)}"
                    " (or less) in its webhook_config")

    def read_body() -> bytes | Response:
        message = too_large_am if request.endpoint == "alertmanager" else too_large_msg
        length = request.content_length
        if length is not None and length > http.max_body_bytes:
            return _error(413, "too-large", message)
        body = request.stream.read(http.max_body_bytes + 1)
        if len(body) > http.max_body_bytes:
            return _error(413, "too-large", message)
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

    def run_webhook(events: list[Any], rejected: list[Outcome] | None = None,
                    extra: dict[str, Any] | None = None) -> Response:
        """Handle (or forward) the events; ``rejected``: alerts of the same
        group refused one by one, reported beside the others."""
        rejected = rejected or []
        if http.sink:
            from .forward import forward_events

            key = settings.sender_auth.hmac_key
            if key:  # the functions behind the Broker admit only signed events
                import time

                from .events.binding import new_event
                from .guard.sender_auth import sign_events

                events = sign_events(events, key.reveal(), now=time.time(),
                                     rebuild=lambda a, d: new_event(a, d, trusted=True))
            return forward_events(events, http, rejected=[
                {"event_id": o.event_id, "reasons": list(o.reasons)} for o in rejected],
                extra=extra)
        outcomes = rejected + handle_events(pipeline, events, via="webhook")
        status = http_status(outcomes)
        summary = {"received": len(events) + len(rejected), **(extra or {}),
                   "outcomes": [{"status": o.status.value, "function": o.function,
                                 "event_id": o.event_id, "reasons": list(o.reasons),
                                 "target": o.target.as_dict() if o.target else None,
                                 **({"verification": dict(o.verification)}
                                    if o.verification else {}),
                                 **({"approval": dict(o.approval)} if o.approval else {})}
                                for o in outcomes]}
        headers = {"Retry-After": "5"} if status == 503 else {}
        # 400 (every alert rejected) is answered 200 too: nothing in the group
        # gets better by being re-sent, and the reasons are in the body and log.
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

    def unauthorized(why: str) -> Response:
        log.warning("refused a CloudEvent from %s: %s", request.remote_addr, why)
        return _error(401, "unauthorized", why)

    def authenticated_events() -> list[Any] | Response:
        """The request's events when its sender is authenticated: 401 first
        (from the headers, before the body is read, where they settle it),
        then 413/400 for the body, then the events' own signatures."""
        from .guard.sender_auth import SenderRefused

        headers = dict(request.headers)
        try:
            sender = sender_auth.before_body(headers)
        except SenderRefused as exc:
            return unauthorized(str(exc))
        except TemporaryError as exc:  # the issuer's keys cannot be read: retry later
            return _json({"error": "temporarily-unavailable", "message": str(exc)}, 503,
                         {"Retry-After": "5"})
        body = read_body()
        if isinstance(body, Response):
            return body
        try:
            events = parse_http(headers, body)
        except InvalidInput as exc:
            if sender is None and not settings.sender_auth.allow_unauthenticated:
                # an unauthenticated stranger learns nothing of our parser
                return unauthorized("a valid OIDC bearer token or a signed event is required")
            return _error(400, "invalid-cloudevent", str(exc), exc.attribute)
        if sender is None:
            try:
                sender_auth.check_events(events)
            except SenderRefused as exc:
                return unauthorized(str(exc))
        return events

    @app.post("/dead-letters")
    def dead_letter_endpoint() -> Response:
        events = authenticated_events()
        if isinstance(events, Response):
            return events
        return keep_dead_letters(events)

    last_sweep = float("-inf")  # pipeline clock of the last sweep a ping started
    sweep_lock = threading.Lock()

    @app.post("/")
    def cloudevents() -> Response:
        if not dead_letter_mode and request.headers.get("ce-type") == PING_TYPE:
            # A PingSource's tick in binary mode is a clock, not a request: its
            # data is never read, and the sweep acts only on work authenticated
            # events put in the ledger (HMAC-only installs have no way to sign
            # a ping). At most one sweep per SWEEP_MIN_INTERVAL, so a stranger
            # can make the due work happen no sooner than the schedule would.
            body = read_body()
            if isinstance(body, Response):
                return body
            return run_sweep()
        events = authenticated_events()
        if isinstance(events, Response):
            return events
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if dead_letter_mode:
            return keep_dead_letters(events)
        if len(events) == 1 and events[0].get_type() == PING_TYPE:
            return run_sweep()
        batch = ctype == "application/cloudevents-batch+json"
        if batch:
            outcomes = handle_events(pipeline, events, via="trigger")
        else:
            outcomes = [handle_event(pipeline, events[0], via="trigger")]
        return reply(outcomes, batch=batch)

    def run_sweep() -> Response:
        """A PingSource's tick: run the scheduled work that is due (recovery
        after the healthy delay). It only ever acts on what the ledger holds,
        so a stray ping can do no more than an early sweep; no reply event."""
        nonlocal last_sweep
        with sweep_lock:
            now = pipeline.clock()
            if now - last_sweep < SWEEP_MIN_INTERVAL:
                return _json({"swept": 0, "outcomes": [], "throttled": True,
                              "message": f"swept less than {SWEEP_MIN_INTERVAL:g} s ago"}, 200)
            last_sweep = now
        outcomes = pipeline.sweep()
        for o in outcomes:
            log_outcome(o, via="sweep")
        return _json({"swept": len(outcomes),
                      "outcomes": [{"status": o.status.value, "function": o.function,
                                    "event_id": o.event_id, "reasons": list(o.reasons),
                                    "target": str(o.target) if o.target else None}
                                   for o in outcomes]}, 200)

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
            # the body limit binds first; a minimal alert is about 100 bytes
            converted = convert_alertmanager(parse_json(body), routes=alert_route,
                                             max_alerts=max(1, http.max_body_bytes // 64))
        except InvalidInput as exc:
            return _error(400, "invalid-alertmanager-payload", str(exc), exc.attribute)
        extra: dict[str, Any] = {}
        alerts = len(converted.events) + len(converted.rejected)
        # one line per notification: what a receiver's max_alerts is sized by
        log.info("%s", json.dumps({"webhook": "alertmanager", "alerts": alerts,
                                   "bytes": len(body), "truncated_alerts": converted.truncated},
                                  separators=(",", ":")))
        if converted.truncated:
            metrics.alertmanager_truncated(converted.truncated)
            receiver = converted.events[0].get_source() if converted.events else ""
            log.warning("%s", json.dumps({
                "truncated_alerts": converted.truncated, "received": len(converted.events)
                + len(converted.rejected), "receiver": receiver.removeprefix(SOURCE_PREFIX),
                "message": "Alertmanager left alerts out of this notification (max_alerts): "
                           "they are not acted on until a later notification carries them"},
                separators=(",", ":")))
            extra["truncated_alerts"] = converted.truncated
        rejected = []
        metrics.input_rejected("invalid-alert", len(converted.rejected))
        for r in converted.rejected:
            outcome = Outcome(status=Status.REJECTED, function="", event_id=r.event_id,
                              event_source="/webhooks/alertmanager", reasons=(r.reason,))
            log_outcome(outcome, alertname=r.alertname, via="webhook")
            rejected.append(outcome)
        return run_webhook(converted.events, rejected, extra)

    @app.post("/webhooks/splunk")
    @app.post("/webhooks/splunk/<token>")
    def splunk(token: str = "") -> Response:
        if "token" in request.args:  # proxies and access logs keep query strings
            return _error(401, "unauthorized", "the token is accepted only in the URL path "
                          "(/webhooks/splunk/<token>), never in the query string")
        if not _same(token, http.splunk_token.reveal()):
            return _error(401, "unauthorized", "a valid token is required in the URL path")
        body = read_body()
        if isinstance(body, Response):
            return body
        try:
            event = splunk_to_event(parse_json(body), routes=search_route)
        except InvalidInput as exc:
            return _error(400, "invalid-splunk-payload", str(exc), exc.attribute)
        return run_webhook([event])

    def alert_route(name: str, labels: Any) -> str:
        return routes.function_for(name, labels=labels)

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

    from .runtime import state_reader

    read_state = state_reader(pipeline, dead_letters if dead_letter_mode else None)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        body, content_type = metrics.exposition(read_state)
        return Response(body, status=200, headers={"Content-Type": content_type})

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
    if settings.mcp.http:
        _mount_mcp(app, settings, pipeline)
    return app


def _mount_mcp(app: Flask, settings: Settings, pipeline: Pipeline) -> None:
    """Streamable HTTP for AI agents at ``/mcp`` (``REMEDIATION_MCP_HTTP``),
    behind ``REMEDIATION_MCP_TOKEN`` as a bearer token: without a token it is
    not served at all (fail closed); a missing or wrong one gets 401 before
    the MCP server sees the request."""
    token = settings.mcp.token.reveal()
    if not token:
        log.error("REMEDIATION_MCP_HTTP is on but REMEDIATION_MCP_TOKEN is empty: /mcp is "
                  "not served")
        return
    from .mcp_server import http_wsgi_app

    mcp_app = http_wsgi_app(pipeline, max_body_bytes=settings.http.max_body_bytes)
    flask_app = app.wsgi_app
    app.extensions["remediation.mcp"] = mcp_app

    def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path != "/mcp" and not path.startswith("/mcp/"):
            return flask_app(environ, start_response)
        scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not _same(given.strip(), token):
            body = json.dumps({"error": "unauthorized",
                               "message": "a valid bearer token is required"}).encode()
            start_response("401 Unauthorized", [("Content-Type", "application/json"),
                                                ("Content-Length", str(len(body))),
                                                ("WWW-Authenticate", "Bearer")])
            return [body]
        return mcp_app(environ, start_response)

    app.wsgi_app = dispatch  # type: ignore[method-assign]
