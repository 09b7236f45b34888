"""The routing loop: MessageQueued in, MessageRouted + DispatchCommand out, in batches.

One consumer in the routing group reads the events topic; each poll's records are decided in
pure code (`decisions.py`), their events and commands go to the broker as one batch, then the
records those decisions change go to routing's changelog, then the offsets are committed. A
crash anywhere in between replays the events, which decide again with the same event and
command ids (and the carrier-adapter skips a command it has already read: recent_commands.py).

The per-message routing record (dedupe, held scheduled messages, cancellation) is kept per
partition and made durable on a compacted changelog partitioned like the events topic
(`smsgw.kafka.changelog`), so a restarted or rebalanced worker reloads exactly the partitions it
is given. This loop replaced a faust agent: a faust event cost ~250 µs of CPU and routing reads
every event of every message to act on one (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError

from smsgw.deadlines import DeadlineIndex
from smsgw.domain.routes import RouteTable
from smsgw.events.envelope import decode_event, encode, new_event, payload_kind, timestamp
from smsgw.events.topics import CARRIER_DISPATCH, MESSAGE_EVENTS, ROUTING_RECORDS_CHANGELOG
from smsgw.kafka.changelog import read_changelog
from smsgw.kafka.clients import make_group_consumer, make_producer
from smsgw.settings import ServiceSettings
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
GROUP = "smsgw-routing"
_tracer = tracer("smsgw.routing")
#: Records taken in one poll (a batch); under load a poll returns what arrived meanwhile.
MAX_BATCH = 2000


@dataclass
class Batch:
    """What one poll decided: records to publish, record changes, offsets to commit after both."""

    outgoing: list[tuple[str, bytes, bytes, list]] = field(default_factory=list)  # topic, key, value, headers
    changes: dict[tuple[int, bytes], RoutingRecord | None] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)


class RoutingWorker:
    """One member of the routing group (run as many as there are events partitions, at most)."""

    def __init__(self, settings: ServiceSettings, table: RouteTable,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 due_check_interval: float = 0.25,
                 record_retention: float = DEFAULT_RECORD_RETENTION) -> None:
        self.settings = settings
        self.table = table
        self.clock = clock
        self.due_check_interval = due_check_interval
        self.record_retention = record_retention
        self.producer_name = f"routing/{settings.instance_id}"
        self.events_topic = settings.topic(MESSAGE_EVENTS)
        self.dispatch_topic = settings.topic(CARRIER_DISPATCH)
        self.changelog_topic = settings.topic(ROUTING_RECORDS_CHANGELOG)
        #: Per owned partition of the events topic: message id -> its routing record.
        self.records: dict[int, dict[bytes, RoutingRecord]] = {}
        # Held messages by send time, and settled ones by when their record may go (tombstoned),
        # so the loop looks at due keys only, never at every record.
        self.held = DeadlineIndex[tuple[int, bytes]]()
        self.settled = DeadlineIndex[tuple[int, bytes]]()
        #: Set once the first assignment is loaded: the worker serves.
        self.ready = asyncio.Event()
        self._lock = asyncio.Lock()   # one batch at a time; a rebalance waits for it
        self._consumer: AIOKafkaConsumer   # made in run(): aiokafka's clients belong to a running loop
        self._producer: AIOKafkaProducer

    def record(self, message_id: str) -> RoutingRecord | None:
        """The record kept for a message, in whichever owned partition it is (tests, diagnostics)."""
        key = message_id.encode()
        for records in self.records.values():
            if key in records:
                return records[key]
        return None

    async def run(self, stop: asyncio.Event) -> None:
        self._consumer = make_group_consumer(self.settings, GROUP)
        self._producer = make_producer(self.settings)
        await self._producer.start()
        self._consumer.subscribe([self.events_topic], listener=_Rebalance(self))
        await self._consumer.start()
        try:
            while not stop.is_set():
                polled = await self._consumer.getmany(timeout_ms=int(self.due_check_interval * 1000),
                                                      max_records=MAX_BATCH)
                async with self._lock:
                    batch = Batch()
                    for tp, records in polled.items():
                        if tp.partition not in self.records:
                            # Fetched before its changelog was loaded (the assignment callback runs
                            # after fetching may start): read it again once it is.
                            with contextlib.suppress(IllegalStateError):   # revoked meanwhile
                                self._consumer.seek(tp, records[0].offset)
                            continue
                        for record in records:
                            self._on_event(tp.partition, record.key, record.value, batch)
                        batch.offsets[tp] = records[-1].offset + 1
                    self._on_timers(batch)
                    await self._write(batch)
        finally:
            await self._consumer.stop()
            await self._producer.stop()

    # -- deciding (pure decisions, see decisions.py) -------------------------------------------

    def _on_event(self, partition: int, key: bytes | None, value: bytes | None, batch: Batch) -> None:
        if value is None:
            return
        envelope = decode_event(value)
        kind = payload_kind(envelope)
        if kind not in ("message_queued", "cancellation_requested"):
            return  # nothing for routing (most events of a message)
        key = envelope.message_id.encode()
        record = self.records[partition].get(key)
        try:
            if kind == "message_queued":
                decision = on_queued(envelope, record, self.table, self.clock())
                self._emit(partition, batch, decision, envelope, envelope)
            else:
                self._emit(partition, batch, on_cancellation_requested(envelope, record, self.clock()), envelope, None)
        except Exception as exc:
            # The message must not sit QUEUED forever: record the failure on it, visibly.
            log.exception("routing %s failed", envelope.message_id)
            if kind == "message_queued":
                self._emit(partition, batch, internal_failure(envelope, exc), envelope, None)

    def _on_timers(self, batch: Batch) -> None:
        now = self.clock()
        for partition, key in self.held.pop_due(now.timestamp()):
            record = self.records.get(partition, {}).get(key)
            if record is None or not due(record, now):
                continue   # canceled meanwhile, or the partition went to another member
            queued = decode_event(record.queued_event)
            try:
                self._emit(partition, batch, route_now(queued, self.table, now), queued, queued)
            except Exception as exc:
                log.exception("routing held message %s failed", queued.message_id)
                self._emit(partition, batch, internal_failure(queued, exc), queued, None)
        for partition, key in self.settled.pop_due(now.timestamp()):
            record = self.records.get(partition, {}).get(key)
            if forgettable(record, self.record_retention, now):
                self._change(partition, key, None, batch)

    def _emit(self, partition: int, batch: Batch, decision: Decision, cause: ev.EventEnvelope,
              queued: ev.EventEnvelope | None) -> None:
        """Adds a decision's events, command and record change to the batch."""
        key = cause.message_id.encode()
        with _tracer.start_as_current_span("routing.decide", context=context_from(cause.trace_context),
                                           attributes={"smsgw.message_id": cause.message_id}):
            trace_context = current_context_carrier()
        headers = kafka_headers(trace_context)
        for payload, event_id, sequence in decision.events:
            envelope = new_event(payload, service=SERVICE, producer=self.producer_name, message_id=cause.message_id,
                                 account_id=cause.account_id, sequence=sequence, event_id=event_id,
                                 causation_id=cause.event_id, trace_context=trace_context)
            batch.outgoing.append((self.events_topic, key, encode(envelope), headers))
            if decision.dispatch_carrier and queued is not None:
                batch.outgoing.append((self.dispatch_topic, key, encode(
                    _dispatch_command(envelope, queued, decision.dispatch_carrier)), headers))
        if decision.record is not None and decision.record != self.records[partition].get(key):
            self._change(partition, key, decision.record, batch)

    def _change(self, partition: int, key: bytes, record: RoutingRecord | None, batch: Batch) -> None:
        """Changes the record now (later events of the batch see it); it reaches the changelog in
        `_write`, after the batch's events and commands are on the broker."""
        records = self.records[partition]
        if record is None:
            records.pop(key, None)
        else:
            records[key] = record
        batch.changes[(partition, key)] = record
        self.held.set((partition, key), due_at(record))
        self.settled.set((partition, key), forget_at(record, self.record_retention))

    # -- writing --------------------------------------------------------------------------------

    async def _write(self, batch: Batch) -> None:
        """Events and commands, then (once acknowledged) the record changes, then the offsets.
        A record saying "dispatched" never reaches the changelog before its command reached the
        log; an offset is never committed before both. Any broker error ends the process: the
        uncommitted events are decided again after the restart."""
        send = self._producer.send
        acks = [await send(topic, value=value, key=key, headers=headers)
                for topic, key, value, headers in batch.outgoing]
        await asyncio.gather(*acks)
        acks = [await send(self.changelog_topic, key=key, partition=partition,
                           value=None if record is None else record.to_bytes())
                for (partition, key), record in batch.changes.items()]
        await asyncio.gather(*acks)
        if batch.offsets:
            await self._commit(batch.offsets)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            # The partition's next owner reads these events again: same ids, no second dispatch.
            log.warning("offsets %s not committed (%s); they will be read again", offsets, exc)

    # -- partitions moving ----------------------------------------------------------------------

    async def assigned(self, partitions: set[int]) -> None:
        async with self._lock:
            new = partitions - set(self.records)
            loaded = await read_changelog(self.settings, self.changelog_topic, new)
            for partition, values in loaded.items():
                records = {key: record for key, value in values.items()
                           if (record := RoutingRecord.from_bytes(value)) is not None}
                self.records[partition] = records
                for key, record in records.items():
                    self.held.set((partition, key), due_at(record))
                    self.settled.set((partition, key), forget_at(record, self.record_retention))
            if new:
                log.info("routing partitions %s loaded: %d records, %d held", sorted(new),
                         sum(len(self.records[p]) for p in new), len(self.held))
            self.ready.set()

    async def revoked(self, partitions: set[int]) -> None:
        # Taking the lock waits for the batch in hand: its events, records and offsets are
        # written before the partition's next owner loads the changelog.
        async with self._lock:
            for partition in partitions:
                for key in self.records.pop(partition, {}):
                    self.held.set((partition, key), None)
                    self.settled.set((partition, key), None)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: RoutingWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked) -> None:
        await self.worker.revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned) -> None:
        await self.worker.assigned({tp.partition for tp in assigned})


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
