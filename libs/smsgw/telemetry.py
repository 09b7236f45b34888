"""OpenTelemetry: one trace per message, across gRPC and Kafka.

The W3C trace context travels in the event envelope (and Kafka headers), so a
consumer continues the producer's trace instead of starting its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
#: The carrier keys of the W3C context (traceparent, tracestate): what a hop passes on.
_W3C_FIELDS = frozenset(_propagator.fields)


def setup_tracing(service: str, trace_file: str = "") -> TracerProvider:
    provider = make_provider(service, trace_file)
    trace.set_tracer_provider(provider)
    return provider


def make_provider(service: str, trace_file: str = "") -> TracerProvider:
    # With nowhere to export spans to, recording them is pure cost: 32 µs per span against 14
    # unsampled (each service makes one or two per message). Unsampled spans still carry ids,
    # so the W3C context still travels from service to service.
    sampler = ParentBased(ALWAYS_ON) if trace_file else ALWAYS_OFF
    provider = TracerProvider(resource=Resource.create({"service.name": service}), sampler=sampler)
    if trace_file:
        out = open(trace_file, "a", buffering=1)  # noqa: SIM115 - open for the process's life; line-buffered: spans survive a kill -9
        provider.add_span_processor(
            SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n"))
        )
    return provider


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


#: The message the current task is working on: logs written meanwhile carry its id (smsgw.logs).
_message_id: ContextVar[str] = ContextVar("smsgw_message_id", default="")


@contextmanager
def message_span(
    tracer: trace.Tracer,
    name: str,
    message_id: str,
    *,
    context: otel_context.Context | None = None,
    attributes: Mapping[str, str] | None = None,
) -> Iterator[trace.Span]:
    """A span of work on one message; the logs written inside it name the message (and the trace)."""
    token = _message_id.set(message_id)
    try:
        with tracer.start_as_current_span(
            name, context=context, attributes={"smsgw.message_id": message_id, **(attributes or {})}
        ) as span:
            yield span
    finally:
        _message_id.reset(token)


#: The W3C context of the message being worked on when no span is made for the work (see
#: `message_scope`): the logs take their trace and span ids from it.
_read_context: ContextVar[Mapping[str, str] | None] = ContextVar("smsgw_read_context", default=None)


@contextmanager
def message_scope(
    tracer: trace.Tracer,
    name: str,
    message_id: str,
    carrier: Mapping[str, str],
    *,
    attributes: Mapping[str, str] | None = None,
) -> Iterator[trace.Span]:
    """Work on a message read with the W3C context `carrier`: a `message_span`, child of that
    context, when spans are recorded. When they are not, no span is made (the extraction, the
    unrecorded span and its activation took 27-49 µs a dispatch, against 3.5-4.4 for this scope:
    docs/benchmarks.md, stop 44): the logs written inside name the message, and take the trace and
    span ids from `carrier` (`log_trace_ids`), the last span of the message that exists."""
    if spans_recorded(tracer):
        with message_span(tracer, name, message_id, context=context_from(carrier), attributes=attributes) as span:
            yield span
        return
    token, read = _message_id.set(message_id), _read_context.set(carrier)
    try:
        yield trace.INVALID_SPAN
    finally:
        _read_context.reset(read)
        _message_id.reset(token)


def log_trace_ids() -> tuple[str, str] | None:
    """(trace id, span id), in hex, for a log line written now: the current span's, or the read
    context's of a `message_scope` without a span; None outside both."""
    span = trace.get_current_span().get_span_context()
    carrier = _read_context.get()
    if not span.is_valid and carrier:
        # Parsed only when a line is written, by the propagator the hops use (it refuses what the
        # W3C format does not allow), so a dispatch that logs nothing pays nothing.
        span = trace.get_current_span(context_from(carrier)).get_span_context()
    if not span.is_valid:
        return None
    return format(span.trace_id, "032x"), format(span.span_id, "016x")


def spans_recorded(tracer: trace.Tracer) -> bool:
    """Whether `tracer` records spans (its provider has a trace file: `make_provider`). Else each
    span is made, carried for a moment and dropped, recorded nowhere."""
    # An SDK tracer knows its sampler; a proxy (a tracer taken before the provider was set, as
    # the services' module-level ones are) stands for the process's provider.
    sampler = getattr(tracer, "sampler", None) or getattr(trace.get_tracer_provider(), "sampler", None)
    return sampler is not None and sampler is not ALWAYS_OFF


def next_hop_context(tracer: trace.Tracer, name: str, message_id: str, carrier: Mapping[str, str]) -> dict[str, str]:
    """The W3C context for what a hop writes about a message, from the context it read.

    Recorded: a span of this hop, child of the one it read, and its context. Not recorded: the
    context it read, as it is. The trace id travels either way; what is saved is the extraction,
    the unrecorded span and the injection (~10 % of routing's CPU per message, docs/benchmarks.md,
    stop 43), and the next hop's span is then a child of the last span that exists."""
    if not spans_recorded(tracer):
        return {key: value for key, value in carrier.items() if key in _W3C_FIELDS}
    with message_span(tracer, name, message_id, context=context_from(carrier)):
        return current_context_carrier()


def start_message_span(tracer: trace.Tracer, name: str, message_id: str) -> tuple[trace.Span, dict[str, str]]:
    """A span of work on one message, started but not made current (a batch has one per message and
    ends each when its outcome is known), and the W3C carrier of its context for the message's event."""
    span = tracer.start_span(name, attributes={"smsgw.message_id": message_id})
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return span, carrier


def current_message_id() -> str:
    return _message_id.get()


def current_context_carrier() -> dict[str, str]:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


def context_from(carrier: Mapping[str, str]) -> otel_context.Context:
    return _propagator.extract(dict(carrier))


def kafka_headers(carrier: Mapping[str, str]) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in carrier.items()]


def carrier_from_headers(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: v.decode() for k, v in (headers or ()) if k in ("traceparent", "tracestate")}
