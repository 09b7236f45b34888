"""Spans are recorded only where they can go somewhere; the trace context travels either way."""

from __future__ import annotations

import json

from smsgw.telemetry import context_from, log_trace_ids, make_provider, message_scope, next_hop_context, spans_recorded


def _carrier_of(tracer, name: str, parent=None) -> tuple[dict[str, str], bool]:
    from opentelemetry.trace.propagation.tracecontext import (
        TraceContextTextMapPropagator,
    )

    with tracer.start_as_current_span(name, context=parent) as span:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        return carrier, span.is_recording()


def test_without_a_trace_file_spans_are_not_recorded_but_the_context_still_travels():
    upstream = make_provider("intake").get_tracer("t")
    downstream = make_provider("routing").get_tracer("t")
    carrier, recording = _carrier_of(upstream, "intake.accept")
    assert not recording
    trace_id = carrier["traceparent"].split("-")[1]
    assert trace_id != "0" * 32  # a real trace id, so a later service with an exporter can join it
    child, _ = _carrier_of(downstream, "routing.decide", context_from(carrier))
    assert child["traceparent"].split("-")[1] == trace_id


def test_with_a_trace_file_every_span_is_written(tmp_path):
    path = tmp_path / "spans.jsonl"
    provider = make_provider("intake", str(path))
    carrier, recording = _carrier_of(provider.get_tracer("t"), "intake.accept")
    assert recording
    provider.shutdown()
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    assert [s["name"] for s in spans] == ["intake.accept"]
    assert spans[0]["context"]["trace_id"].removeprefix("0x") == carrier["traceparent"].split("-")[1]


def test_a_hop_passes_the_context_it_read_on_when_no_span_is_recorded():
    """routing and receipt: with no trace file, the next event carries the context the hop read
    (the same trace, no span made and dropped); extra keys of the carrier are not copied."""
    upstream, _ = _carrier_of(make_provider("intake").get_tracer("t"), "intake.accept")
    tracer = make_provider("routing").get_tracer("t")
    assert not spans_recorded(tracer)
    read = {**upstream, "baggage": "x=1"}
    assert next_hop_context(tracer, "routing.decide", "m1", read) == upstream
    assert next_hop_context(tracer, "routing.decide", "m1", {}) == {}


def test_a_hop_writes_its_own_span_as_the_next_parent_when_spans_are_recorded(tmp_path):
    path = tmp_path / "spans.jsonl"
    upstream, _ = _carrier_of(make_provider("intake", str(tmp_path / "intake.jsonl")).get_tracer("t"), "intake.accept")
    provider = make_provider("routing", str(path))
    tracer = provider.get_tracer("t")
    assert spans_recorded(tracer)
    child = next_hop_context(tracer, "routing.decide", "m1", upstream)
    provider.shutdown()
    _, trace_id, parent_span, _ = upstream["traceparent"].split("-")
    _, child_trace, child_span, flags = child["traceparent"].split("-")
    assert child_trace == trace_id and child_span != parent_span and int(flags, 16) & 1  # sampled
    (span,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert span["name"] == "routing.decide" and span["parent_id"].removeprefix("0x") == parent_span
    assert span["context"]["span_id"].removeprefix("0x") == child_span
    assert span["attributes"]["smsgw.message_id"] == "m1"


def test_a_message_scope_is_a_span_child_of_the_context_read_when_spans_are_recorded(tmp_path):
    path = tmp_path / "spans.jsonl"
    upstream, _ = _carrier_of(
        make_provider("routing", str(tmp_path / "routing.jsonl")).get_tracer("t"), "routing.decide"
    )
    provider = make_provider("carrier-adapter", str(path))
    with message_scope(
        provider.get_tracer("t"), "carrier_adapter.dispatch", "m1", upstream, attributes={"a": "b"}
    ) as span:
        assert span.is_recording()
        ids = log_trace_ids()
    provider.shutdown()
    _, trace_id, parent_span, _ = upstream["traceparent"].split("-")
    (written,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert written["name"] == "carrier_adapter.dispatch" and written["parent_id"].removeprefix("0x") == parent_span
    assert written["attributes"] == {"smsgw.message_id": "m1", "a": "b"}
    # The logs inside name this span, not the one read.
    assert ids == (trace_id, written["context"]["span_id"].removeprefix("0x"))
