"""The routing loop: MessageQueued in, MessageRouted + DispatchCommand out, in batches.

A member of the routing group on `smsgw.kafka.partitioned_loop`: each poll's events are decided
in pure code (`decisions.py`); their events and commands are written, then the routing records
they change (on routing's changelog), then the offsets. A crash in between replays the events,
which decide again with the same event and command ids (and the carrier-adapter skips a command
it has already read: recent_commands.py).

The per-message routing record (dedupe, held scheduled messages, cancellation) is kept per
partition and reloaded from the changelog when the group gives this member a partition. This
replaced a faust agent: a faust event cost ~250 µs of CPU, and routing reads every event of every
message to act on one (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka.structs import ConsumerRecord

from smsgw.deadlines import DeadlineIndex
from smsgw.domain.carrier_health import CarrierHealth
from smsgw.domain.routes import RouteTable
from smsgw.events.envelope import decode_event, encode, new_event, payload_kind, timestamp
from smsgw.events.topics import CARRIER_DISPATCH, MESSAGE_EVENTS, ROUTING_RECORDS_CHANGELOG
from smsgw.kafka.partitioned_loop import Batch, PartitionedLoop
from smsgw.kafka.predecessor import MemberFile
from smsgw.lanes import is_high_lane
from smsgw.settings import ServiceSettings
from smsgw.telemetry import kafka_headers, next_hop_context, tracer
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
GROUP = "smsgw-routing"
_tracer = tracer("smsgw.routing")


class RoutingWorker:
    """One member of the routing group (run as many as there are events partitions, at most)."""

    def __init__(
        self,
        settings: ServiceSettings,
        table: RouteTable,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        due_check_interval: float = 0.25,
        record_retention: float = DEFAULT_RECORD_RETENTION,
        health: CarrierHealth | None = None,
        member_file: MemberFile | None = None,
    ) -> None:
        self.table = table
        #: Submit outcomes of the messages this member owns, per carrier (carrier_health.py).
        self.health = health or CarrierHealth()
        self.clock = clock
        self.record_retention = record_retention
        self.producer_name = f"routing/{settings.instance_id}"
        self.events_topic = settings.topic(MESSAGE_EVENTS)
        self.dispatch_topic = settings.topic(CARRIER_DISPATCH)
        self.changelog_topic = settings.topic(ROUTING_RECORDS_CHANGELOG)
        self.changelogs: tuple[str, ...] = (self.changelog_topic,)
        #: Per owned partition of the events topic: message id -> its routing record.
        self.records: dict[int, dict[bytes, RoutingRecord]] = {}
        # Held messages by send time, and settled ones by when their record may go (tombstoned),
        # so the loop looks at due keys only, never at every record.
        self.held = DeadlineIndex[tuple[int, bytes]]()
        self.settled = DeadlineIndex[tuple[int, bytes]]()
        # A HIGH message's MessageQueued (marked by intake) is routed ahead of the rest of its poll.
        self.loop = PartitionedLoop(
            settings,
            GROUP,
            self.events_topic,
            self,
            tick_interval=due_check_interval,
            next_deadline=self.held.earliest,
            lane=lambda record: is_high_lane(record.headers),
            member_file=member_file,
        )
        #: Set once the first assignment is loaded: the worker serves.
        self.ready = self.loop.ready

    def record(self, message_id: str) -> RoutingRecord | None:
        """The record kept for a message, in whichever owned partition it is (tests, diagnostics)."""
        key = message_id.encode()
        for records in self.records.values():
            if key in records:
                return records[key]
        return None

    async def run(self, stop: asyncio.Event) -> None:
        await self.loop.run(stop)

    # -- deciding (pure decisions, see decisions.py) -------------------------------------------

    def on_record(self, partition: int, record: ConsumerRecord, batch: Batch) -> None:
        if record.value is None:
            return
        envelope = decode_event(record.value)
        kind = payload_kind(envelope)
        if self.health.observe(envelope, kind, time.monotonic()):
            return  # a submit outcome or a receipt: what routing learns of a carrier's health
        if kind not in ("message_queued", "cancellation_requested"):
            return  # nothing for routing (most events of a message)
        key = envelope.message_id.encode()
        current = self.records[partition].get(key)
        try:
            if kind == "message_queued":
                decision = on_queued(envelope, current, self.table, self.clock(), self.healthy)
                self._emit(partition, batch, decision, envelope, envelope)
            else:
                self._emit(partition, batch, on_cancellation_requested(envelope, current, self.clock()), envelope, None)
        except Exception as exc:
            # The message must not sit QUEUED forever: record the failure on it, visibly.
            log.exception("routing %s failed", envelope.message_id)
            if kind == "message_queued":
                self._emit(partition, batch, internal_failure(envelope, exc), envelope, None)

    def healthy(self, carrier: str) -> bool:
        return self.health.healthy(carrier, time.monotonic())

    def on_tick(self, batch: Batch) -> None:
        now = self.clock()
        for partition, key in self.held.pop_due(now.timestamp()):
            record = self.records.get(partition, {}).get(key)
            if record is None or not due(record, now):
                continue  # canceled meanwhile, or the partition went to another member
            queued = decode_event(record.queued_event)
            try:
                self._emit(partition, batch, route_now(queued, self.table, now, self.healthy), queued, queued)
            except Exception as exc:
                log.exception("routing held message %s failed", queued.message_id)
                self._emit(partition, batch, internal_failure(queued, exc), queued, None)
        for partition, key in self.settled.pop_due(now.timestamp()):
            record = self.records.get(partition, {}).get(key)
            if forgettable(record, self.record_retention, now):
                self._change(partition, key, None, batch)

    def _emit(
        self, partition: int, batch: Batch, decision: Decision, cause: ev.EventEnvelope, queued: ev.EventEnvelope | None
    ) -> None:
        """Adds a decision's events, command and record change to the batch."""
        key = cause.message_id.encode()
        trace_context = next_hop_context(_tracer, "routing.decide", cause.message_id, cause.trace_context)
        headers = kafka_headers(trace_context)
        for payload, event_id, sequence in decision.events:
            envelope = new_event(
                payload,
                service=SERVICE,
                producer=self.producer_name,
                message_id=cause.message_id,
                account_id=cause.account_id,
                sequence=sequence,
                event_id=event_id,
                causation_id=cause.event_id,
                trace_context=trace_context,
            )
            batch.publish(self.events_topic, key, encode(envelope), headers)
            if decision.dispatch_carrier and queued is not None:
                batch.publish(
                    self.dispatch_topic,
                    key,
                    encode(_dispatch_command(envelope, queued, decision.dispatch_carrier, decision.fallback_carriers)),
                    headers,
                )
        if decision.record is not None and decision.record != self.records[partition].get(key):
            self._change(partition, key, decision.record, batch)

    def _change(self, partition: int, key: bytes, record: RoutingRecord | None, batch: Batch) -> None:
        """Changes the record now (later events of the batch see it); the loop writes it to the
        changelog after the batch's events and commands are on the broker."""
        records = self.records[partition]
        if record is None:
            records.pop(key, None)
        else:
            records[key] = record
        batch.change(self.changelog_topic, partition, key, None if record is None else record.to_bytes())
        self.held.set((partition, key), due_at(record))
        self.settled.set((partition, key), forget_at(record, self.record_retention))

    # -- partitions moving (called by the loop) -------------------------------------------------

    def loaded(self, partition: int, state: dict[str, dict[bytes, bytes]]) -> None:
        records = {
            key: record
            for key, value in state[self.changelog_topic].items()
            if (record := RoutingRecord.from_bytes(value)) is not None
        }
        self.records[partition] = records
        for key, record in records.items():
            self.held.set((partition, key), due_at(record))
            self.settled.set((partition, key), forget_at(record, self.record_retention))

    def revoked(self, partition: int) -> None:
        for key in self.records.pop(partition, {}):
            self.held.set((partition, key), None)
            self.settled.set((partition, key), None)


def _dispatch_command(
    routed: ev.EventEnvelope, queued: ev.EventEnvelope, carrier: str, fallbacks: tuple[str, ...] = ()
) -> cp.DispatchCommand:
    message = queued.message_queued
    command = cp.DispatchCommand(
        command_id=routed.event_id,
        message_id=routed.message_id,
        account_id=routed.account_id,
        carrier=carrier,
        to=message.to,
        content=message.content,
        segments=message.segments,
        encoding=message.encoding,
        sequence=routed.sequence,
        trace_context=dict(routed.trace_context),
        issued_at=timestamp(),
        media_urls=message.media_urls,
        priority=message.priority,
    )
    if fallbacks:
        command.fallback_carriers.extend(fallbacks)
    # The route's sender when it rewrites senders, else the message's own.
    setattr(command, "from", routed.message_routed.sender or getattr(message, "from"))
    if message.HasField("expires_at"):
        command.expires_at.CopyFrom(message.expires_at)
    return command
