"""The projector against a real broker (Tansu and Apache Kafka) into SQLite and PostgreSQL.

Given events in the log, When the projector folds them into a store, Then the store
answers GetMessage/ListMessages/history like the pure fold; a restarted projector
resumes at the checkpoint and reads no record twice; a dropped and rebuilt store
(by `Projector.rebuild` and by `smsgw projections rebuild`) gives the same answers.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from smsgw.brokers import RunningBroker
from smsgw.domain import status as st
from smsgw.domain.message_state import apply, fold
from smsgw.events.envelope import encode
from smsgw.events.topics import MESSAGE_EVENTS
from smsgw.kafka.clients import ensure_topics
from smsgw.projections import MessageFilter, MessageStore, Projector, StoreError, make_consumer, open_store
from smsgw.v1 import events_pb2 as ev
from smsgw.v1 import message_pb2 as mp
from smsgw.views import message_view
from tests.conftest import unique_prefix
from tests.integration.postgres import postgres  # noqa: F401  (session fixture)
from tests.integration.test_message_store import T0, dataset, lifecycle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FILTERS = [
    MessageFilter(account_id="acct"),
    MessageFilter(account_id="other", statuses=frozenset({st.DELIVERED, st.FAILED, st.UNDELIVERED})),
    MessageFilter(account_id="acct", tag="promo"),
    MessageFilter(account_id="third", to="+447700900123"),
    MessageFilter(
        account_id="acct",
        sender="ACME",
        created_after=T0 + timedelta(seconds=5),
        created_before=T0 + timedelta(seconds=35),
    ),
]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/messages.db"  # sqlite:////tmp/...: an absolute path
    cluster = request.getfixturevalue("postgres")
    return cluster.url(cluster.new_schema("proj"))


@pytest.fixture
async def topic(broker: RunningBroker) -> str:
    prefix = unique_prefix("proj")
    await ensure_topics(broker.bootstrap, prefix, specs=(MESSAGE_EVENTS,))
    return prefix + MESSAGE_EVENTS.name


async def produce(broker: RunningBroker, topic: str, records: list[tuple[bytes, bytes]]) -> list:
    # Tansu can skip records when a consumer resumes inside a multi-record batch, and reports
    # end offsets per batch (docs/brokers.md): one record per batch there, as the platform does.
    extra = {"max_batch_size": 1} if broker.kind == "tansu" else {"linger_ms": 5}
    producer = AIOKafkaProducer(**broker.producer_settings(**extra))
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


def interleaved(events, seed: int) -> list:
    """The events of many messages mixed together, each message's own order kept (as in the log)."""
    rng = random.Random(seed)
    queues: dict[str, list] = {}
    for e in events:
        queues.setdefault(e.message_id, []).append(e)
    pending = list(queues.values())
    out = []
    while pending:
        q = rng.choice(pending)
        out.append(q.pop(0))
        if not q:
            pending.remove(q)
    return out


def records_of(events) -> list[tuple[bytes, bytes]]:
    return [(e.message_id.encode(), encode(e)) for e in events]


def projector_for(broker: RunningBroker, store: MessageStore, topic: str, **kw) -> Projector:
    wait = 20 if broker.kind == "tansu" else 200
    return Projector(
        store, make_consumer(broker.bootstrap, fetch_max_wait_ms=wait), topic, kafka=broker.bootstrap, **kw
    )


async def answers(store: MessageStore, events) -> dict:
    """Everything the store says about these events' messages: pages, views and histories."""
    accounts = {e.message_id: e.account_id for e in events}
    out: dict = {}
    for flt in FILTERS:
        for size in (3, 1000):
            listed, token = [], ""
            while True:
                page, token = await store.list(flt, size, token)
                listed.append([m.SerializeToString(deterministic=True) for m in page])
                if not token:
                    break
            out[("list", flt, size)] = listed
    for message_id, account in sorted(accounts.items()):
        out[("get", message_id)] = await store.get(account, message_id)
        out[("history", message_id)] = [(h.envelope, h.status_after) for h in await store.history(account, message_id)]
    return out


def expected_views(events) -> dict:
    by_message: dict[str, list] = {}
    for e in events:
        by_message.setdefault(e.message_id, []).append(e)
    states = {mid: fold(evs) for mid, evs in by_message.items()}
    return {mid: message_view(state) for mid, state in states.items() if state is not None}


async def assert_store_matches_fold(store: MessageStore, events) -> None:
    accounts = {e.message_id: e.account_id for e in events}
    for message_id, view in expected_views(events).items():
        assert await store.get(accounts[message_id], message_id) == view, message_id


async def test_project_restart_and_rebuild_give_the_same_answers(broker, topic, store_url):
    events = interleaved(dataset(120, seed=11), seed=11)
    first, second = events[: len(events) // 2], events[len(events) // 2 :]
    duplicates = first[:5]  # at-least-once delivery: copies of events already in the log
    poison = [(b"poison", b"\xff\xff\xff not an EventEnvelope")]
    await produce(broker, topic, records_of(first) + poison + records_of(duplicates))

    store = open_store(store_url)
    projector = projector_for(broker, store, topic, max_batch=40)
    await projector.start()
    await projector.catch_up(timeout=60)
    await projector.stop()
    assert projector.stats.records == len(first) + 1 + len(duplicates)
    assert projector.stats.skipped == 1 and projector.stats.applied == len(first)
    await assert_store_matches_fold(store, first)
    checkpoint = await store.checkpoint()
    assert checkpoint == projector.positions and sum(checkpoint.values()) == len(first) + 1 + len(duplicates)

    # A restart resumes at the checkpoint: only the records appended since are read.
    await produce(broker, topic, records_of(second))
    # A tiny cache: most states are reloaded from the store by folding their stored events.
    restarted = projector_for(broker, store, topic, max_batch=40, cache_size=3)
    await restarted.start()
    await restarted.catch_up(timeout=60)
    await restarted.stop()
    assert restarted.stats.records == len(second)
    assert all(offset >= checkpoint.get(p, 0) for p, offset in restarted.stats.first_offsets.items())
    await assert_store_matches_fold(store, events)
    before = await answers(store, events)

    # Dropped and rebuilt by replaying the log from the beginning: the same answers.
    rebuilder = projector_for(broker, store, topic, max_batch=25)
    await rebuilder.rebuild(timeout=60)
    await rebuilder.stop()
    assert rebuilder.stats.records == len(events) + 1 + len(duplicates)
    assert await answers(store, events) == before
    await store.close()


async def test_the_cli_rebuilds_a_store_to_the_same_answers(broker, topic, store_url):
    events = dataset(40, seed=5)
    await produce(broker, topic, records_of(events))
    store = open_store(store_url)
    projector = projector_for(broker, store, topic)
    await projector.start()
    await projector.catch_up(timeout=60)
    await projector.stop()
    before = await answers(store, events)
    await store.close()

    prefix = topic.removesuffix(MESSAGE_EVENTS.name)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from smsgw.projections.cli import rebuild_main; sys.exit(rebuild_main())",
        "--store",
        store_url,
        "--bootstrap",
        broker.bootstrap,
        "--topic-prefix",
        prefix,
        "--timeout",
        "60",
        "--fetch-max-wait-ms",
        "20" if broker.kind == "tansu" else "200",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, output.decode()
    assert f"{len(events)} records, {len(events)} events applied" in output.decode()

    store = open_store(store_url)
    await store.open()
    try:
        assert await answers(store, events) == before
    finally:
        await store.close()


async def test_a_running_projector_tells_listeners_after_each_commit(broker, topic, store_url):
    store = open_store(store_url)
    projector = projector_for(broker, store, topic)
    seen: list[tuple[str, int]] = []
    delivered = asyncio.Event()

    positions: list[tuple[int, int]] = []
    views: list[tuple[bytes | None, object]] = []

    def listener(notice) -> None:
        seen.append((notice.envelope.message_id, notice.state.status))
        positions.append((notice.partition, notice.offset))
        views.append((notice.view, notice.state))
        if notice.state.status == st.DELIVERED:
            delivered.set()

    projector.add_listener(listener)
    await projector.start()
    projector.spawn()
    try:
        await asyncio.wait_for(projector.caught_up.wait(), 30)  # an empty topic: caught up at once
        events = lifecycle("live-1", "DELIVERED", at=T0)
        written = await produce(broker, topic, records_of(events))
        # What a writer appended (offset + 1 per partition) is what it may wait for before reading.
        appended = {m.partition: m.offset + 1 for m in written}
        assert await projector.wait_until(appended, timeout=30)
        assert not await projector.wait_until({written[0].partition: written[-1].offset + 100}, timeout=0.3)
        await asyncio.wait_for(delivered.wait(), 30)
        # A listener runs after the commit: the store already answers with the new state.
        assert (await store.get("acct", "live-1")).status == st.DELIVERED
        assert seen == [("live-1", s) for s in (st.QUEUED, st.SENDING, st.SENDING, st.SENT, st.DELIVERED)]
        # Each notice says where the log has its event (WatchMessages' cursors are built from these).
        assert positions == [(m.partition, m.offset) for m in written]
        # The newest state of each batch comes with the view the store wrote (what a watch sends
        # as is); a state the batch went past comes without one, and no view is another state's.
        newest_view, newest_state = views[-1]
        assert newest_view is not None and newest_state.status == st.DELIVERED
        assert mp.Message.FromString(newest_view) == await store.get("acct", "live-1")
        for view, state in views:
            assert view is None or mp.Message.FromString(view) == message_view(state)
    finally:
        await projector.stop()
        await store.close()


async def test_a_second_projector_on_the_same_store_is_refused_and_resynchronises(broker, topic, store_url):
    events = dataset(30, seed=2)
    await produce(broker, topic, records_of(events))
    store_a, store_b = open_store(store_url), open_store(store_url)
    a = projector_for(broker, store_a, topic)
    b = projector_for(broker, store_b, topic, retry_delay=0.05)
    await a.start()
    await b.start()  # both read the same (empty) checkpoint
    try:
        await a.catch_up(timeout=60)
        b.spawn()
        async with asyncio.timeout(60):
            while not (b.stats.conflicts and b.caught_up.is_set()):
                await asyncio.sleep(0.05)
        assert b.positions == a.positions == await store_a.checkpoint()
        await assert_store_matches_fold(store_a, events)
        for message_id, account in {e.message_id: e.account_id for e in events}.items():
            history = await store_a.history(account, message_id)
            assert history and len({h.envelope.event_id for h in history}) == len(history)
    finally:
        await b.stop()
        await a.stop()
        await store_a.close()
        await store_b.close()


async def test_a_store_bound_to_another_topic_is_refused(broker, topic, store_url):
    store = open_store(store_url)
    await store.open()
    await store.bind_source("some-other-topic")
    projector = projector_for(broker, store, topic)
    try:
        with pytest.raises(Exception, match="projects topic"):
            await projector.start()
    finally:
        await projector.stop()
        await store.close()


async def test_a_checkpoint_outside_the_log_stops_the_projector_with_a_rebuild_hint(broker, topic, store_url):
    if broker.kind == "tansu":
        pytest.skip(
            "Tansu answers a fetch past the log end with no records, not OFFSET_OUT_OF_RANGE: "
            "there the projector waits at the stale checkpoint instead of failing"
        )
    await produce(broker, topic, records_of(lifecycle("m1", "SENT", at=T0)))
    store = open_store(store_url)
    await store.open()
    await store.bind_source(topic)
    await store.apply([], dict.fromkeys(range(MESSAGE_EVENTS.partitions), 1000000))
    projector = projector_for(broker, store, topic)
    try:
        await projector.start()
        with pytest.raises(StoreError, match="rebuild"):
            async with asyncio.timeout(30):
                while True:
                    await projector.step()
    finally:
        await projector.stop()
        await store.close()


def metric_values(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
        if isinstance(point, NumberDataPoint)
    }


async def test_a_store_that_cannot_write_falls_behind_says_so_and_catches_up_when_it_can(broker, topic, tmp_path):
    """SQLite's own limit on the file's size (max_page_count) gives the error a full disk gives:
    SQLITE_FULL, "database or disk is full"."""
    store = open_store(f"sqlite:///{tmp_path}/messages.db")
    projector = projector_for(broker, store, topic, retry_delay=0.1)
    reader = InMemoryMetricReader()
    projector.instrument(MeterProvider(metric_readers=[reader]).get_meter("test"))
    first, later = dataset(10, seed=5), dataset(60, seed=6)
    await produce(broker, topic, records_of(first))
    await projector.start()
    projector.spawn()
    try:
        await asyncio.wait_for(projector.caught_up.wait(), 30)
        assert projector.lag() == 0
        writer = store._w()
        pages = await writer.run(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
        await writer.run(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}"))

        await produce(broker, topic, records_of(later))
        async with asyncio.timeout(30):
            while projector.stats.failures < 3 or projector.lag() == 0:
                await asyncio.sleep(0.05)
        values = metric_values(reader)
        assert values["smsgw_projection_write_failures"] >= 3
        assert values["smsgw_projection_lag_records"] == projector.lag() > 0
        some_later = later[-1]
        assert await store.get(some_later.account_id, some_later.message_id) is None

        await writer.run(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
        async with asyncio.timeout(30):
            while projector.lag() > 0:
                await asyncio.sleep(0.05)
        await assert_store_matches_fold(store, first + later)
        assert metric_values(reader)["smsgw_projection_lag_records"] == 0
    finally:
        await projector.stop()
        await store.close()


async def test_a_first_event_this_process_folded_is_taken_as_is_and_events_are_stored_as_the_log_has_them(
    broker, topic, tmp_path
):
    # intake folds each of its appends for the caller's answer; its projector takes that state
    # for the message's first event instead of folding the event again, and stores every event
    # as the record's bytes, not encoded again.
    taken, refused = lifecycle("seeded-1", "DELIVERED", at=T0), lifecycle("seeded-2", "DELIVERED", at=T0)
    unseeded = lifecycle("plain-1", "DELIVERED", at=T0)
    # seeded-2's state is of version 1 too, but of another event: not the fold of its first event.
    other_first = ev.EventEnvelope()
    other_first.CopyFrom(refused[0])
    other_first.event_id = "not-the-logged-one"
    folded = {"seeded-1": apply(None, taken[0]), "seeded-2": apply(None, other_first)}
    events = taken + refused + unseeded

    def as_logged(envelope) -> bytes:
        # Valid, but not in the canonical field order: the account id written last. Encoded again,
        # these bytes would change; stored as the log has them, they do not.
        without = ev.EventEnvelope()
        without.CopyFrom(envelope)
        without.ClearField("account_id")
        return encode(without) + encode(ev.EventEnvelope(account_id=envelope.account_id))

    logged = [(e.message_id.encode(), as_logged(e)) for e in events]
    assert all(raw != encode(e) for (_, raw), e in zip(logged, events, strict=True))
    await produce(broker, topic, logged)

    store = open_store(f"sqlite:///{tmp_path}/messages.db")
    projector = projector_for(broker, store, topic, folded=folded.get)
    firsts: dict[str, object] = {}
    projector.add_listener(lambda notice: firsts.setdefault(notice.envelope.message_id, notice.state))
    await projector.start()
    await projector.catch_up(timeout=60)
    await projector.stop()
    await assert_store_matches_fold(store, events)
    await store.close()

    assert firsts["seeded-1"] is folded["seeded-1"]
    assert firsts["seeded-2"] is not folded["seeded-2"] and firsts["seeded-2"] == apply(None, refused[0])
    assert firsts["plain-1"] == apply(None, unseeded[0])
    with sqlite3.connect(tmp_path / "messages.db") as db:
        stored = dict(
            db.execute("SELECT message_id || '/' || ordinal, envelope FROM message_events WHERE ordinal = 1").fetchall()
        )
    assert stored == {f"{e.message_id}/1": raw for e, (_, raw) in zip(events, logged, strict=True) if e.sequence == 1}
