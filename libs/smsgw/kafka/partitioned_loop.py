"""The consume-decide-produce loop of a group member that keeps keyed state per partition.

routing and receipt each read one topic in a consumer group and keep, per key, what they decided
so far. Each poll hands the loop a batch of records; the service decides on them in pure code and
says what to publish and which state to change; the loop then writes, in this order:

1. the records to publish (events, commands), and waits for the broker's acks;
2. the state changes, on compacted changelog topics partitioned like the input (the state of a
   key read from partition p is in partition p of each changelog), and waits for their acks:
   gathered over the polls of a commit interval (a key changed twice meanwhile is written once)
   and written before the offsets, or at once when the batch has an action to follow;
3. what must follow a durable decision (an automatic reply), then the offsets.

A crash anywhere in between reads the batch again after the restart, and the service decides
again with the same ids (every reader drops a copy): never a state that says "done" for a record
that never reached the log, never an offset committed before both. When the group gives this
member a partition, its changelog partitions are read to their end first
(`smsgw.kafka.changelog`); when it takes one away, the batch in hand is written first.

This replaced faust agents on the hot path: a faust event cost ~250 µs of CPU where this loop
costs ~15 µs (docs/brokers.md, section (c); docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError
from aiokafka.structs import ConsumerRecord

from smsgw.dead_letters import letter_headers
from smsgw.events.topics import DEAD_LETTERS
from smsgw.settings import ServiceSettings

from .changelog import read_changelog
from .clients import make_group_consumer, make_producer
from .predecessor import MemberFile, start_in_place, stop_in_place

log = logging.getLogger(__name__)
#: Records taken in one poll; under load a poll returns what arrived meanwhile, up to this.
MAX_BATCH = 2000
Headers = list[tuple[str, bytes]]
#: A record whose handling raised is tried again after this long, doubling up to the maximum.
FIRST_RETRY_DELAY = 0.2
MAX_RETRY_DELAY = 10.0
#: ...and after this many attempts (about 6 s) it goes to the dead-letter topic and the partition
#: goes on: a handler that raises on the same record every time (a record it cannot decode, a
#: bug) must not stop every message behind it. `smsgw dlq replay` puts it back once fixed.
DEAD_LETTER_AFTER = 5
#: Offsets are committed at most this often (and always before a partition is given up or the
#: member stops). A crash reads what came after the last commit again, as it would a batch in
#: hand: the same decisions with the same ids. One commit per batch cost routing and receipt
#: about a tenth of their CPU under load, and the broker a write each. The state changes are
#: written with the commit too, not with each poll: a poll then waits for one write (its records),
#: not two, and a receipt's correlation and its receipt, read in two polls, write its key once.
COMMIT_INTERVAL = 0.1
#: The shortest a poll waits when the handler's next deadline is near or past (seconds).
MIN_POLL_WAIT = 0.005


@dataclass
class Batch:
    """What one poll decided, written by the loop in the order the module docstring gives."""

    records: list[tuple[str, bytes | None, bytes, Headers]] = field(default_factory=list)
    changes: dict[tuple[str, int, bytes], bytes | None] = field(default_factory=dict)
    then: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)

    def publish(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> None:
        self.records.append((topic, key, value, headers or []))

    def change(self, changelog: str, partition: int, key: bytes, value: bytes | None) -> None:
        """The key's newest value (None: a tombstone); a later change of the same key in the batch wins."""
        self.changes[(changelog, partition, key)] = value


class PartitionedHandler(Protocol):
    """The service's side: pure decisions over state it keeps per partition."""

    changelogs: tuple[str, ...]

    def loaded(self, partition: int, state: dict[str, dict[bytes, bytes]]) -> None:
        """The partition is this member's now; `state` is each changelog's keys and newest values."""

    def revoked(self, partition: int) -> None:
        """The partition went to another member: forget its state."""

    def on_record(self, partition: int, record: ConsumerRecord, batch: Batch) -> None:
        """Decides on one input record (state changed in memory at once, and in `batch`)."""

    def on_tick(self, batch: Batch) -> None:
        """Called after every poll (at least every `tick_interval`): deadlines that came."""


class PartitionedLoop:
    def __init__(
        self,
        settings: ServiceSettings,
        group: str,
        topic: str,
        handler: PartitionedHandler,
        *,
        tick_interval: float = 0.25,
        max_batch: int = MAX_BATCH,
        commit_interval: float = COMMIT_INTERVAL,
        next_deadline: Callable[[], float | None] | None = None,
        lane: Callable[[ConsumerRecord], bool] | None = None,
        member_file: MemberFile | None = None,
    ) -> None:
        self.settings = settings
        self.group = group
        self.topic = topic
        self.handler = handler
        self.tick_interval = tick_interval
        #: The handler's next deadline (seconds since the epoch; None: none): a quiet poll ends
        #: then, not up to `tick_interval` later (routing's scheduled sends go out on time).
        self.next_deadline = next_deadline
        #: Which records go ahead of the rest of their poll (routing: a HIGH message's
        #: MessageQueued); None: every record in its turn. See `_decide_ahead`.
        self.lane = lane
        self.max_batch = max_batch
        self.commit_interval = commit_interval
        #: Set once the first assignment is loaded: the member may report it serves.
        self.ready = asyncio.Event()
        self.owned: set[int] = set()
        self._suspended: set[int] = set()  # revoked, state kept until the next assignment is known
        self._next: dict[int, int] = {}  # partition -> offset after the last record handled
        self._uncommitted: dict[TopicPartition, int] = {}  # written, offsets not yet committed
        #: State changes decided, not yet written: the newest value of each key since the last commit.
        self._unwritten: dict[tuple[str, int, bytes], bytes | None] = {}
        self._committed_at = 0.0
        self._lock = asyncio.Lock()  # one batch at a time; a rebalance waits for it
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.dead_letter_topic = settings.topic(DEAD_LETTERS)
        self._attempts: dict[tuple[TopicPartition, int], int] = {}  # failed attempts of a held record
        self._held: dict[TopicPartition, tuple[float, float]] = {}  # paused after a failure: (resume at, next pause)
        #: Records sent to the dead-letter topic by this member (a metric, tests).
        self.dead_lettered = 0
        #: Where this process records its member id for the next one here (predecessor.py); None: not kept.
        self.member_file = member_file

    def caught_up(self, partition: int) -> bool:
        """True when this member has handled its partition up to the end the broker last reported:
        a deadline that depends on what may still come (a receipt waiting for its submit, read
        after a restart) is decided only then."""
        if self._consumer is None or partition not in self.owned:
            return False
        highwater = self._consumer.highwater(TopicPartition(self.topic, partition))
        return highwater is not None and (highwater == 0 or self._next.get(partition, 0) >= highwater)

    def lag(self) -> dict[int, int]:
        """Records behind the end the broker last reported, per owned partition (what a scrape sees)."""
        if self._consumer is None:
            return {}
        behind = {}
        for partition in sorted(self.owned):
            highwater = self._consumer.highwater(TopicPartition(self.topic, partition))
            if highwater is not None and partition in self._next:
                behind[partition] = max(0, highwater - self._next[partition])
        return behind

    async def run(self, stop: asyncio.Event) -> None:
        # Made here: aiokafka's clients belong to the running loop.
        consumer = self._consumer = make_group_consumer(self.settings, self.group)
        producer = self._producer = make_producer(self.settings)
        await producer.start()
        # A process killed here left its member in the group: removed, so the join need not wait
        # for its session to expire (predecessor.py).
        consumer.subscribe([self.topic], listener=_Rebalance(self))
        await start_in_place(consumer, self.member_file, self.settings.kafka_connection())
        loop = asyncio.get_running_loop()
        self._committed_at = loop.time()
        try:
            while not stop.is_set():
                self._resume_held(consumer, loop.time())
                polled = await consumer.getmany(timeout_ms=self._poll_timeout_ms(), max_records=self.max_batch)
                async with self._lock:
                    await self._learn_positions(consumer)
                    ahead: dict[TopicPartition, int] = {}
                    if self.lane is not None:
                        polled, ahead = await self._decide_ahead(polled)
                    batch = Batch()
                    failed = self._decide(consumer, polled, batch)
                    for tp, handled in ahead.items():
                        if tp not in failed and tp.partition in self.owned:
                            self._next[tp.partition] = batch.offsets[tp] = max(batch.offsets.get(tp, 0), handled)
                    if not failed:
                        self.handler.on_tick(batch)
                    await self._write(batch)
                # Held, not skipped: a record that failed (and what came after it in its
                # partition) is read again after a pause, doubling, until it goes through or goes
                # to the dead letters; the other partitions go on meanwhile.
                for tp in failed:
                    _, delay = self._held.get(tp, (0.0, FIRST_RETRY_DELAY))
                    self._held[tp] = (loop.time() + delay, min(delay * 2, MAX_RETRY_DELAY))
                    with contextlib.suppress(IllegalStateError):  # revoked meanwhile
                        consumer.pause(tp)
        finally:
            if self._uncommitted or self._unwritten:
                try:
                    async with self._lock:
                        await self._commit()
                except Exception:  # the records are read again after the restart
                    log.warning("%s: offsets %s not committed at stop", self.group, self._uncommitted, exc_info=True)
            await stop_in_place(consumer, self.member_file)
            await producer.stop()

    def _poll_timeout_ms(self) -> int:
        """How long a poll may wait for records: a tick at the latest, or until the handler's
        next deadline (at least a few ms: a deadline a failed batch keeps from being handled
        must not spin the loop)."""
        wait = self.tick_interval
        if self.next_deadline is not None and (at := self.next_deadline()) is not None:
            wait = min(wait, max(MIN_POLL_WAIT, at - time.time()))
        return math.ceil(wait * 1000)

    def _resume_held(self, consumer: AIOKafkaConsumer, now: float) -> None:
        """Partitions held after a failure whose pause is over are read again (their delay is kept
        until a record of theirs goes through); held ones no longer owned are forgotten."""
        assigned = consumer.assignment()
        for tp, (resume_at, _delay) in list(self._held.items()):
            if tp not in assigned:
                del self._held[tp]
            elif resume_at <= now and consumer.paused() and tp in consumer.paused():
                consumer.resume(tp)

    async def _decide_ahead(self, polled: dict) -> tuple[dict, dict[TopicPartition, int]]:
        """The lane: the records of the keys that have a record in it (`lane`) are decided first,
        each key's in order, and what they decided is written (and acknowledged) before the rest
        of the poll is decided. Under load a poll is up to `max_batch` records and deciding them
        all took routing ~0.3 s; an OTP among them waited for all of it.

        Their offsets are not committed with this write: they are the poll's, committed when the
        rest is written too (a crash in between reads the whole poll again, and the records
        decided here are decided again with the same ids, as after any crash). A record of the
        lane that raises, and the rest of its key's, are left to the poll's turn, which holds or
        dead-letters it as usual. Returns the records still to decide and, per partition, the
        offset after the last record decided here."""
        assert self.lane is not None
        keys = {record.key for records in polled.values() for record in records if self.lane(record)}
        if not keys:
            return polled, {}
        early = Batch()
        ahead: dict[TopicPartition, int] = {}
        decided: set[tuple[TopicPartition, int]] = set()
        for tp, records in polled.items():
            if tp.partition not in self.owned:
                continue  # fetched before its state was loaded: `_decide` seeks it back
            for record in records:
                if record.key not in keys:
                    continue
                try:
                    self.handler.on_record(tp.partition, record, early)
                except Exception:  # noqa: BLE001 - decided (and held if need be) in the poll's turn
                    break
                decided.add((tp, record.offset))
                ahead[tp] = record.offset + 1
        if early.records or early.changes or early.then:
            await self._write(early)
        rest = {tp: [r for r in records if (tp, r.offset) not in decided] for tp, records in polled.items()}
        return {tp: records for tp, records in rest.items() if records}, ahead

    def _decide(self, consumer: AIOKafkaConsumer, polled: dict, batch: Batch) -> set[TopicPartition]:
        """Hands the polled records to the service in order, partition by partition; returns the
        partitions where one raised. That record and the rest of its partition's are fetched
        again (the partition sought back and held); what was decided before it is written as
        usual, and the other partitions are decided as if nothing happened."""
        failed: set[TopicPartition] = set()
        for tp, records in polled.items():
            if tp.partition not in self.owned:
                # Fetched before its state was loaded (aiokafka may fetch for a partition before
                # the assignment callback ends): read it again later.
                with contextlib.suppress(IllegalStateError):  # or revoked meanwhile
                    consumer.seek(tp, records[0].offset)
                continue
            handled = None
            for record in records:
                try:
                    self.handler.on_record(tp.partition, record, batch)
                except Exception as exc:
                    attempts = self._attempts[(tp, record.offset)] = self._attempts.get((tp, record.offset), 0) + 1
                    if attempts < DEAD_LETTER_AFTER:
                        log.exception(
                            "%s: %s@%d could not be handled (attempt %d); reading it again",
                            self.group,
                            tp,
                            record.offset,
                            attempts,
                        )
                        consumer.seek(tp, record.offset)
                        failed.add(tp)
                        break
                    del self._attempts[(tp, record.offset)]
                    self._dead_letter(tp, record, exc, batch)
                else:
                    if self._attempts:  # went through after failing: forget its count
                        self._attempts.pop((tp, record.offset), None)
                handled = record.offset + 1
            if handled is not None:
                self._next[tp.partition] = batch.offsets[tp] = handled
                if tp not in failed:
                    self._held.pop(tp, None)  # its records go through again
        return failed

    def _dead_letter(self, tp: TopicPartition, record: ConsumerRecord, error: Exception, batch: Batch) -> None:
        """The record, as read, to the dead-letter topic with where it came from and why; written
        with the batch, before its offset is committed (never lost, at worst there twice)."""
        log.error(
            "%s: %s@%d failed %d times (%s); sent to %s, the partition goes on",
            self.group,
            tp,
            record.offset,
            DEAD_LETTER_AFTER,
            type(error).__name__,
            self.dead_letter_topic,
        )
        headers = letter_headers(
            record.headers, source=(tp.topic, tp.partition, record.offset), service=self.group, error=error
        )
        batch.publish(self.dead_letter_topic, record.key, record.value or b"", headers)
        self.dead_lettered += 1

    async def _learn_positions(self, consumer: AIOKafkaConsumer) -> None:
        """Where each owned partition starts, for `caught_up` before its first record arrives
        (a partition read to its end before a restart may see no record for a long time)."""
        for partition in self.owned - self._next.keys():
            with contextlib.suppress(IllegalStateError, TimeoutError):
                self._next[partition] = await asyncio.wait_for(
                    consumer.position(TopicPartition(self.topic, partition)), 1.0
                )

    async def _write(self, batch: Batch) -> None:
        """Any broker error ends the run (and the process): the batch is read again after a restart."""
        assert self._producer is not None and self._consumer is not None
        send = self._producer.send
        acks = [
            await send(topic, value=value, key=key, headers=headers) for topic, key, value, headers in batch.records
        ]
        await asyncio.gather(*acks)
        self._unwritten.update(batch.changes)
        if batch.then:
            # An action follows a durable decision: the state that says it was taken is written
            # first (a restart must not decide, and act, again).
            await self._write_changes()
        for action in batch.then:
            try:
                await action()
            except Exception:
                log.exception("%s: an action after a written batch failed", self.group)
        self._uncommitted.update(batch.offsets)
        if (self._uncommitted or self._unwritten) and (
            asyncio.get_running_loop().time() - self._committed_at >= self.commit_interval
        ):
            await self._commit()

    async def _write_changes(self) -> None:
        """Writes the state changes decided so far, and waits for their acks."""
        assert self._producer is not None
        changes, self._unwritten = self._unwritten, {}
        send = self._producer.send
        acks = [
            await send(changelog, key=key, value=value, partition=partition)
            for (changelog, partition, key), value in changes.items()
        ]
        await asyncio.gather(*acks)

    async def _commit(self, partitions: set[int] | None = None) -> None:
        """Writes the state changes decided so far (every partition's), then commits the written
        offsets (of `partitions` only, if given): never an offset ahead of the state it led to."""
        assert self._consumer is not None
        await self._write_changes()
        self._committed_at = asyncio.get_running_loop().time()
        offsets = {
            tp: offset for tp, offset in self._uncommitted.items() if partitions is None or tp.partition in partitions
        }
        if not offsets:
            return
        for tp in offsets:
            del self._uncommitted[tp]
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            # The partition's next owner reads these records again: same ids, nothing twice.
            log.warning("%s: offsets %s not committed (%s); they will be read again", self.group, offsets, exc)

    async def assigned(self, partitions: set[int]) -> None:
        async with self._lock:
            # aiokafka's rebalances are eager: every partition is revoked, then the new assignment
            # given. A partition kept across one (nobody else had it meanwhile) keeps its state;
            # one that went elsewhere is forgotten now; a new one is loaded from its changelogs.
            for partition in self._suspended - partitions:
                self.handler.revoked(partition)
                self._next.pop(partition, None)
            kept = self._suspended & partitions
            self._suspended = set()
            new = partitions - kept - self.owned
            if new:
                loaded = {
                    changelog: await read_changelog(self.settings, changelog, new)
                    for changelog in self.handler.changelogs
                }
                for partition in sorted(new):
                    self.handler.loaded(
                        partition, {changelog: loaded[changelog][partition] for changelog in self.handler.changelogs}
                    )
                    self._next.pop(partition, None)
                log.info(
                    "%s: partitions %s loaded (%s records)",
                    self.group,
                    sorted(new),
                    sum(len(values) for per_changelog in loaded.values() for values in per_changelog.values()),
                )
            self.owned |= partitions
            self.ready.set()

    async def revoked(self, partitions: set[int]) -> None:
        # The lock waits for the batch in hand: its records, changes and offsets are written
        # before the partition's next owner reads the changelog. Its state is kept until the new
        # assignment says whether the partition stays here.
        async with self._lock:
            if self._consumer is not None:
                await self._commit(partitions)
            self._suspended |= partitions & self.owned
            self.owned -= partitions


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: PartitionedLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked) -> None:
        await self.loop.revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned) -> None:
        if self.loop.member_file is not None and self.loop._consumer is not None:  # noqa: SLF001 - its own
            self.loop.member_file.remember(self.loop._consumer)  # noqa: SLF001
        await self.loop.assigned({tp.partition for tp in assigned})
