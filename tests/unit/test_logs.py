"""The services' JSON log lines (smsgw.logs): one object a line, with the trace and the message a
line is about, and the traceback of an exception."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from smsgw.logs import JsonLines
from smsgw.telemetry import message_scope, message_span


def record(message: str, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("smsgw.routing", logging.WARNING, __file__, 1, message, args, exc_info)


def test_a_line_inside_a_message_span_names_the_message_and_its_trace():
    # Unsampled (no trace file): spans record nothing, but their ids are real and travel on.
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    with message_span(tracer, "routing.decide", "msg-42") as span:
        line = json.loads(JsonLines("routing").format(record("carrier %s unavailable", "smsc-1")))
        ids = span.get_span_context()
    assert line["message"] == "carrier smsc-1 unavailable"
    assert (line["level"], line["logger"], line["service"]) == ("WARNING", "smsgw.routing", "routing")
    assert line["message_id"] == "msg-42"
    assert line["trace_id"] == format(ids.trace_id, "032x") and line["span_id"] == format(ids.span_id, "016x")
    assert line["time"].endswith("+00:00")


def test_outside_a_message_there_is_no_message_id_and_an_exception_keeps_its_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        line = json.loads(JsonLines("intake").format(record("failed", exc_info=sys.exc_info())))
    assert "message_id" not in line and "trace_id" not in line
    assert "ValueError: boom" in line["exception"] and "\n" not in json.dumps(line).strip("\n")


READ = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def test_a_line_inside_a_message_scope_without_spans_takes_the_ids_of_the_context_read():
    """carrier-adapter's dispatch: with spans unrecorded no span is made, and the log line leads to
    the last span of the message that exists (the one whose context the command carried)."""
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    with message_scope(tracer, "carrier_adapter.dispatch", "msg-7", READ) as span:
        line = json.loads(JsonLines("carrier-adapter").format(record("submit refused")))
        assert not span.get_span_context().is_valid  # no span was made
    assert line["message_id"] == "msg-7"
    assert (line["trace_id"], line["span_id"]) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    after = json.loads(JsonLines("carrier-adapter").format(record("idle")))
    assert "message_id" not in after and "trace_id" not in after


def test_a_message_scope_with_no_or_a_malformed_context_names_the_message_only():
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    for carrier in ({}, {"traceparent": "00-short-b7ad6b7169203331-01"}, {"tracestate": "a=b"}):
        with message_scope(tracer, "carrier_adapter.dispatch", "msg-8", carrier):
            line = json.loads(JsonLines("carrier-adapter").format(record("x")))
        assert line["message_id"] == "msg-8" and "trace_id" not in line and "span_id" not in line
