"""Puts deferred dispatch commands back on the dispatch topic when they are due (deferral.py).

A member of its own consumer group on the delay topics, every tier (each replica reads its share
of the partitions). Records are handled in offset order: a partition whose next record is not due
yet is sought back to it and paused until it is, so nothing is held in memory but that time. Each
due record is written to the dispatch topic (or, with laps left, to the tier for them), and the
offsets are committed once the broker has acknowledged those writes.

At least once: killed between a write and its commit, the next reader writes the same commands
again. A copy carries the same command id, lands in the same partition right after the
original and is skipped by the dispatcher (recent_commands.py), as routing's copies are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from smsgw.kafka.predecessor import MemberFile
from smsgw.v1 import carrier_pb2 as cp

from .deferral import CarrierProbes, DelayTiers, Step, next_step, validity_left

log = logging.getLogger(__name__)

#: The consumer group of the delay tiers' topics (prefixed by SMSGW_TOPIC_PREFIX, as topics are).
DELAYED_GROUP = "carrier-adapter-delayed"


class DelayedCommands:
    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        tiers: DelayTiers,
        dispatch_topic: str,
        longest: float | None = None,
        carrier_down: Callable[[str], bool] | None = None,
        group: str = DELAYED_GROUP,
        clock: Callable[[], float] = time.time,
        member_file: MemberFile | None = None,
    ) -> None:
        self.consumer = consumer
        #: Where this process records its group member id for the next one here (predecessor.py).
        self.member_file = member_file
        self.producer = producer
        self.tiers = tiers
        self.dispatch_topic = dispatch_topic
        self.lap = lap = tiers.lap
        self.clock = clock
        #: Whether a carrier is down for long (Dispatcher.carrier_down); None: every due command goes back.
        self.carrier_down = carrier_down
        self.probes = CarrierProbes(lap, lap if longest is None else longest)
        #: For the lag metric (smsgw.kafka.lag): the group and topic this member reads (its lag
        #: is summed over the tiers, per partition: the messages waiting there).
        self.group = group
        self.topic = tiers.topics[1]
        #: Commands put back on the dispatch topic, written to a delay tier for the rest of their
        #: wait, and held there again because their carrier is still down (metrics).
        self.dispatched = 0
        self.lapped = 0
        self.held = 0
        #: Per owned partition that waits for its next record: when that record is due.
        self.waiting: dict[TopicPartition, float] = {}
        self._next: dict[TopicPartition, int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self.consumer
        while not stop.is_set():
            now = self.clock()
            owned = consumer.assignment()
            if owned and self.member_file is not None:
                self.member_file.remember(consumer)  # written once per member id
            for tp, due in list(self.waiting.items()):
                if tp not in owned:
                    del self.waiting[tp]  # another member's now; it starts from our last commit
                elif due <= now:
                    del self.waiting[tp]
                    consumer.resume(tp)
            for tp in set(self._next) - owned:
                del self._next[tp]
            wait = min([0.5, *(due - now for due in self.waiting.values())])
            batches = await consumer.getmany(timeout_ms=max(1, int(wait * 1000)), max_records=500)
            if batches:
                await self._forward(batches)

    async def _forward(self, batches: dict) -> None:
        now = self.clock()
        writes = []
        commits: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, records in batches.items():
            if tp in self.waiting:
                continue  # fetched before it was paused: read again from its position once due
            tier = self.tiers.tier_of(tp.topic)
            for record in records:
                command = cp.DispatchCommand()
                command.ParseFromString(record.value)
                step, due = next_step(command, record.timestamp / 1000, now, self.lap, tier)
                if step is Step.WAIT:
                    self.consumer.seek(tp, record.offset)
                    self.consumer.pause(tp)
                    self.waiting[tp] = due
                    self._next[tp] = record.offset
                    break
                held = 0
                if step is Step.DISPATCH and self.carrier_down is not None:
                    held = self.probes.laps_to_hold(command, now, self.carrier_down(command.carrier))
                if step is Step.AGAIN:
                    command.laps_left -= tier
                    topic = self.tiers.topic_for(command.laps_left, validity_left(command, now))
                    self.lapped += 1
                elif held:
                    # Its carrier is still down: the next deferral's wait, without an attempt. Its
                    # next DispatchDeferred (if the carrier fails it again) counts these too.
                    command.deferrals += 1
                    command.laps_left = held
                    topic = self.tiers.topic_for(held, validity_left(command, now))
                    self.held += 1
                else:
                    command.laps_left = 0
                    topic = self.dispatch_topic
                    self.dispatched += 1
                writes.append(
                    await self.producer.send(
                        topic, key=record.key, value=command.SerializeToString(), headers=list(record.headers)
                    )
                )
                commits[tp] = OffsetAndMetadata(record.offset + 1, "")
        if writes:
            await asyncio.gather(*writes)
        if commits:
            try:
                await self.consumer.commit(commits)
            except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
                # The partitions' next reader writes these again: copies, skipped by the dispatcher.
                log.warning("delay topic offsets %s not committed (%s)", commits, exc)
            for tp, offset in commits.items():
                self._next[tp] = offset.offset

    def lag(self) -> dict[int, int]:
        """Deferred commands not yet put back, per owned partition number (the broker's end as last
        reported minus the next offset to read, summed over the tiers): how many messages wait on
        the delay topics here."""
        behind: dict[int, int] = {}
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                position = self._next.get(tp)
                if position is None:
                    continue
                behind[tp.partition] = behind.get(tp.partition, 0) + max(0, highwater - position)
        return dict(sorted(behind.items()))
