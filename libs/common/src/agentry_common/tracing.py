"""OpenTelemetry traces: one trace per run, from the HTTP request through NATS to the runner and billing.

Off unless an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
with the SDK's other `OTEL_*` variables honoured). Off, the tracer is OpenTelemetry's no-op: FastAPI starts
no request span at all (its native tracing, which makes the HTTP server spans, waits for a provider), and a
consumer that continues an event's trace merely passes its context along.

Across NATS the W3C trace context travels in the event's own `trace` field (`Event.trace`), not in message
headers: it is part of the contract, survives a replay from the stream, and a platform team's consumer can
continue the same trace.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

log = logging.getLogger(__name__)

# A proxy: it becomes the SDK's tracer once `setup_tracing` installs a provider, and is a no-op until then.
tracer = trace.get_tracer("agentry")
_propagator = TraceContextTextMapPropagator()
_provider: object | None = None


def otlp_endpoint() -> str | None:
    """Where spans go, or None when tracing is off (the default)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return endpoint or None


def enabled() -> bool:
    return _provider is not None


def setup_tracing(service: str) -> bool:
    """Install the SDK with a batching OTLP/HTTP exporter when an endpoint is configured; True if it did."""
    global _provider
    endpoint = otlp_endpoint()
    if endpoint is None or _provider is not None:
        return _provider is not None
    # Imported here: a process with tracing off never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"agentry-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info("exporting traces over OTLP/HTTP", extra={"otlp_endpoint": _without_credentials(endpoint)})
    return True


def shutdown_tracing() -> None:
    """Export what is still buffered (a run's last spans) before the process exits."""
    global _provider
    provider, _provider = _provider, None
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()


def _without_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


def context_from(carrier: Mapping[str, str] | None) -> Context:
    """The context an event or request was sent from (`traceparent`, `tracestate`); empty if it has none."""
    return _propagator.extract(dict(carrier)) if carrier else Context()


def carrier(of: Span | None = None) -> dict[str, str]:
    """The trace context of span `of` (default: the current one) as W3C headers, for an event's `trace` field;
    {} when there is none."""
    out: dict[str, str] = {}
    if _provider is None and of is None and not trace.get_current_span().get_span_context().is_valid:
        return out  # tracing off, and no trace passing through
    _propagator.inject(out, context=trace.set_span_in_context(of) if of is not None else None)
    return out


def current_trace_id() -> str | None:
    """The current trace id (32 hex digits), if a trace is active here, for log lines."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Mapping[str, str] | None = None,
    attributes: Attributes = None,
) -> Iterator[Span]:
    """A span around a block, current inside it; `parent` continues the trace an event carries.

    A failure marks the span with the exception's type only: exception messages and tracebacks can hold
    SQL parameters or upstream text, and spans leave the process.
    """
    if _provider is None and not parent:  # tracing off and no trace to carry on: skip the API's no-op work
        yield trace.INVALID_SPAN
        return
    ctx = context_from(parent) if parent is not None else None
    with tracer.start_as_current_span(
        name, context=ctx, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as err:
            current.set_status(Status(StatusCode.ERROR, type(err).__name__))
            raise


def fail(current: Span, reason: str) -> None:
    """Mark a span failed for a reason of our own (an error code), not an exception."""
    current.set_status(Status(StatusCode.ERROR, reason))
