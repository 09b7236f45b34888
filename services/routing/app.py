"""The routing stream: MessageQueued in, MessageRouted + DispatchCommand out.

faust earns its place here: the per-message routing record (dedupe, held
scheduled messages, cancellation) is a table with a changelog, so a restarted
or rebalanced worker recovers it instead of re-reading the whole log.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Callable

import faust

from smsgw.events.envelope import decode_event, encode, new_event, payload_kind, timestamp
from smsgw.events.topics import CARRIER_DISPATCH, MESSAGE_EVENTS, ROUTING_DUE
from smsgw.settings import ServiceSettings
from smsgw.streams import heal_stalled_partitions, make_app
from smsgw.telemetry import context_from, current_context_carrier, kafka_headers, tracer
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev

from .decisions import (Decision, RoutingRecord, due, internal_failure, on_cancellation_requested, on_queued,
                        route_now)
from smsgw.domain.routes import RouteTable

log = logging.getLogger(__name__)
SERVICE = "routing"
_tracer = tracer("smsgw.routing")


def build_routing_app(settings: ServiceSettings, table: RouteTable,
                      clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                      due_check_interval: float = 0.25) -> faust.App:
    app = make_app(settings, "smsgw-routing")
    producer_name = f"routing/{settings.instance_id}"
    events_topic = app.topic(settings.topic(MESSAGE_EVENTS), key_type=bytes, value_type=bytes)
    dispatch_topic = app.topic(settings.topic(CARRIER_DISPATCH), key_type=bytes, value_type=bytes)
    # Internal, co-partitioned with the events topic: a held message whose time came is
    # handled in its own partition's stream, where the table may be changed.
    due_topic = app.topic(settings.topic(ROUTING_DUE), key_type=bytes, value_type=bytes)
    # Its changelog topic is registered (and created up front) as ROUTING_RECORDS_CHANGELOG.
    records = app.Table("routing-records", partitions=MESSAGE_EVENTS.partitions, key_type=bytes,
                        value_type=bytes, default=None)

    async def apply(decision: Decision, cause: ev.EventEnvelope, queued: ev.EventEnvelope | None) -> None:
        key = cause.message_id.encode()
        with _tracer.start_as_current_span("routing.decide", context=context_from(cause.trace_context),
                                           attributes={"smsgw.message_id": cause.message_id}):
            trace_context = current_context_carrier()
            for payload, event_id, sequence in decision.events:
                envelope = new_event(payload, service=SERVICE, producer=producer_name, message_id=cause.message_id,
                                     account_id=cause.account_id, sequence=sequence, event_id=event_id,
                                     causation_id=cause.event_id, trace_context=trace_context)
                await (await events_topic.send(key=key, value=encode(envelope), headers=kafka_headers(trace_context)))
                log.debug("appended %s", envelope.type)
                if decision.dispatch_carrier and queued is not None:
                    await (await dispatch_topic.send(
                        key=key, value=encode(_dispatch_command(envelope, queued, decision.dispatch_carrier)),
                        headers=kafka_headers(trace_context)))
        if decision.record is not None:
            records[key] = decision.record.to_bytes()

    @app.agent(events_topic, name="route-messages")
    async def route_messages(stream):
        async for value in stream:
            envelope = decode_event(value)
            kind = payload_kind(envelope)
            log.debug("event %s %s", kind, envelope.message_id)
            if kind not in ("message_queued", "cancellation_requested"):
                continue
            key = envelope.message_id.encode()
            record = RoutingRecord.from_bytes(records.get(key))
            try:
                if kind == "message_queued":
                    await apply(on_queued(envelope, record, table, clock()), envelope, envelope)
                else:
                    await apply(on_cancellation_requested(envelope, record, clock()), envelope, None)
            except Exception as exc:
                # faust would ack the event and restart the agent: the message would sit QUEUED
                # forever. Record the failure on the message instead, so nothing is lost silently.
                log.exception("routing %s failed", envelope.message_id)
                if kind == "message_queued":
                    await apply(internal_failure(envelope, exc), envelope, None)

    @app.agent(due_topic, name="release-held-messages")
    async def release_held(stream):
        async for key, _ in stream.items():
            record = RoutingRecord.from_bytes(records.get(key))
            if record is None or not due(record, clock()):
                continue  # canceled meanwhile, or a repeated due notice
            queued = decode_event(record.queued_event)
            await apply(route_now(queued, table, clock()), queued, queued)

    @app.timer(interval=due_check_interval)
    async def find_due_messages():
        now = clock()
        for key, stored in list(records.items()):
            record = RoutingRecord.from_bytes(stored)
            if record is not None and due(record, now):
                await due_topic.send(key=key, value=b"")

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
