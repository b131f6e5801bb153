"""Tracing (issue 14, item 5): the spans of one remediation through the HTTP
app, recorded by the OpenTelemetry SDK's in-memory exporter and read back:
the span tree and its attributes, the incoming ``traceparent`` continued,
the reply event carrying the root span's; a denied remediation's trace ends
at the decision; off by default (no exporter configured: nothing recorded,
the reply carries the incoming ``traceparent`` unchanged)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from remediation import tracing
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import to_binary
from remediation.settings import Settings

from tests.test_app_e2e import DEPLOY, payload, reply_data, restarted_at

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
INCOMING = f"00-{TRACE_ID}-{PARENT}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)
        provider.shutdown()


def post(app: Any, name: str, function: str) -> Any:
    (event,) = alertmanager_to_events(payload(name), routes=lambda n, _l: function)
    headers, body = to_binary(event)
    headers["ce-traceparent"] = INCOMING
    return app.post("/", headers=headers, content=body)


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in exporter.get_finished_spans():
        out.setdefault(s.name, []).append(s)
    return out


def test_one_remediation_is_one_trace_continuing_the_incoming_one(fleet, make_settings,
                                                                   serve_app, spans):
    app = serve_app(make_settings())
    resp = post(app, "01-vllm-hung", "restart-engine")
    assert resp.status_code == 200, resp.text
    assert reply_data(resp)["status"] == "applied"
    assert restarted_at(fleet) is not None  # the fix was really applied

    got = by_name(spans)
    (root,) = got["remediation"]
    assert f"{root.context.trace_id:032x}" == TRACE_ID  # the sender's trace, continued
    assert root.parent is not None and f"{root.parent.span_id:016x}" == PARENT
    assert root.attributes["remediation.status"] == "applied"
    assert root.attributes["remediation.function"] == "restart-engine"
    assert root.attributes["remediation.action"] == "rollout-restart"
    assert root.attributes["remediation.via"] == "trigger"
    for name in ("route", "plan", "claim", "decide", "credentials", "step", "verify"):
        (child,) = got[f"remediation.{name}"]
        assert child.context.trace_id == root.context.trace_id, name
        assert child.parent is not None and child.parent.span_id == root.context.span_id, name
    step = got["remediation.step"][0]
    assert (step.attributes["remediation.verb"], step.attributes["remediation.kind"],
            step.attributes["remediation.object"]) == ("patch", "Deployment", DEPLOY)
    assert step.attributes["remediation.ok"] is True
    assert got["remediation.decide"][0].attributes["remediation.allow"] is True
    assert got["remediation.verify"][0].attributes["remediation.result"] == "succeeded"
    # the reply event carries the root span's context: what follows joins the trace
    assert resp.headers["ce-traceparent"] == \
        f"00-{TRACE_ID}-{root.context.span_id:016x}-01"
    # no credential or token in any attribute
    for s in spans.get_finished_spans():
        assert not any("token" in str(v).lower() for v in (s.attributes or {}).values())


def test_a_denied_remediation_ends_at_the_decision(fleet, make_settings, serve_app, spans):
    app = serve_app(make_settings())
    resp = post(app, "10-dcgm-xid79-fell-off-bus", "drain-gpu-node")  # the circuit breaker
    assert resp.status_code == 200, resp.text
    assert reply_data(resp)["status"] == "denied"
    assert not fleet.get("nodes", "", "gpu-node-5")["spec"].get("unschedulable")
    got = by_name(spans)
    assert got["remediation"][0].attributes["remediation.status"] == "denied"
    assert got["remediation.decide"][0].attributes["remediation.allow"] is False
    assert {"remediation.credentials", "remediation.step", "remediation.verify"}.isdisjoint(got)


def test_off_by_default_nothing_is_recorded_and_the_traceparent_is_kept(fleet, make_settings,
                                                                        serve_app):
    assert not tracing.enabled()
    assert Settings.from_env({}).otlp_endpoint == ""
    assert Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) \
        .otlp_endpoint == "http://127.0.0.1:4318"
    app = serve_app(make_settings())
    resp = post(app, "01-vllm-hung", "restart-engine")
    assert reply_data(resp)["status"] == "applied"
    assert resp.headers["ce-traceparent"] == INCOMING
