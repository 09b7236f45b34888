"""The services' JSON log lines (smsgw.logs): one object a line, with the trace and the message a
line is about, and the traceback of an exception."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from smsgw.logs import JsonLines
from smsgw.telemetry import message_span


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
