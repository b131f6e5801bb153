"""OpenTelemetry spans along the one path (the only module that imports
``opentelemetry``; an import-linter contract).

Off and free by default: without an exporter every helper here returns a
null context and nothing of OpenTelemetry is imported. With
``OTEL_EXPORTER_OTLP_ENDPOINT`` set (read by Settings), :func:`configure`
installs an SDK tracer provider exporting over OTLP/HTTP in batches.

A signal's handling is one trace: the root span ``remediation`` continues
the incoming event's ``traceparent`` (W3C trace context) and has children
``remediation.route``, ``remediation.plan``, ``remediation.claim``,
``remediation.decide``, ``remediation.credentials``, one
``remediation.step`` per executed step and ``remediation.verify``. The
outcome (and so the outcome event) carries the root span's
``traceparent``, so what follows the outcome joins the same trace.
Attributes name the function, action, target and step; never a credential.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from .model import Outcome, Step, StepResult

_lock = threading.Lock()
_tracer: Any = None  # an opentelemetry Tracer once configured; None: off
_provider: Any = None


def enabled() -> bool:
    return _tracer is not None


def configure(endpoint: str, *, service: str = "inference-remediation") -> None:
    """Export spans to the OTLP/HTTP ``endpoint`` (once per process; an empty
    endpoint leaves tracing off)."""
    global _tracer, _provider
    if not endpoint:
        return
    with _lock:
        if _tracer is not None:
            return
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        base = endpoint.rstrip("/")
        url = base if base.endswith("/v1/traces") else f"{base}/v1/traces"
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url,
                                                                        timeout=5)))
        _provider, _tracer = provider, provider.get_tracer("remediation")


def use_provider(provider: Any) -> None:
    """Trace with ``provider`` (an SDK TracerProvider; tests pass one with an
    in-memory exporter); None turns tracing off again."""
    global _tracer, _provider
    with _lock:
        _provider = provider
        _tracer = provider.get_tracer("remediation") if provider is not None else None


def _attrs(values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"remediation.{k}": (v if isinstance(v, (bool, int, float)) else str(v))
            for k, v in values.items() if v not in (None, "")}


@contextlib.contextmanager
def root(traceparent: str, tracestate: str = "", **attributes: Any) -> Iterator[Any]:
    """The root span of one signal's handling, continuing ``traceparent``."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": traceparent} if traceparent else {}
    if traceparent and tracestate:
        carrier["tracestate"] = tracestate
    parent = TraceContextTextMapPropagator().extract(carrier)
    with tracer.start_as_current_span("remediation", context=parent,
                                      attributes=_attrs(attributes)) as span:
        yield span


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A child span of the current one (``remediation.<name>``)."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(f"remediation.{name}",
                                      attributes=_attrs(attributes)) as current:
        yield current


def finish(root_span: Any, outcome: Outcome) -> Outcome:
    """Record the outcome on the root span; the outcome then carries the root
    span's ``traceparent`` (unchanged when tracing is off)."""
    if root_span is None:
        return outcome
    root_span.set_attributes(_attrs({"status": outcome.status.value,
                                     "function": outcome.function,
                                     "action": outcome.plan.action if outcome.plan else "",
                                     "target": str(outcome.target or "")}))
    ctx = root_span.get_span_context()
    if not ctx.is_valid:
        return outcome
    traceparent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
    return replace(outcome, traceparent=traceparent)


class TracedWriter:
    """A cluster writer whose every applied step is a ``remediation.step`` span."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def apply(self, step: Step, *, dry_run: bool) -> StepResult:
        with span("step", verb=step.verb, kind=step.kind, namespace=step.namespace,
                  object=step.name, dry_run=dry_run) as current:
            result: StepResult = self._writer.apply(step, dry_run=dry_run)
            if current is not None:
                current.set_attributes(_attrs({"code": result.code, "ok": result.ok}))
            return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


def traced(writer: Any) -> Any:
    """``writer`` with step spans when tracing is on; itself otherwise."""
    return TracedWriter(writer) if _tracer is not None else writer
