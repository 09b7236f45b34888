"""Spans are recorded only where they can go somewhere; the trace context travels either way."""

from __future__ import annotations

import json

from smsgw.telemetry import context_from, make_provider


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
