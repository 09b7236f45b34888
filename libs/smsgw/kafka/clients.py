"""aiokafka producers and consumers configured the one way this project uses them."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from smsgw.events.topics import ALL_TOPICS, TopicSpec
from smsgw.kafka.connection import KafkaConnection
from smsgw.kafka.partitioner import Murmur2Partitioner
from smsgw.settings import ServiceSettings

log = logging.getLogger(__name__)


def make_producer(settings: ServiceSettings, *, linger_ms: int | None = None) -> AIOKafkaProducer:
    """`linger_ms`: this producer's own, instead of the service's setting."""
    # acks=all: a client is told "accepted" only once every in-sync replica has the event.
    return AIOKafkaProducer(
        **settings.kafka_connection().client_kwargs(),
        acks="all",
        enable_idempotence=settings.kafka_idempotence,
        linger_ms=settings.kafka_linger_ms if linger_ms is None else linger_ms,
        max_batch_size=settings.kafka_max_batch_size,
        client_id=f"smsgw-{settings.instance_id}",
        request_timeout_ms=settings.kafka_request_timeout_ms,
        # Kafka's partitions for keys, a third of aiokafka's default's CPU per record (partitioner.py).
        partitioner=Murmur2Partitioner(),
    )


def make_group_consumer(settings: ServiceSettings, group_id: str, *topics: str) -> AIOKafkaConsumer:
    # Manual commits after the work is done: a crash replays, never skips.
    return AIOKafkaConsumer(
        *topics,
        **settings.kafka_connection().client_kwargs(),
        group_id=settings.topic_prefix + group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        client_id=f"smsgw-{settings.instance_id}",
        max_poll_interval_ms=300_000,
        isolation_level="read_committed" if settings.kafka_idempotence else "read_uncommitted",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )


#: A bounded read's fetch wait and metadata retry back-off (ms): see make_reader.
BOUNDED_READ_WAIT_MS = 10


def make_reader(settings: ServiceSettings, *, bounded: bool = False) -> AIOKafkaConsumer:
    """A consumer without a group: every replica reads every partition (read models).

    `bounded`: a reader that reads partitions up to end offsets it took first (a changelog
    loaded on assignment, the dispatcher's look-ups) and never waits for new records. Its fetch
    wait is short: a fetch whose partitions have nothing left (the last records were compacted
    away or are transaction markers) is otherwise held by the broker the whole fetch wait before
    the reader sees it is done. And its metadata retry back-off is short: a new reader learns the
    topics it reads by a retry, which waited 100 ms (aiokafka's default back-off). Both were on
    the way of the first message of a partition a carrier-adapter replica had just taken up
    (~100 ms each with a 100 ms fetch wait)."""
    wait = min(BOUNDED_READ_WAIT_MS, settings.kafka_fetch_max_wait_ms) if bounded else settings.kafka_fetch_max_wait_ms
    extra = {"retry_backoff_ms": BOUNDED_READ_WAIT_MS} if bounded else {}
    return AIOKafkaConsumer(
        **settings.kafka_connection().client_kwargs(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id=f"smsgw-reader-{settings.instance_id}",
        fetch_max_wait_ms=wait,
        **extra,
    )


async def ensure_topics(
    kafka: KafkaConnection | str,
    prefix: str = "",
    specs: tuple[TopicSpec, ...] = ALL_TOPICS,
    replication_factor: int = 1,
    timeout: float = 30.0,
) -> None:
    """Creates missing topics with their registered partitions and config (idempotent)."""
    admin = AIOKafkaAdminClient(**KafkaConnection.of(kafka).client_kwargs(), request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=prefix + s.name,
                num_partitions=s.partitions,
                replication_factor=replication_factor,
                topic_configs=s.config(),
            )
            for s in specs
            if prefix + s.name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
        await _wait_for_leaders(admin, [prefix + s.name for s in specs], timeout)
    finally:
        await admin.close()


async def prepare_topics(settings: ServiceSettings, progress_every: float = 10.0) -> None:
    """Creates the platform's topics (SMSGW_CREATE_TOPICS=true), or waits for them without a
    deadline, saying which are missing: in production they are made with their replication and
    config (k8s/base/kafka-topics.yaml), and a topic made on the fly would get the broker's defaults."""
    kafka = settings.kafka_connection()
    if settings.create_topics:
        await ensure_topics(kafka, settings.topic_prefix)
        return
    names = [settings.topic_prefix + spec.name for spec in ALL_TOPICS]
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        said = loop.time() - progress_every  # the first time at once, then every progress_every
        while True:
            existing = set(await admin.list_topics())
            missing = [name for name in names if name not in existing]
            if not missing:
                await _wait_for_leaders(admin, names, timeout=60.0)
                return
            if loop.time() - said >= progress_every:
                log.warning(
                    "waiting for topics %s: create them (k8s/base/kafka-topics.yaml), "
                    "or set SMSGW_CREATE_TOPICS=true on a development cluster",
                    ", ".join(missing),
                )
                said = loop.time()
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        described = await admin.describe_topics(names)
        ready = all(
            t.get("error_code", 0) == 0
            and t.get("partitions")
            and all(p.get("leader", -1) >= 0 for p in t["partitions"])
            for t in described
        )
        if ready:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"topics {names} have no leaders after {timeout}s")
        await asyncio.sleep(0.1)


async def wait_for_partitions(kafka: KafkaConnection | str, topic: str, timeout: float = 30.0) -> set[int]:
    """The partition numbers of *topic*, once it exists (a reader started before the topic's creator)."""
    admin = AIOKafkaAdminClient(**KafkaConnection.of(kafka).client_kwargs())
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            (described,) = await admin.describe_topics([topic])
            partitions = {p["partition"] for p in described.get("partitions") or ()}
            if partitions and described.get("error_code", 0) == 0:
                return partitions
            if loop.time() > deadline:
                raise TimeoutError(
                    f"topic {topic} not found after {timeout:g}s; create it "
                    "(k8s/base/kafka-topics.yaml, or smsgw.kafka.clients.ensure_topics)"
                )
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
