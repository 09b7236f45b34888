"""The webhook feed sends nothing of a partition before it has rebuilt the partition's state.

aiokafka hands out a newly assigned partition's records while `on_partitions_assigned` still
runs. The feed rebuilds there (it folds the partition up to its committed offset): a record
handled before that fold found no state for its message and made no webhook. A full-cluster
restart under `make chaos` lost the last webhooks of the messages in flight that way. Here the
rebuild is slowed down, on a real broker, and the record after the commit must still make its
webhook.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from smsgw.events.envelope import encode
from smsgw.kafka.connection import KafkaConnection
from smsgw_receipt.webhook_feed import WebhookFeed
from smsgw_receipt.webhooks.accounts import StaticAccountSecrets
from smsgw_receipt.webhooks.dead_letters import SqliteDeadLetterStore
from smsgw_receipt.webhooks.payload import Webhook
from tests.unit.test_webhook_payload import happy_path

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


class Hooks:
    """In place of the HTTP dispatcher (its own tests cover the HTTP side): what would be sent."""

    def __init__(self) -> None:
        self.sent: list = []
        self.busy = False  # what crowded() answers: a receiver whose queue is half full

    def crowded(self) -> bool:
        return self.busy

    def headroom(self) -> int:
        return 1_000_000

    def enqueue(self, hook, on_settled=None) -> None:
        self.sent.append(hook)
        if on_settled is not None:
            on_settled()


async def _topic_with_history(bootstrap: str, name: str, group: str) -> None:
    """The message's events; the group committed after the first four (SENT), not DELIVERED."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
        deadline = time.monotonic() + 10
        while name not in await admin.list_topics():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for envelope in happy_path():
            await producer.send_and_wait(name, key=b"m1", value=encode(envelope))
    finally:
        await producer.stop()
    committer = AIOKafkaConsumer(name, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        await committer.getmany(timeout_ms=2000)
        await committer.commit({TopicPartition(name, 0): OffsetAndMetadata(4, "")})
    finally:
        await committer.stop()


def _feed(broker, topic: str, group: str, hooks: Hooks) -> tuple[WebhookFeed, AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        auto_offset_reset="earliest",  # as the service's (a group without commits reads from the start)
    )
    feed = WebhookFeed(
        consumer=consumer,
        kafka=KafkaConnection(bootstrap=broker.bootstrap),
        events_topic=topic,
        inbound_topic=f"{topic}-inbound-unused",
        dispatcher=hooks,  # type: ignore[arg-type]  # records what would be sent, in place of WebhookDispatcher
        secrets=StaticAccountSecrets.single("s" * 20),
    )
    return feed, consumer


@asynccontextmanager
async def feed_running(feed: WebhookFeed, consumer: AIOKafkaConsumer, topic: str) -> AsyncIterator[asyncio.Task]:
    """The feed subscribed and running (the task, to check it has not ended); stopped on the way out."""
    stop = asyncio.Event()
    consumer.subscribe([topic], listener=feed)
    await consumer.start()
    running = asyncio.create_task(feed.run(stop))
    try:
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await consumer.stop()


async def test_a_record_after_the_commit_makes_its_webhook_though_the_rebuild_is_slow(broker, monkeypatch):
    topic, group = f"events-{uuid.uuid4().hex[:8]}", f"hooks-{uuid.uuid4().hex[:8]}"
    await _topic_with_history(broker.bootstrap, topic, group)

    real_rebuild = WebhookFeed._rebuild

    async def slow_rebuild(self, tps):
        await asyncio.sleep(1.5)  # a partition with history: the fetcher is faster than the fold
        await real_rebuild(self, tps)

    monkeypatch.setattr(WebhookFeed, "_rebuild", slow_rebuild)
    hooks = Hooks()
    feed, consumer = _feed(broker, topic, group, hooks)
    async with feed_running(feed, consumer, topic) as running:
        deadline = time.monotonic() + 30
        while not any(b'"DELIVERED"' in hook.body for hook in hooks.sent):
            assert time.monotonic() < deadline, f"no DELIVERED webhook; sent: {[h.body[:80] for h in hooks.sent]}"
            assert not running.done(), running
            await asyncio.sleep(0.1)
    # Only the record after the commit made a webhook: the rebuilt ones are folded, not sent again.
    assert len(hooks.sent) == 1


async def test_the_feed_stops_reading_while_a_receiver_is_crowded_and_goes_on_once_it_drains(broker):
    """Backpressure instead of dead letters: a burst (a carrier's backlog after an outage) waits in
    Kafka while a healthy receiver's queue is half full."""
    topic, group = f"events-{uuid.uuid4().hex[:8]}", f"hooks-{uuid.uuid4().hex[:8]}"
    await _topic_with_history(broker.bootstrap, topic, group)
    hooks = Hooks()
    hooks.busy = True
    feed, consumer = _feed(broker, topic, group, hooks)
    async with feed_running(feed, consumer, topic):
        await asyncio.wait_for(feed.assigned.wait(), 30)
        await asyncio.sleep(2.0)  # records there to read, and a crowded receiver
        assert hooks.sent == []
        hooks.busy = False
        deadline = time.monotonic() + 30
        while not hooks.sent:
            assert time.monotonic() < deadline, "the feed did not go on once the receiver drained"
            await asyncio.sleep(0.1)
    assert [b'"DELIVERED"' in hook.body for hook in hooks.sent] == [True]


class SlowReceiver(Hooks):
    """The dispatcher's queue for one healthy endpoint of `size`, drained a few at a time: a webhook
    that finds it full would be dead-lettered ("queue full")."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.queue: list = []
        self.overflowed = 0
        self.delivered: list = []

    def crowded(self) -> bool:
        return len(self.queue) >= self.size / 2

    def headroom(self) -> int:
        return self.size - len(self.queue)

    def enqueue(self, hook, on_settled=None) -> None:
        if len(self.queue) >= self.size:
            self.overflowed += 1
        self.queue.append((hook, on_settled))

    async def drain(self, per_tick: int, tick: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(tick)
            for hook, on_settled in self.queue[:per_tick]:
                self.delivered.append(hook)
                if on_settled is not None:
                    on_settled()
            del self.queue[:per_tick]


async def test_a_burst_waits_in_kafka_and_never_overflows_a_slow_receivers_queue(broker):
    """500 events already in the log (a backlog), a receiver queue of 20 drained 10 every 20 ms:
    every poll reads no more than the queue has room for. Reading 1,000 at a time overflowed a
    half-full queue into "queue full" dead letters (273,000 in a 30-minute soak at 250/s)."""
    topic, group = f"events-{uuid.uuid4().hex[:8]}", f"hooks-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        for n in range(100):
            for envelope in happy_path():
                envelope.message_id, envelope.event_id = f"m{n}", str(uuid.uuid4())
                await producer.send(topic, key=f"m{n}".encode(), value=encode(envelope))
        await producer.flush()
    finally:
        await producer.stop()
    receiver = SlowReceiver(size=20)
    feed, consumer = _feed(broker, topic, group, receiver)
    stop = asyncio.Event()
    draining = asyncio.create_task(receiver.drain(10, 0.02, stop))
    try:
        async with feed_running(feed, consumer, topic) as running:
            deadline = time.monotonic() + 60
            while len(receiver.delivered) < 400:  # four status changes of each message
                assert time.monotonic() < deadline, f"{len(receiver.delivered)} of 400 webhooks delivered"
                assert not running.done(), running
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await draining
    assert receiver.overflowed == 0
    assert len({hook.event_id for hook in receiver.delivered}) == 400


class StoredHooks(Hooks):
    """Records each webhook in a real SQLite webhook store first, as the dispatcher does."""

    def __init__(self, store: SqliteDeadLetterStore) -> None:
        super().__init__()
        self.store = store

    def enqueue(self, hook, on_settled=None) -> None:
        self.store.add_pending(hook)  # raises when the store cannot take the row
        super().enqueue(hook, on_settled)


async def test_the_feed_holds_while_the_webhook_store_cannot_be_written_and_goes_on_when_it_can(broker, tmp_path):
    """SQLite's limit on the file's size (max_page_count) gives the error of a full disk."""
    topic, group = f"events-{uuid.uuid4().hex[:8]}", f"hooks-{uuid.uuid4().hex[:8]}"
    await _topic_with_history(broker.bootstrap, topic, group)
    store = SqliteDeadLetterStore(tmp_path / "webhooks.sqlite3")
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]  # the test fills the file
    store._db.execute(f"PRAGMA max_page_count = {pages + 8}")
    fillers = 0
    with pytest.raises(sqlite3.OperationalError, match="full"):
        for n in range(10_000):  # other webhooks waiting, until the file can grow no more
            store.add_pending(Webhook("https://example.com/hooks", "acct", f"filler-{n}", b"x" * 1500))
            fillers += 1
    hooks = StoredHooks(store)
    feed, consumer = _feed(broker, topic, group, hooks)
    feed.store_retry_delay = 0.1
    async with feed_running(feed, consumer, topic) as running:
        deadline = time.monotonic() + 30
        while feed.store_failures < 3:
            assert time.monotonic() < deadline, "the store never refused the webhook"
            assert not running.done(), running
            await asyncio.sleep(0.05)
        assert hooks.sent == [] and feed.unwritten is not None
        assert not running.done()  # held, not ended: the process (and its receipts) go on

        store._db.execute("PRAGMA max_page_count = 1073741823")
        deadline = time.monotonic() + 30
        while not any(b'"DELIVERED"' in hook.body for hook in hooks.sent):
            assert time.monotonic() < deadline, "the feed did not go on once the store took writes"
            await asyncio.sleep(0.05)
        assert feed.unwritten is None and len(hooks.sent) == 1
        assert len(store.pending()) == fillers + 1
