"""The services' producer: librdkafka (confluent-kafka) behind the part of aiokafka's producer API
the services use (`start`, `send`, `send_and_wait`, `flush`, `partitions_for`, `stop`).

Why: a record produced costs aiokafka's pure-Python client several times the CPU librdkafka's C
client spends (docs/benchmarks.md, "what the Kafka client costs per record"), and every service
writes several records a message. Reading stays on aiokafka: its group protocol is what the
consume loops' hand-overs, fencing and commits are built on.

How: librdkafka queues each record from the event loop without blocking; a thread of this producer
serves librdkafka's delivery reports (`poll`) and hands each poll's reports to the event loop in
one call, which resolves the records' futures. Errors are raised as aiokafka's error classes
(`smsgw.kafka.rdkafka_errors`), so callers tell a lost connection from a fenced producer the one
way they always did. Records are partitioned by the Java client's murmur2, as aiokafka's producers
(smsgw.kafka.partitioner) and every other Kafka client partition them.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import confluent_kafka
from aiokafka.errors import ProducerClosed, UnknownTopicOrPartitionError
from aiokafka.structs import RecordMetadata, TopicPartition

from .rdkafka_errors import as_aiokafka_error

#: How long the report thread waits in one poll when nothing is delivered (s): bounds how long
#: `stop` waits for it, and nothing else (a report wakes the poll at once).
POLL_WAIT = 0.1

Report = tuple[asyncio.Future, Any, Any]


class RdKafkaProducer:
    """`config` is librdkafka's (`KafkaConnection.librdkafka_config()` and the producer's own)."""

    def __init__(self, config: dict[str, Any], *, start_timeout: float = 15.0) -> None:
        self._config = config
        self._start_timeout = start_timeout
        self._producer: confluent_kafka.Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Appended by librdkafka's callbacks inside `poll`, which only the report thread calls
        # (and `stop`, once that thread has ended); swapped out by that thread after each poll.
        self._reports: list[Report] = []
        #: The futures of records not yet acknowledged (for `flush` and `stop`).
        self._pending: set[asyncio.Future] = set()
        self._serving = False
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """Connects, and returns once the cluster answered (as aiokafka's start does)."""
        self._loop = asyncio.get_running_loop()
        producer = self._producer = confluent_kafka.Producer(self._config)
        self._serving = True
        self._thread = threading.Thread(target=self._serve_reports, name="rdkafka-reports", daemon=True)
        self._thread.start()
        try:
            await self._loop.run_in_executor(None, functools.partial(producer.list_topics, timeout=self._start_timeout))
        except confluent_kafka.KafkaException as error:
            await self.stop()
            raise as_aiokafka_error(error.args[0]) from error

    def _serve_reports(self) -> None:
        producer, loop = self._producer, self._loop
        assert producer is not None and loop is not None
        while self._serving:
            producer.poll(POLL_WAIT)
            if self._reports:
                reports, self._reports = self._reports, []
                loop.call_soon_threadsafe(self._settle, reports)

    def _report(self, future: asyncio.Future, error: Any, record: Any) -> None:
        self._reports.append((future, error, record))

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future:
        """Queues the record; the future it returns resolves to its RecordMetadata once the
        brokers acknowledged it (or to the error that ended it)."""
        producer, loop = self._producer, self._loop
        if producer is None or loop is None:
            raise ProducerClosed()
        future = loop.create_future()
        options: dict[str, Any] = {"on_delivery": functools.partial(self._report, future)}
        if partition is not None:
            options["partition"] = partition
        if timestamp_ms is not None:
            options["timestamp"] = timestamp_ms
        if headers:
            options["headers"] = headers
        while True:
            try:
                producer.produce(topic, value, key, **options)
                self._pending.add(future)
                return future
            except BufferError:
                # librdkafka's queue is full (`queue.buffering.max.messages`): wait for acks to
                # make room, as aiokafka's send waits for buffer space.
                await asyncio.sleep(0.005)
            except confluent_kafka.KafkaException as error:
                raise as_aiokafka_error(error.args[0]) from error

    async def send_and_wait(self, *args: Any, **kwargs: Any) -> RecordMetadata:
        return await (await self.send(*args, **kwargs))

    async def flush(self) -> None:
        """Waits until every record sent so far is acknowledged (or failed)."""
        if self._pending:
            await asyncio.wait(list(self._pending))

    async def partitions_for(self, topic: str) -> set[int]:
        producer, loop = self._producer, self._loop
        if producer is None or loop is None:
            raise ProducerClosed()
        metadata = await loop.run_in_executor(None, functools.partial(producer.list_topics, topic, timeout=10))
        found = metadata.topics.get(topic)
        if found is None:
            raise UnknownTopicOrPartitionError(f"no metadata for topic {topic}")
        if found.error is not None:
            raise as_aiokafka_error(found.error)
        return set(found.partitions)

    async def stop(self, timeout: float = 10.0) -> None:
        """Waits (up to `timeout`) for the records sent to be acknowledged, then stops; the
        futures of records still unacknowledged then fail."""
        producer, loop = self._producer, self._loop
        if producer is None or loop is None:
            return
        self._producer = None
        try:
            if self._pending:
                await asyncio.wait(list(self._pending), timeout=timeout)
        finally:
            self._serving = False
            if self._thread is not None:
                await loop.run_in_executor(None, self._thread.join)
                self._thread = None
            # What is still unacknowledged fails now (its report says purged), rather than never.
            producer.purge()
            producer.poll(0)
            reports, self._reports = self._reports, []
            self._settle(reports)

    def _settle(self, reports: list[Report]) -> None:
        """In the event loop: each record's future gets its metadata or its error."""
        pending = self._pending
        for future, error, record in reports:
            pending.discard(future)
            if future.done():  # the caller cancelled its wait: the record went all the same
                continue
            if error is not None:
                future.set_exception(as_aiokafka_error(error))
                continue
            topic, partition = record.topic(), record.partition()
            _, timestamp = record.timestamp()
            future.set_result(
                RecordMetadata(topic, partition, TopicPartition(topic, partition), record.offset(), timestamp, 0, -1)
            )
