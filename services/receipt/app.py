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
from collections.abc import Awaitable, Callable

import faust
from aiokafka.partitioner import murmur2
from faust.types import TP

from smsgw.deadlines import DeadlineIndex
from smsgw.domain.phone import masked
from smsgw.events.envelope import encode, new_event
from smsgw.events.topics import CARRIER_REPORTS, INBOUND_EVENTS, MESSAGE_EVENTS, RECEIPT_DUE, RECEIPT_ORPHANS
from smsgw.settings import ServiceSettings
from smsgw.streams import BatchPipeline, Outgoing, heal_stalled_partitions, make_app, publish, read_offset
from smsgw.telemetry import context_from, current_context_carrier, kafka_headers, tracer
from smsgw.v1 import carrier_pb2 as cp

from .correlation import CorrelationRecord, ReceiptPolicies, due_at, on_report, on_tick
from .inbound import InboundOutcome, NumberDirectory, joined_report, on_inbound, part_of
from .mo_reassembly import Part, Reassembled, SenderParts, add_part
from .mo_reassembly import due_at as parts_due_at
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

    # Both tables are keyed like the reports ("<carrier>/<id>", "<carrier>/mo/<sender>") and
    # use the producer's partitioner for their changelogs, which puts each key in its reports
    # partition: the batch agent changes them after a batch, outside faust's per-event context,
    # and the deadline agent sees the same keys in the same partition numbers.
    correlations = app.Table("receipt-correlations", partitions=CARRIER_REPORTS.partitions, key_type=bytes,
                             value_type=bytes, default=None, use_partitioner=True)
    mo_parts = app.Table("receipt-mo-parts", partitions=CARRIER_REPORTS.partitions, key_type=bytes,
                         value_type=bytes, default=None, use_partitioner=True)
    # When each record next needs the timer (receipt timeout, orphan window, retention; parts
    # waiting for the rest), so the timer never decodes the whole table.
    correlation_deadlines = DeadlineIndex[bytes]()
    parts_deadlines = DeadlineIndex[bytes]()

    def policy_for(key: bytes):
        return policies.of(key.decode(errors="replace").partition("/")[0])  # "<carrier>/<id>"

    def store_correlation(key: bytes, record: CorrelationRecord | None) -> None:
        if record is None:
            if key in correlations:
                del correlations[key]
        else:
            correlations[key] = json.dumps(record.to_json()).encode()
        correlation_deadlines.set(key, due_at(record, policy_for(key)))

    def store_correlations(changes: dict[bytes, CorrelationRecord]) -> None:
        # Only once the batch's DeliveryReported events are on the broker: a crash in between
        # replays the reports, which match again with the same event ids (readers drop copies).
        for key, record in changes.items():
            store_correlation(key, record)

    @app.agent(reports_topic, name="correlate-receipts")
    async def correlate(stream):
        stream = stream.noack()
        pipeline = BatchPipeline(stream, store_correlations, what="delivery reports", written=correlations.written)
        async for event in stream.events():
            key = event.key
            report = cp.CarrierReport()
            report.ParseFromString(event.value)
            if report.WhichOneof("report") == "inbound_received":
                # Rare, and may wait for the number directory: what came before goes out first.
                await pipeline.drain()
                part = part_of(report)
                if part is None:
                    await until_recorded(lambda report=report: handle_inbound(report), f"inbound message {report.report_id}")
                else:
                    await until_recorded(lambda key=key, part=part: hold_part(key, part),
                                        f"part {part.number} of {report.report_id}")
                    await mo_parts.written()  # the held part is on the broker before its report is acked
                await stream.ack(event)
                continue
            record, matched = on_report(pipeline.pending_change(key) or load(key), report, clock())
            pipeline.filling.outgoing.extend(matched_records(matched))
            if record.correlation is None and record.pending:
                log.info("receipt for %s arrived before its submit; holding it", key.decode(errors="replace"))
            pipeline.filling.changes[key] = record
            await pipeline.add(event)

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
        parts_deadlines.set(key, parts_due_at(state, mo_reassembly_timeout))

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
                            masked(subscriber), message.reference, mo_reassembly_timeout, list(message.missing),
                            message.total)
            await handle_inbound(joined_report(carrier, subscriber, message), message.missing)

    def matched_records(matched) -> list[Outgoing]:
        records = []
        for match in matched:
            fields = match.envelope_fields
            with _tracer.start_as_current_span("receipt.matched", context=context_from(fields["trace_context"]),
                                               attributes={"smsgw.message_id": fields["message_id"]}):
                trace_context = current_context_carrier()
            envelope = new_event(match.payload, service=SERVICE, producer=producer_name,
                                 message_id=fields["message_id"], account_id=fields["account_id"],
                                 sequence=fields["sequence"], event_id=fields["event_id"],
                                 causation_id=fields["causation_id"], trace_context=trace_context)
            records.append(Outgoing(events_topic, fields["message_id"].encode(), encode(envelope),
                                    kafka_headers(trace_context)))
        return records

    async def append_matched(matched) -> None:
        if matched:
            await publish(matched_records(matched), "delivery reports")

    @app.agent(due_topic, name="apply-receipt-deadlines")
    async def apply_deadlines(stream):
        # Runs in the key's own partition, where the table may be changed (faust forbids it in timers).
        async for key, value in stream.items():
            if value == MO_PARTS_DUE:
                try:
                    await expire_mo_parts(key)
                    await mo_parts.written()
                except Exception:
                    # The table is unchanged, so the next tick asks again.
                    carrier, _, sender = key.decode(errors="replace").partition("/mo/")
                    log.exception("timed-out parts from %s (%s) could not be recorded", masked(sender), carrier)
                continue
            text_key = key.decode(errors="replace")
            outcome = on_tick(load(key), text_key, policies.of(text_key.partition("/")[0]), clock())
            await append_matched(outcome.matched)
            for orphan in outcome.orphans:
                log.warning("orphaned receipt %s for %s: no message matched it", orphan.report_id, text_key)
                await (await orphans_topic.send(key=key, value=encode(orphan)))
            store_correlation(key, outcome.record)
            await correlations.written()

    reports_name = settings.topic(CARRIER_REPORTS)

    def reports_partition(key: bytes) -> TP:
        return TP(reports_name, (murmur2(key) & 0x7FFFFFFF) % CARRIER_REPORTS.partitions)

    def caught_up(tp: TP) -> bool:
        """True when this worker has read its partition of the reports topic to the end. Deadlines
        are decided only then: after a restart, a receipt held before the crash must meet its
        submit, still waiting in the backlog, before it can be called an orphan (or a timeout)."""
        consumer = app.consumer
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - faust raises several kinds for a partition it does not know yet
            return False
        read = read_offset(app, tp)
        return highwater is not None and (highwater == 0 or (read is not None and read + 1 >= highwater))

    @correlations.on_recover
    async def index_correlations() -> None:
        """After a restart or rebalance the table was rebuilt from its changelog: so is the index."""
        correlation_deadlines.clear()
        for key, stored in list(correlations.items()):
            if stored:
                record = CorrelationRecord.from_json(json.loads(stored))
                correlation_deadlines.set(key, due_at(record, policy_for(key)))
        log.info("receipt correlations recovered: %d", len(correlation_deadlines))

    @mo_parts.on_recover
    async def index_parts() -> None:
        parts_deadlines.clear()
        for key, stored in list(mo_parts.items()):
            if stored:
                parts_deadlines.set(key, parts_due_at(SenderParts.from_json(json.loads(stored)),
                                                      mo_reassembly_timeout))

    @app.timer(interval=tick_interval)
    async def find_deadlines():
        now = clock()
        assigned = None
        for index, notice in ((correlation_deadlines, b""), (parts_deadlines, MO_PARTS_DUE)):
            for key in index.pop_due(now):
                assigned = assigned if assigned is not None else app.consumer.assignment()
                tp = reports_partition(key)
                if tp not in assigned:
                    continue  # moved to another worker, which indexed it when it recovered the table
                if not caught_up(tp):
                    index.set(key, now + tick_interval)  # the backlog first; ask again next tick
                    continue
                # The deadline agent (in the key's partition) decides and sets the next deadline;
                # should the notice get lost, ask again in a while.
                index.set(key, now + max(tick_interval, 5.0))
                await due_topic.send(key=key, value=notice)

    heal_stalled_partitions(app, {settings.topic(CARRIER_REPORTS), settings.topic(RECEIPT_DUE)})
    return app
