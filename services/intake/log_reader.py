"""Feeds the projection from the message-events topic, from the beginning.

No consumer group: every intake replica reads every partition, so any replica
can answer for any message. `caught_up` is set once the reader has reached the
end offsets it saw at start, which is when the replica reports SERVING.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from smsgw.events.envelope import decode_event

from typing import Protocol

from smsgw.v1 import events_pb2 as ev


class LogSink(Protocol):
    def apply_from_log(self, envelope: ev.EventEnvelope, partition: int, offset: int) -> None: ...

    def __len__(self) -> int: ...

log = logging.getLogger(__name__)


class EventLogReader:
    def __init__(self, consumer: AIOKafkaConsumer, topic: str, projection: LogSink, bootstrap: str):
        self._consumer = consumer
        self._bootstrap = bootstrap
        self._topic = topic
        self._projection = projection
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self._consumer.start()
        partitions = await self._wait_for_partitions()
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        end_offsets = await self._consumer.end_offsets(tps)
        self._task = asyncio.create_task(self._run(end_offsets), name="event-log-reader")

    async def _wait_for_partitions(self, timeout: float = 30.0) -> set[int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        await admin.start()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                (described,) = await admin.describe_topics([self._topic])
                partitions = {p["partition"] for p in described.get("partitions") or ()}
                if partitions and described.get("error_code", 0) == 0:
                    return partitions
                if loop.time() > deadline:
                    raise TimeoutError(f"topic {self._topic} not found; create it (smsgw.kafka.clients.ensure_topics)")
                await asyncio.sleep(0.2)
        finally:
            await admin.close()

    async def _run(self, end_offsets: dict[TopicPartition, int]) -> None:
        remaining = {tp: end for tp, end in end_offsets.items() if end > 0}
        if not remaining:
            self.caught_up.set()
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, records in batches.items():
                for record in records:
                    try:
                        self._projection.apply_from_log(decode_event(record.value), tp.partition, record.offset)
                    except Exception:  # a poison record must not stop the read model
                        log.exception("skipping undecodable record %s@%s", tp, record.offset)
            if not self.caught_up.is_set():
                for tp in list(remaining):
                    if await self._consumer.position(tp) >= remaining[tp]:
                        del remaining[tp]
                if not remaining:
                    log.info("read model of %s caught up: %d entries", self._topic, len(self._projection))
                    self.caught_up.set()

    async def positions(self) -> dict[int, int]:
        """Next offset this reader will read, per partition: how far its view of the log goes."""
        return {tp.partition: await self._consumer.position(tp) for tp in self._consumer.assignment()}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()
