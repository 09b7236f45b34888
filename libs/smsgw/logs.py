"""How every service writes its log: text for people at a terminal, or JSON lines for a log
pipeline (SMSGW_LOG_FORMAT=json), each line with the trace and the message it is about.

A JSON line holds time (UTC, ISO 8601), level, logger, message, the service, and when known
trace_id and span_id (the W3C ids the message's events carry, so a log line leads to its trace)
and message_id (the message being worked on: smsgw.telemetry.message_span and message_scope set it); an
exception adds its traceback. What a line says is written by the log call: phone numbers are
masked there (smsgw.domain.phone.masked), secrets never reach it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from smsgw.telemetry import current_message_id, log_trace_ids

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
        }
        ids = log_trace_ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        message_id = current_message_id()
        if message_id:
            line["message_id"] = message_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, fmt: str = "text", service: str = "") -> None:
    if fmt not in FORMATS:
        raise SystemExit(f"SMSGW_LOG_FORMAT={fmt!r}: use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines(service) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
