"""Outcome -> reply CloudEvent."""

from __future__ import annotations

from remediation.events.binding import event_dict, parse_http, to_binary
from remediation.events.outcome import outcome_event
from remediation.model import (
    INCOMING_TYPES,
    TYPE_OUTCOME,
    ObjectRef,
    Outcome,
    Plan,
    Status,
    Step,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def outcome(status=Status.APPLIED, function="restart-engine", **kw):
    target = ObjectRef("Deployment", "llm-serving", "vllm-llama-7b")
    plan = Plan("restart-engine", "rollout-restart", target,
                (Step("patch", "Deployment", "llm-serving", "vllm-llama-7b", "hung"),), key="k")
    base = {"status": status, "function": function, "event_id": "abc",
            "event_source": "/alertmanager/x", "target": target, "plan": plan,
            "traceparent": TRACEPARENT, "tracestate": "v=1"}
    base.update(kw)
    return Outcome(**base)


def test_outcome_event_attributes_and_data():
    o = outcome()
    event = outcome_event(o)
    assert event.get_type() == TYPE_OUTCOME and TYPE_OUTCOME not in INCOMING_TYPES
    assert event.get_source() == "/remediation/restart-engine"
    assert event.get_subject() == "Deployment/llm-serving/vllm-llama-7b"
    assert event.get_extension("remediationstatus") == "applied"
    assert event.get_extension("traceparent") == TRACEPARENT
    assert event.get_extension("tracestate") == "v=1"
    assert event.get_extension("remediation") is None  # never matches a Trigger
    assert event.get_time() is None
    assert event.get_data() == o.as_dict()
    assert event.get_datacontenttype() == "application/json"


def test_outcome_id_is_deterministic_per_event_and_status():
    assert outcome_event(outcome()).get_id() == outcome_event(outcome()).get_id()
    assert event_dict(outcome_event(outcome())) == event_dict(outcome_event(outcome()))
    assert outcome_event(outcome()).get_id() != outcome_event(
        outcome(status=Status.DUPLICATE)).get_id()
    assert outcome_event(outcome()).get_id() != outcome_event(outcome(event_id="other")).get_id()


def test_router_source_custom_prefix_and_no_trace():
    o = outcome(status=Status.SKIPPED, function="", target=None, plan=None, traceparent="",
                tracestate="")
    event = outcome_event(o, source_prefix="/remediation/staging")
    assert event.get_source() == "/remediation/staging/router"
    assert event.get_subject() is None
    assert event.get_extension("traceparent") is None
    assert event.get_extension("remediationstatus") == "skipped"


def test_outcome_event_round_trips_through_binary_mode():
    event = outcome_event(outcome(status=Status.REJECTED, reasons=("bad label",)))
    headers, body = to_binary(event)
    assert headers["ce-remediationstatus"] == "rejected"
    assert "ce-remediation" not in headers
    [back] = parse_http(headers, body)
    assert event_dict(back) == event_dict(event)
