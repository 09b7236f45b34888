"""The routing stream: MessageQueued in, MessageRouted + DispatchCommand out.

faust earns its place here: the per-message routing record (dedupe, held
scheduled messages, cancellation) is a table with a changelog, so a restarted
or rebalanced worker recovers it instead of re-reading the whole log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

import faust

from smsgw.deadlines import DeadlineIndex
from smsgw.domain.routes import RouteTable
from smsgw.events.envelope import decode_event, encode, new_event, payload_kind, timestamp
from smsgw.events.topics import CARRIER_DISPATCH, MESSAGE_EVENTS, ROUTING_DUE
from smsgw.settings import ServiceSettings
from smsgw.streams import BatchPipeline, ChangelogTable, Outgoing, PendingBatch, heal_stalled_partitions, make_app
from smsgw.telemetry import context_from, current_context_carrier, kafka_headers, tracer
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev

from .decisions import (
    DEFAULT_RECORD_RETENTION,
    Decision,
    RoutingRecord,
    due,
    due_at,
    forget_at,
    forgettable,
    internal_failure,
    on_cancellation_requested,
    on_queued,
    route_now,
)

log = logging.getLogger(__name__)
SERVICE = "routing"
#: A due notice with this value: a settled message's record has outlived its retention.
FORGET = b"forget"
_tracer = tracer("smsgw.routing")


def build_routing_app(settings: ServiceSettings, table: RouteTable,
                      clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                      due_check_interval: float = 0.25,
                      record_retention: float = DEFAULT_RECORD_RETENTION) -> faust.App:
    app = make_app(settings, "smsgw-routing")
    producer_name = f"routing/{settings.instance_id}"
    events_topic = app.topic(settings.topic(MESSAGE_EVENTS), key_type=bytes, value_type=bytes)
    dispatch_topic = app.topic(settings.topic(CARRIER_DISPATCH), key_type=bytes, value_type=bytes)
    # Internal, co-partitioned with the events topic: a held message whose time came is
    # handled in its own partition's stream, where the table may be changed.
    due_topic = app.topic(settings.topic(ROUTING_DUE), key_type=bytes, value_type=bytes)
    # Its changelog topic is registered (and created up front) as ROUTING_RECORDS_CHANGELOG.
    # use_partitioner: a batch changes the table after its events, outside faust's per-event
    # context; the key (the message id, the events topic's key) then picks the changelog
    # partition with the same partitioner, so it is still the events record's partition.
    records = cast(ChangelogTable, app.Table("routing-records", partitions=MESSAGE_EVENTS.partitions, key_type=bytes,
                                             value_type=bytes, default=None, use_partitioner=True))
    # Held messages by send time, so the timer looks at due messages only, not at every record.
    held = DeadlineIndex[bytes]()
    # Settled messages by when their record may go (tombstoned on the changelog), so the table
    # holds about `record_retention` worth of messages, not every message ever routed.
    settled = DeadlineIndex[bytes]()

    def emit(batch: PendingBatch, decision: Decision, cause: ev.EventEnvelope,
             queued: ev.EventEnvelope | None) -> None:
        """Adds a decision's records and record change to the batch (published by the pipeline)."""
        key = cause.message_id.encode()
        with _tracer.start_as_current_span("routing.decide", context=context_from(cause.trace_context),
                                           attributes={"smsgw.message_id": cause.message_id}):
            trace_context = current_context_carrier()
        headers = kafka_headers(trace_context)
        for payload, event_id, sequence in decision.events:
            envelope = new_event(payload, service=SERVICE, producer=producer_name, message_id=cause.message_id,
                                 account_id=cause.account_id, sequence=sequence, event_id=event_id,
                                 causation_id=cause.event_id, trace_context=trace_context)
            batch.outgoing.append(Outgoing(events_topic, key, encode(envelope), headers))
            if decision.dispatch_carrier and queued is not None:
                batch.outgoing.append(Outgoing(dispatch_topic, key, encode(
                    _dispatch_command(envelope, queued, decision.dispatch_carrier)), headers))
        if decision.record is not None:
            batch.changes[key] = decision.record

    def store_records(changes: dict[bytes, RoutingRecord | None]) -> None:
        # Only once the batch's events and commands are on the broker: a crash in between
        # replays the events and decides again (same ids), rather than finding a record that
        # says "dispatched" for a command that never reached the log.
        for key, record in changes.items():
            if record is None:
                if key in records:
                    del records[key]  # a tombstone on the changelog
            else:
                records[key] = record.to_bytes()
            held.set(key, due_at(record))
            settled.set(key, forget_at(record, record_retention))

    def current_record(pipeline: BatchPipeline, key: bytes) -> RoutingRecord | None:
        """The record as decided so far: a change still waiting in the pipeline, else the table's."""
        if pipeline.has_pending_change(key):
            return pipeline.pending_change(key)
        return RoutingRecord.from_bytes(records.get(key))

    def decide(pipeline: BatchPipeline, envelope: ev.EventEnvelope, kind: str) -> None:
        record = current_record(pipeline, envelope.message_id.encode())
        batch = pipeline.filling
        try:
            if kind == "message_queued":
                emit(batch, on_queued(envelope, record, table, clock()), envelope, envelope)
            else:
                emit(batch, on_cancellation_requested(envelope, record, clock()), envelope, None)
        except Exception as exc:
            # faust would ack the event and restart the agent: the message would sit QUEUED
            # forever. Record the failure on the message instead, so nothing is lost silently.
            log.exception("routing %s failed", envelope.message_id)
            if kind == "message_queued":
                emit(batch, internal_failure(envelope, exc), envelope, None)

    @app.agent(events_topic, name="route-messages")
    async def route_messages(stream):
        stream = stream.noack()
        pipeline = BatchPipeline(stream, store_records, what="routing decisions", written=records.written)
        async for event in stream.events():
            envelope = decode_event(event.value)
            kind = payload_kind(envelope)
            if kind in ("message_queued", "cancellation_requested"):
                decide(pipeline, envelope, kind)
                await pipeline.add(event)
            else:
                # Nothing for routing (most events of a message). faust commits only up to the
                # first unacked offset, so acking it before the batch in flight loses nothing.
                await stream.ack(event)

    @app.agent(due_topic, name="release-held-messages")
    async def release_held(stream):
        stream = stream.noack()
        pipeline = BatchPipeline(stream, store_records, what="released messages", written=records.written)
        async for event in stream.events():
            key = event.key
            record = current_record(pipeline, key)
            if event.value == FORGET:
                if record is not None and forgettable(record, record_retention, clock()):
                    pipeline.filling.changes[key] = None
            elif record is not None and due(record, clock()):
                queued = decode_event(record.queued_event)
                emit(pipeline.filling, route_now(queued, table, clock()), queued, queued)
            # else: canceled meanwhile, or a repeated due notice
            await pipeline.add(event)

    @records.on_recover
    async def index_held_messages() -> None:
        """After a restart or rebalance the table was rebuilt from its changelog: so is the index."""
        held.clear()
        settled.clear()
        for key, stored in list(records.items()):
            record = RoutingRecord.from_bytes(stored)
            held.set(key, due_at(record))
            settled.set(key, forget_at(record, record_retention))
        log.info("routing records recovered: %d, %d held", len(records), len(held))

    @app.timer(interval=due_check_interval)
    async def find_due_messages():
        now = clock().timestamp()
        for key in held.pop_due(now):
            # The release agent (in the key's partition) checks the record again and routes it;
            # routing it clears this deadline. Until then, ask again in a while.
            held.set(key, now + 5.0)
            await due_topic.send(key=key, value=b"")
        for key in settled.pop_due(now):
            # The same agent removes the record (its retention is checked again there).
            settled.set(key, now + 60.0)
            await due_topic.send(key=key, value=FORGET)

    heal_stalled_partitions(app, {settings.topic(MESSAGE_EVENTS), settings.topic(ROUTING_DUE)})
    return app


def _dispatch_command(routed: ev.EventEnvelope, queued: ev.EventEnvelope, carrier: str) -> cp.DispatchCommand:
    message = queued.message_queued
    command = cp.DispatchCommand(
        command_id=routed.event_id, message_id=routed.message_id, account_id=routed.account_id, carrier=carrier,
        to=message.to, content=message.content, segments=message.segments, encoding=message.encoding,
        sequence=routed.sequence, trace_context=dict(routed.trace_context), issued_at=timestamp(),
        media_urls=message.media_urls,
    )
    setattr(command, "from", getattr(message, "from"))
    if message.HasField("expires_at"):
        command.expires_at.CopyFrom(message.expires_at)
    return command
