"""The receipt stream: carrier reports in, DeliveryReported events out.

faust earns its place here: the correlation table (carrier message id ->
message, plus receipts that arrived before their submit) is keyed state that
must survive restarts and move with its partition when workers scale.
"""

from __future__ import annotations

import json
import logging

import faust

from smsgw.events.envelope import encode, new_event
from smsgw.events.topics import CARRIER_REPORTS, MESSAGE_EVENTS
from smsgw.settings import ServiceSettings
from smsgw.streams import make_app
from smsgw.telemetry import context_from, current_context_carrier, kafka_headers, tracer
from smsgw.v1 import carrier_pb2 as cp

from .correlation import CorrelationRecord, on_report

log = logging.getLogger(__name__)
SERVICE = "receipt"
_tracer = tracer("smsgw.receipt")


def build_receipt_app(settings: ServiceSettings) -> faust.App:
    app = make_app(settings, "smsgw-receipt")
    producer_name = f"receipt/{settings.instance_id}"
    reports_topic = app.topic(settings.topic(CARRIER_REPORTS), key_type=bytes, value_type=bytes)
    events_topic = app.topic(settings.topic(MESSAGE_EVENTS), key_type=bytes, value_type=bytes)
    correlations = app.Table("receipt-correlations", partitions=CARRIER_REPORTS.partitions, key_type=bytes,
                             value_type=bytes, default=None)

    @app.agent(reports_topic, name="correlate-receipts")
    async def correlate(stream):
        async for key, value in stream.items():
            report = cp.CarrierReport()
            report.ParseFromString(value)
            stored = correlations.get(key)
            record = CorrelationRecord.from_json(json.loads(stored)) if stored else CorrelationRecord()
            record, matched = on_report(record, report)
            for match in matched:
                fields = match.envelope_fields
                with _tracer.start_as_current_span("receipt.matched", context=context_from(fields["trace_context"]),
                                                   attributes={"smsgw.message_id": fields["message_id"]}):
                    trace_context = current_context_carrier()
                    envelope = new_event(match.payload, service=SERVICE, producer=producer_name,
                                         message_id=fields["message_id"], account_id=fields["account_id"],
                                         sequence=fields["sequence"], event_id=fields["event_id"],
                                         causation_id=fields["causation_id"], trace_context=trace_context)
                    await (await events_topic.send(key=fields["message_id"].encode(), value=encode(envelope),
                                                   headers=kafka_headers(trace_context)))
            if record.correlation is None and record.pending:
                log.info("receipt for %s arrived before its submit; holding it", key.decode(errors="replace"))
            correlations[key] = json.dumps(record.to_json()).encode()

    return app
