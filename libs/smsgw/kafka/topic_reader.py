"""Reads a whole topic, every partition from the beginning, without a consumer group.

For state every replica needs in full (intake's read models, carrier-adapter's phone
directory). `caught_up` is set once the reader has reached the end offsets it saw at
start. A record the handler cannot take is logged and skipped: one poison record must
not stop the state behind it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from smsgw.kafka.clients import wait_for_partitions
from smsgw.kafka.connection import KafkaConnection

log = logging.getLogger(__name__)


class WholeTopicReader:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        kafka: KafkaConnection | str,
        on_record: Callable[[TopicPartition, ConsumerRecord], object],
        *,
        name: str,
        max_records: int = 1000,
        on_caught_up: Callable[[], None] | None = None,
    ):
        self._consumer = consumer
        self._topic = topic
        self._kafka = kafka
        self._on_record = on_record
        self._name = name
        self._max_records = max_records
        self._on_caught_up = on_caught_up
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self._consumer.start()
        partitions = [
            TopicPartition(self._topic, p) for p in sorted(await wait_for_partitions(self._kafka, self._topic))
        ]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        ends = await self._consumer.end_offsets(partitions)
        self._task = asyncio.create_task(self._run(ends), name=self._name)

    async def _run(self, ends: dict[TopicPartition, int]) -> None:
        behind = {tp: end for tp, end in ends.items() if end > 0}
        if not behind:
            self._mark_caught_up()
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=self._max_records)
            for tp, records in batches.items():
                for record in records:
                    try:
                        self._on_record(tp, record)
                    except Exception:
                        log.exception("%s: skipping unreadable record %s@%s", self._name, tp, record.offset)
            if not self.caught_up.is_set():
                for tp in list(behind):
                    if await self._consumer.position(tp) >= behind[tp]:
                        del behind[tp]
                if not behind:
                    self._mark_caught_up()

    def _mark_caught_up(self) -> None:
        if self._on_caught_up is not None:
            self._on_caught_up()
        self.caught_up.set()

    async def positions(self) -> dict[int, int]:
        """Next offset this reader will read, per partition: how far its view of the log goes."""
        return {tp.partition: await self._consumer.position(tp) for tp in self._consumer.assignment()}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()
