"""Which function does each event reach? Evaluate the rendered Triggers the
way the Broker does.

The evaluator mirrors knative/eventing ``pkg/eventfilter``:

- ``spec.filters`` (when non-empty) wins over ``spec.filter``; the list is
  ANDed. Each expression has exactly one dialect: ``exact``, ``prefix``,
  ``suffix`` (one attribute each, non-empty name and value), ``all``, ``any``,
  ``not`` or ``cesql`` (CESQL is not evaluated here: :class:`Unsupported`).
- Results are three-valued (pass / fail / no filter): an expression that
  cannot be materialised (e.g. an empty value) is *skipped*, not failed, and
  an event is delivered unless the result is *fail*. ``any`` ORs, skipping
  "no filter"; ``all`` fails on the first failure, else yields the last
  result; ``not`` flips pass/fail and keeps "no filter".
- ``filter.attributes`` (legacy): every listed attribute must be present
  (context attributes always are, possibly empty) and equal; the value ""
  matches any value.
- Attribute lookup: the context attributes (specversion, type, source,
  subject, id, time, schemaurl/dataschema, datacontenttype) and extensions.

Then, against every event type the project emits (incoming types x every
``remediation`` value, and every outgoing/reply type with any extension
values, plus events built by the project's own adapters and outcome builder):
each incoming (type, remediation) reaches exactly the documented function,
and no reply ever matches a Trigger (loop safety). The same holds, as far as
it can, on a Broker that ignores ``filters`` and applies only the Triggers'
legacy ``filter`` fallback.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from remediation import model
from remediation.actions.catalogue import CATALOGUE
from remediation.model import (
    INCOMING_TYPES,
    TYPE_ALERT_FIRING,
    TYPE_ALERT_RESOLVED,
    TYPE_APPROVAL_GRANTED,
    TYPE_OUTCOME,
    TYPE_PREFIX,
    TYPE_SPLUNK_RESULT,
)

from tests.test_manifests import objects, render_all

PASS, FAIL, NO_FILTER = "pass", "fail", "no_filter"
ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9]*$")  # the webhook's validAttributeName
DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not", "cesql")

#: every remediation the catalogue declares (each has its generated Service and Triggers)
REMEDIATIONS = tuple(CATALOGUE)
FUNCTIONS = REMEDIATIONS + ("webhook-adapter", "dead-letter")
REPLY_PREFIX = f"{TYPE_PREFIX}.remediation."
#: Outgoing types: what the model defines under the reply prefix, plus those
#: announced (approval requests, verification), plus what func's Python
#: middleware replies with when a handler raises.
OUTGOING_TYPES = tuple(sorted(
    {v for k, v in vars(model).items()
     if k.startswith("TYPE_") and isinstance(v, str) and v.startswith(REPLY_PREFIX)}
    | {TYPE_OUTCOME,
       f"{REPLY_PREFIX}approval.requested.v1",
       f"{REPLY_PREFIX}approval-requested.v1",
       f"{REPLY_PREFIX}verified.v1",
       f"{REPLY_PREFIX}unknown.v99",
       "dev.functions.error"}))

#: The documented routing table: (type, remediation) -> function. Anything
#: not listed reaches no function.
EXPECTED: dict[tuple[str, str], str] = {
    **{(TYPE_ALERT_FIRING, fn): fn for fn in REMEDIATIONS},
    **{(TYPE_SPLUNK_RESULT, fn): fn for fn in REMEDIATIONS},
    (TYPE_ALERT_RESOLVED, "drain-gpu-node"): "drain-gpu-node",
    **{(TYPE_APPROVAL_GRANTED, fn): fn for fn in REMEDIATIONS},
}


# -- the evaluator ---------------------------------------------------------

class Unsupported(Exception):
    """A filter dialect this evaluator does not implement (CESQL)."""


def _and(x: str, y: str) -> str:
    if x == NO_FILTER:
        return y
    if y == NO_FILTER:
        return x
    return PASS if x == PASS and y == PASS else FAIL


def _or(x: str, y: str) -> str:
    if x == NO_FILTER:
        return y
    if y == NO_FILTER:
        return x
    return PASS if PASS in (x, y) else FAIL


def _lookup(event: Mapping[str, str], name: str) -> tuple[bool, str]:
    """(present, value). Context attributes are always present (maybe "")."""
    context = ("specversion", "type", "source", "subject", "id", "time",
               "datacontenttype")
    if name in context:
        return True, str(event.get(name, ""))
    if name in ("schemaurl", "dataschema"):
        return True, str(event.get("dataschema", ""))
    if name in event:
        return True, str(event[name])
    return False, ""


def _match_all(attrs: Mapping[str, str], event: Mapping[str, str], test: Any) -> str:
    for name, wanted in attrs.items():
        present, value = _lookup(event, name)
        if not present or not test(value, wanted):
            return FAIL
    return PASS


@dataclass
class Filter:
    """A materialised expression (None-like results are dropped by callers)."""

    kind: str
    attrs: Mapping[str, str] = field(default_factory=dict)
    children: list[Filter] = field(default_factory=list)

    def __call__(self, event: Mapping[str, str]) -> str:
        if self.kind == "exact":
            return _match_all(self.attrs, event, lambda v, w: v == w)
        if self.kind == "prefix":
            return _match_all(self.attrs, event, lambda v, w: v.startswith(w))
        if self.kind == "suffix":
            return _match_all(self.attrs, event, lambda v, w: v.endswith(w))
        if self.kind == "all":
            if len(self.children) == 1:
                return self.children[0](event)
            result = NO_FILTER
            for child in self.children:
                result = child(event)
                if result == FAIL:
                    return FAIL
            return result
        if self.kind == "any":
            result = NO_FILTER
            for child in self.children:
                result = _or(result, child(event))
                if result == PASS:
                    return PASS
            return result
        if self.kind == "not":
            if not self.children:
                return NO_FILTER
            inner = self.children[0](event)
            return {PASS: FAIL, FAIL: PASS}.get(inner, NO_FILTER)
        raise AssertionError(self.kind)


def materialise(expr: Mapping[str, Any]) -> Filter | None:
    """One SubscriptionsAPIFilter -> a Filter, or None when Knative would skip it.
    The first non-empty dialect wins, in Knative's order."""
    for kind in ("exact", "prefix", "suffix"):
        attrs = expr.get(kind)
        if attrs:
            if any(not k or not v for k, v in attrs.items()):
                return None  # NewExactFilter & co. refuse empty names/values
            return Filter(kind, {str(k): str(v) for k, v in attrs.items()})
    if expr.get("all"):
        return Filter("all", children=materialise_list(expr["all"]))
    if expr.get("any"):
        return Filter("any", children=materialise_list(expr["any"]))
    if expr.get("not") is not None:
        inner = materialise(expr["not"])
        return Filter("not", children=[inner] if inner else [])
    if expr.get("cesql"):
        raise Unsupported(f"CESQL expressions are not evaluated: {expr['cesql']!r}")
    return None


def materialise_list(exprs: Iterable[Mapping[str, Any]]) -> list[Filter]:
    return [f for f in (materialise(e) for e in exprs) if f is not None]


def trigger_result(spec: Mapping[str, Any], event: Mapping[str, str]) -> str:
    """The Broker's verdict for one Trigger spec and one event."""
    if spec.get("filters"):
        return Filter("all", children=materialise_list(spec["filters"]))(event)
    legacy = (spec.get("filter") or {}).get("attributes") or {}
    if legacy:
        for name, wanted in legacy.items():
            present, value = _lookup(event, name)
            if not present or (wanted != "" and wanted != value):
                return FAIL
        return PASS
    return NO_FILTER


def delivers(spec: Mapping[str, Any], event: Mapping[str, str]) -> bool:
    return trigger_result(spec, event) != FAIL


def validation_errors(spec: Mapping[str, Any]) -> list[str]:
    """Knative's admission rules for filters, plus this project's: no filter
    may be silently skipped (empty dialect or empty value)."""
    errors: list[str] = []

    def check(expr: Any, where: str) -> None:
        if not isinstance(expr, Mapping):
            errors.append(f"{where}: not an object")
            return
        unknown = set(expr) - set(DIALECTS)
        if unknown:
            errors.append(f"{where}: unknown dialects {sorted(unknown)}")
        present = [d for d in DIALECTS if expr.get(d) not in (None, "", [], {})]
        if len(present) != 1:
            errors.append(f"{where}: needs exactly one dialect, has {present}")
        for kind in ("exact", "prefix", "suffix"):
            attrs = expr.get(kind)
            if attrs is None:
                continue
            if len(attrs) != 1:
                errors.append(f"{where}.{kind}: only one key-value allowed, has {len(attrs)}")
            for name, value in attrs.items():
                if not ATTRIBUTE_NAME.match(str(name)):
                    errors.append(f"{where}.{kind}: invalid attribute name {name!r}")
                if not isinstance(value, str) or not value:
                    errors.append(f"{where}.{kind}.{name}: empty or non-string value")
        for kind in ("all", "any"):
            for i, child in enumerate(expr.get(kind) or []):
                check(child, f"{where}.{kind}[{i}]")
        if expr.get("not") is not None:
            check(expr["not"], f"{where}.not")

    for i, expr in enumerate(spec.get("filters") or []):
        check(expr, f"filters[{i}]")
    for name, value in ((spec.get("filter") or {}).get("attributes") or {}).items():
        if not ATTRIBUTE_NAME.match(str(name)):
            errors.append(f"filter.attributes: invalid attribute name {name!r}")
        if not isinstance(value, str):
            errors.append(f"filter.attributes.{name}: not a string")
    return errors


# -- the evaluator's own behaviour ----------------------------------------

def _event(**attrs: str) -> dict[str, str]:
    base = {"specversion": "1.0", "id": "1", "source": "/test", "type": "t.v1"}
    base.update(attrs)
    return base


def test_evaluator_dialects() -> None:
    ev = _event(type="io.x.alert.firing.v1", remediation="restart-engine")
    assert trigger_result({"filters": [{"exact": {"type": "io.x.alert.firing.v1"}}]}, ev) == PASS
    assert trigger_result({"filters": [{"exact": {"type": "io.x.alert"}}]}, ev) == FAIL
    assert trigger_result({"filters": [{"prefix": {"type": "io.x."}}]}, ev) == PASS
    assert trigger_result({"filters": [{"suffix": {"type": ".v2"}}]}, ev) == FAIL
    assert trigger_result({"filters": [{"exact": {"missing": "x"}}]}, ev) == FAIL
    assert trigger_result({"filters": [{"not": {"exact": {"missing": "x"}}}]}, ev) == PASS
    assert trigger_result({"filters": [{"any": [{"exact": {"type": "a"}},
                                                {"exact": {"remediation": "restart-engine"}}]}]},
                          ev) == PASS
    assert trigger_result({"filters": [{"all": [{"prefix": {"type": "io."}},
                                                {"exact": {"remediation": "scale-engine"}}]}]},
                          ev) == FAIL
    # Filters are ANDed; an unmaterialisable expression is skipped, not failed.
    assert trigger_result({"filters": [{"exact": {"type": ""}},
                                       {"prefix": {"type": "io.x"}}]}, ev) == PASS
    assert delivers({"filters": [{"exact": {"type": ""}}]}, ev)
    # No filter at all: everything is delivered.
    assert delivers({}, ev) and delivers({"filters": []}, ev)
    # `filters` wins over the legacy `filter`.
    assert delivers({"filters": [{"prefix": {"type": "io."}}],
                     "filter": {"attributes": {"type": "nope"}}}, ev)
    with pytest.raises(Unsupported):
        trigger_result({"filters": [{"cesql": "type = 'x'"}]}, ev)


def test_evaluator_legacy_attributes() -> None:
    ev = _event(type="a.v1", remediation="scale-engine")
    assert delivers({"filter": {"attributes": {"type": "a.v1", "remediation": "scale-engine"}}},
                    ev)
    assert not delivers({"filter": {"attributes": {"type": "a.v1", "remediation": "x"}}}, ev)
    # "" matches any value of a present attribute; context attributes are
    # always present, extensions only when set.
    assert delivers({"filter": {"attributes": {"remediation": ""}}}, ev)
    assert delivers({"filter": {"attributes": {"subject": ""}}}, ev)
    assert not delivers({"filter": {"attributes": {"severity": ""}}}, ev)


def test_validation_mirrors_the_webhook() -> None:
    assert validation_errors({"filters": [{"exact": {"type": "a", "remediation": "b"}}]})
    assert validation_errors({"filters": [{"exact": {"type": "a"}, "prefix": {"type": "a"}}]})
    assert validation_errors({"filters": [{"exact": {"Type": "a"}}]})
    assert validation_errors({"filters": [{"exact": {"type": ""}}]})
    assert validation_errors({"filters": [{}]})
    assert not validation_errors({"filters": [{"any": [{"exact": {"type": "a"}}]},
                                              {"not": {"suffix": {"source": "x"}}}]})


# -- the rendered Triggers -------------------------------------------------

def _triggers() -> dict[str, list[dict[str, Any]]]:
    return {name: objects(docs, "Trigger", "eventing.knative.dev")
            for name, docs in render_all().items()}


def _routes(triggers: list[dict[str, Any]], event: Mapping[str, str], *,
            legacy: bool = False) -> set[str]:
    """Subscribers the event reaches. ``legacy``: as a Broker without
    ``filters`` support evaluates the Triggers (it ignores that field)."""
    out = set()
    for t in triggers:
        spec = t["spec"]
        if legacy:
            spec = {k: v for k, v in spec.items() if k != "filters"}
        if delivers(spec, event):
            out.add(t["spec"]["subscriber"]["ref"]["name"])
    return out


def _incoming_event(event_type: str, remediation: str | None) -> dict[str, str]:
    ev = _event(type=event_type, source="/alertmanager/inference-remediation",
                subject="VLLMEngineHung", datacontenttype="application/json",
                time="2026-11-01T10:00:00Z", alertname="VLLMEngineHung", severity="critical",
                namespace="llm-serving", cluster="gpu-east-1")
    if event_type == TYPE_SPLUNK_RESULT:
        ev["source"] = "/splunk/search"
    if remediation is not None:
        ev["remediation"] = remediation
    return ev


def test_rendered_filters_are_valid_and_evaluable() -> None:
    for name, triggers in _triggers().items():
        assert triggers, name
        for t in triggers:
            errors = validation_errors(t["spec"])
            assert not errors, f"{name}: Trigger {t['metadata']['name']}: {errors}"
            # No Trigger may deliver everything (an empty or skipped filter).
            assert trigger_result(t["spec"], _event()) == FAIL, t["metadata"]["name"]


def test_expected_table_covers_every_incoming_type() -> None:
    assert {t for t, _ in EXPECTED} == set(INCOMING_TYPES)
    assert not set(OUTGOING_TYPES) & set(INCOMING_TYPES)
    assert all(t.startswith(REPLY_PREFIX) or t == "dev.functions.error" for t in OUTGOING_TYPES)


def test_each_incoming_event_reaches_exactly_the_documented_function() -> None:
    remediation_values: list[str | None] = [*FUNCTIONS, None, "", "unknown-function",
                                            "Restart-Engine", "restart-engine "]
    for name, triggers in _triggers().items():
        problems = []
        for event_type, remediation in itertools.product(INCOMING_TYPES, remediation_values):
            got = _routes(triggers, _incoming_event(event_type, remediation))
            want = {EXPECTED[(event_type, remediation)]} \
                if (event_type, remediation) in EXPECTED else set()
            if got != want:
                problems.append(f"({event_type}, remediation={remediation!r}) -> "
                                f"{sorted(got)}, expected {sorted(want)}")
        assert not problems, f"{name}:\n" + "\n".join(problems)


def test_brokers_without_filters_support_still_route_safely() -> None:
    """On a Broker that ignores `filters`, the legacy `filter` fallback still
    delivers every documented route, only to the function the event names."""
    remediation_values: list[str | None] = [*FUNCTIONS, None, "unknown-function"]
    for name, triggers in _triggers().items():
        problems = []
        for event_type, remediation in itertools.product(INCOMING_TYPES, remediation_values):
            got = _routes(triggers, _incoming_event(event_type, remediation), legacy=True)
            want = EXPECTED.get((event_type, remediation))
            if (want and want not in got) or not got <= {remediation}:
                problems.append(f"({event_type}, remediation={remediation!r}) -> {sorted(got)}")
        assert not problems, f"{name} (legacy filter):\n" + "\n".join(problems)


def test_no_reply_matches_any_trigger() -> None:
    """Loop safety: a function's reply goes back into the Broker and must
    never be delivered again, whatever extensions it carries."""
    extension_sets: list[dict[str, str]] = [{}]
    for fn in (*FUNCTIONS, ""):
        extension_sets.append({"remediation": fn})
    extension_sets += [
        {"remediationstatus": s.value} for s in model.Status
    ] + [{"remediation": "restart-engine", "alertname": "VLLMEngineHung",
          "knativeerrorcode": "500", "knativebrokerttl": "254"}]
    sources = ["/remediation/restart-engine", "/remediation/router",
               "/alertmanager/inference-remediation", "/splunk/search"]
    for name, triggers in _triggers().items():
        leaks = []
        for event_type, ext, source in itertools.product(OUTGOING_TYPES, extension_sets, sources):
            ev = _event(type=event_type, source=source, subject="Deployment/llm/vllm", **ext)
            got = _routes(triggers, ev)
            if got:
                leaks.append(f"{event_type} {ext} from {source} -> {sorted(got)}")
            # Replies carry no `remediation` extension (events/outcome.py), so
            # even a Broker applying only the legacy fallback cannot loop.
            if "remediation" not in ext and _routes(triggers, ev, legacy=True):
                leaks.append(f"(legacy filter) {event_type} {ext} from {source}")
        assert not leaks, f"{name}: replies would loop:\n" + "\n".join(leaks)


# -- events built by the project's own code --------------------------------

def _attrs(event: Any) -> dict[str, str]:
    out = {}
    for key, value in event.get_attributes().items():
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        out[key] = str(value)
    return out


def test_adapter_events_route_as_the_routes_table_says() -> None:
    from remediation.events.alertmanager import alertmanager_to_events
    from remediation.events.splunk import splunk_to_event
    from remediation.routing import load_routes

    routes = load_routes()

    def alert_route(name: str, labels: Any) -> str:
        return routes.function_for(name)

    def search_route(name: str, labels: Any) -> str:
        return routes.function_for(name, splunk=True)

    cases: list[tuple[Any, str]] = []
    for alertname, fn in routes.alerts.items():
        for status in ("firing", "resolved"):
            payload = {
                "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": status,
                "receiver": "inference-remediation", "groupLabels": {}, "commonLabels": {},
                "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
                "alerts": [{
                    "status": status,
                    "labels": {"alertname": alertname, "namespace": "llm-serving",
                               "pod": "vllm-0", "node": "gpu-node-7", "severity": "critical"},
                    "annotations": {}, "startsAt": "2026-11-01T10:00:00Z",
                    "endsAt": "2026-11-01T10:05:00Z" if status == "resolved"
                    else "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus/graph", "fingerprint": "c6a2f2b4e0a1d3f9"}],
            }
            for event in alertmanager_to_events(payload, routes=alert_route):
                want = fn if (status == "firing" or fn == "drain-gpu-node") else ""
                cases.append((event, want))
    for search, fn in routes.searches.items():
        payload = {"result": {"host": "gpu-node-7", "namespace": "llm-serving", "pod": "vllm-0"},
                   "sid": "scheduler__admin__search__RMD5_at_1762000000_42",
                   "results_link": "https://splunk.example:8000/app/search/@go?sid=x",
                   "search_name": search, "owner": "admin", "app": "search"}
        cases.append((splunk_to_event(payload, routes=search_route), fn))
    assert cases
    for name, triggers in _triggers().items():
        problems = []
        for event, want in cases:
            attrs = _attrs(event)
            got = _routes(triggers, attrs)
            if got != ({want} if want else set()):
                problems.append(f"{attrs.get('type')} {attrs.get('subject')} "
                                f"remediation={attrs.get('remediation')!r} -> {sorted(got)}, "
                                f"expected {want or 'nothing'}")
        assert not problems, f"{name}:\n" + "\n".join(problems)


def test_outcome_events_built_by_the_project_match_no_trigger() -> None:
    from remediation.events.outcome import outcome_event
    from remediation.model import ObjectRef, Outcome, Status

    events = [
        outcome_event(Outcome(status=status, function=fn, event_id="abc",
                              event_source="/alertmanager/inference-remediation",
                              target=ObjectRef("Deployment", "llm-serving", "vllm"),
                              traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
        for status in Status for fn in (*FUNCTIONS, "")
    ]
    for name, triggers in _triggers().items():
        for event in events:
            attrs = _attrs(event)
            assert attrs["type"].startswith(REPLY_PREFIX)
            assert not _routes(triggers, attrs), f"{name}: reply {attrs} matches a Trigger"
            assert not _routes(triggers, attrs, legacy=True), f"{name}: {attrs} (legacy)"


def test_catalogue_agrees_on_resolved_alerts() -> None:
    """A function gets resolved alerts routed exactly when it handles them."""
    from remediation.actions.catalogue import CATALOGUE

    routed_resolved = {fn for (t, fn) in EXPECTED if t == TYPE_ALERT_RESOLVED}
    for name, remediation in CATALOGUE.items():
        assert remediation.handles_resolved == (name in routed_resolved), name


def routing_table() -> list[tuple[str, str, str]]:
    """(type, remediation, function) rows, for documentation."""
    return sorted((t, r, fn) for (t, r), fn in EXPECTED.items())
