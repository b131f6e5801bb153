"""The remediation app with tracing on (an SDK tracer provider, spans batched
to an exporter that keeps nothing): the bench's measure of what tracing
costs on the deny path, beside the same app with tracing off."""

from collections.abc import Sequence
from typing import Any


def create_app() -> Any:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from remediation import tracing
    from remediation.app import create_app as remediation_app

    class Discard(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    tracing.use_provider(provider)
    return remediation_app()
