"""The receipt stream: carrier reports in, DeliveryReported and inbound events out.

faust earns its place here: the correlation table (carrier message id ->
message, plus receipts that arrived before their submit) and the table of
long inbound SMS being joined from their parts (sender -> parts so far) are
keyed state that must survive restarts and move with its partition when
workers scale.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Awaitable, Callable

import faust
from aiokafka.partitioner import murmur2
from faust.types import TP

from smsgw.events.envelope import encode, new_event
from smsgw.events.topics import CARRIER_REPORTS, INBOUND_EVENTS, MESSAGE_EVENTS, RECEIPT_DUE, RECEIPT_ORPHANS
from smsgw.settings import ServiceSettings
from smsgw.streams import heal_stalled_partitions, make_app
from smsgw.telemetry import context_from, current_context_carrier, kafka_headers, tracer
from smsgw.v1 import carrier_pb2 as cp

from .correlation import CorrelationRecord, ReceiptPolicies, due, on_report, on_tick
from .inbound import InboundOutcome, NumberDirectory, joined_report, on_inbound, part_of
from .mo_reassembly import Part, Reassembled, SenderParts, add_part
from .mo_reassembly import due as parts_due
from .mo_reassembly import expire as expire_parts

log = logging.getLogger(__name__)
SERVICE = "receipt"
_tracer = tracer("smsgw.receipt")
ReplySender = Callable[[InboundOutcome], Awaitable[None]]
#: A due record with this value is about the MO parts table (a correlation's has an empty value).
MO_PARTS_DUE = b"mo-parts"
#: How long the parts of a long inbound SMS wait for the rest (from the latest part): Jasmin's 300 s.
DEFAULT_MO_REASSEMBLY_TIMEOUT = 300.0


def build_receipt_app(settings: ServiceSettings, directory: NumberDirectory | None = None,
                      send_reply: ReplySender | None = None, policies: ReceiptPolicies | None = None,
                      clock: Callable[[], float] = time.time, tick_interval: float = 1.0,
                      mo_reassembly_timeout: float = DEFAULT_MO_REASSEMBLY_TIMEOUT) -> faust.App:
    app = make_app(settings, "smsgw-receipt")
    directory = directory or NumberDirectory()
    policies = policies or ReceiptPolicies()
    producer_name = f"receipt/{settings.instance_id}"
    reports_topic = app.topic(settings.topic(CARRIER_REPORTS), key_type=bytes, value_type=bytes)
    events_topic = app.topic(settings.topic(MESSAGE_EVENTS), key_type=bytes, value_type=bytes)
    inbound_topic = app.topic(settings.topic(INBOUND_EVENTS), key_type=bytes, value_type=bytes)
    due_topic = app.topic(settings.topic(RECEIPT_DUE), key_type=bytes, value_type=bytes)
    orphans_topic = app.topic(settings.topic(RECEIPT_ORPHANS), key_type=bytes, value_type=bytes)

    async def handle_inbound(report: cp.CarrierReport, missing_parts: tuple[int, ...] = ()) -> None:
        outcome = on_inbound(report, directory, missing_parts)
        trace_context = current_context_carrier()
        for payload, event_id in outcome.events:
            envelope = new_event(payload, service=SERVICE, producer=producer_name, message_id=outcome.inbound_id,
                                 account_id=outcome.account_id, sequence=1, event_id=event_id,
                                 causation_id=report.report_id, trace_context=trace_context)
            await (await inbound_topic.send(key=outcome.partition_key.encode(), value=encode(envelope),
                                            headers=kafka_headers(trace_context)))
        if outcome.help_reply and send_reply is not None:
            await send_reply(outcome)
    async def until_recorded(record: Callable[[], Awaitable[None]], what: str) -> None:
        """Tries until the inbound events are written. The carrier was already told we have the
        message, so skipping it would lose it for good; waiting holds only this partition, and
        a retry writes the same event ids (consumers drop the copies)."""
        delay = 0.2
        while True:
            try:
                await record()
                return
            except Exception:
                log.exception("%s could not be recorded; retrying in %.1fs", what, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    correlations = app.Table("receipt-correlations", partitions=CARRIER_REPORTS.partitions, key_type=bytes,
                             value_type=bytes, default=None)
    # Keyed like the reports ("<carrier>/mo/<sender>"), so the deadline agent, which sees the
    # same key in the same partition number, may change it (faust writes a table's changelog
    # to the partition of the record being processed).
    mo_parts = app.Table("receipt-mo-parts", partitions=CARRIER_REPORTS.partitions, key_type=bytes,
                         value_type=bytes, default=None)

    @app.agent(reports_topic, name="correlate-receipts")
    async def correlate(stream):
        async for key, value in stream.items():
            report = cp.CarrierReport()
            report.ParseFromString(value)
            if report.WhichOneof("report") == "inbound_received":
                part = part_of(report)
                if part is None:
                    await until_recorded(lambda: handle_inbound(report), f"inbound message {report.report_id}")
                else:
                    await until_recorded(lambda: hold_part(key, part), f"part {part.number} of {report.report_id}")
                continue
            record, matched = on_report(load(key), report, clock())
            await append_matched(matched)
            if record.correlation is None and record.pending:
                log.info("receipt for %s arrived before its submit; holding it", key.decode(errors="replace"))
            correlations[key] = json.dumps(record.to_json()).encode()

    def load(key: bytes) -> CorrelationRecord:
        stored = correlations.get(key)
        return CorrelationRecord.from_json(json.loads(stored)) if stored else CorrelationRecord()

    def load_parts(key: bytes) -> SenderParts:
        stored = mo_parts.get(key)
        return SenderParts.from_json(json.loads(stored)) if stored else SenderParts()

    def store_parts(key: bytes, state: SenderParts | None) -> None:
        if state is None:
            if key in mo_parts:
                del mo_parts[key]
        else:
            mo_parts[key] = json.dumps(state.to_json()).encode()

    async def hold_part(key: bytes, part: Part) -> None:
        state, whole = add_part(load_parts(key), part, clock())
        # Recorded before the table changes: a crash in between reads the part again and
        # records the same message again, with the same event ids (consumers drop the copy).
        await record_reassembled(key, whole)
        store_parts(key, state)

    async def expire_mo_parts(key: bytes) -> None:
        state, timed_out = expire_parts(load_parts(key), clock(), mo_reassembly_timeout)
        await record_reassembled(key, timed_out)
        store_parts(key, state)

    async def record_reassembled(key: bytes, messages: list[Reassembled]) -> None:
        carrier, _, subscriber = key.decode(errors="replace").partition("/mo/")
        for message in messages:
            if message.missing:
                log.warning("long SMS from %s (reference %d) incomplete after %.0fs: parts %s of %d never came",
                            subscriber, message.reference, mo_reassembly_timeout, list(message.missing),
                            message.total)
            await handle_inbound(joined_report(carrier, subscriber, message), message.missing)

    async def append_matched(matched) -> None:
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

    @app.agent(due_topic, name="apply-receipt-deadlines")
    async def apply_deadlines(stream):
        # Runs in the key's own partition, where the table may be changed (faust forbids it in timers).
        async for key, value in stream.items():
            if value == MO_PARTS_DUE:
                try:
                    await expire_mo_parts(key)
                except Exception:
                    # The table is unchanged, so the next tick asks again.
                    log.exception("timed-out parts from %s could not be recorded", key.decode(errors="replace"))
                continue
            text_key = key.decode(errors="replace")
            outcome = on_tick(load(key), text_key, policies.of(text_key.partition("/")[0]), clock())
            await append_matched(outcome.matched)
            for orphan in outcome.orphans:
                log.warning("orphaned receipt %s for %s: no message matched it", orphan.report_id, text_key)
                await (await orphans_topic.send(key=key, value=encode(orphan)))
            if outcome.record is None:
                if key in correlations:
                    del correlations[key]
            else:
                correlations[key] = json.dumps(outcome.record.to_json()).encode()

    reports_name = settings.topic(CARRIER_REPORTS)

    def caught_up(key: bytes) -> bool:
        """True when this worker has read its partition of the reports topic to the end. Deadlines
        are decided only then: after a restart, a receipt held before the crash must meet its
        submit, still waiting in the backlog, before it can be called an orphan (or a timeout)."""
        partition = (murmur2(key) & 0x7FFFFFFF) % CARRIER_REPORTS.partitions
        tp = TP(reports_name, partition)
        consumer = app.consumer
        if tp not in consumer.assignment():
            return False
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            return False
        read = consumer._read_offset.get(tp)  # noqa: SLF001 - the last offset faust handed to us
        return highwater is not None and (highwater == 0 or (read is not None and read + 1 >= highwater))

    @app.timer(interval=tick_interval)
    async def find_deadlines():
        now = clock()
        for key, stored in list(correlations.items()):
            if not stored or not caught_up(key):
                continue
            record = CorrelationRecord.from_json(json.loads(stored))
            if due(record, policies.of(key.decode(errors="replace").partition("/")[0]), now):
                await due_topic.send(key=key, value=b"")
        for key, stored in list(mo_parts.items()):
            # Only once caught up: the part a held message waits for may be in the backlog.
            if not stored or not caught_up(key):
                continue
            if parts_due(SenderParts.from_json(json.loads(stored)), now, mo_reassembly_timeout):
                await due_topic.send(key=key, value=MO_PARTS_DUE)

    heal_stalled_partitions(app, {settings.topic(CARRIER_REPORTS), settings.topic(RECEIPT_DUE)})
    return app
