"""One message store shared by intake's replicas, against a real broker (Tansu and Apache Kafka)
into SQLite and PostgreSQL.

Given events in the log, When projectors run as members of one consumer group writing one store,
Then each writes only its share of the partitions and the store answers like the pure fold, also
after a member leaves; and the store follower tells every event the store holds once, in log
order per partition, with the message's state after it, as the projector that wrote it did.
"""

from __future__ import annotations

import asyncio
import re
import time

import grpc
import pytest

from smsgw.brokers import RunningBroker
from smsgw.domain import status as st
from smsgw.projections import MessageStore, Projector, make_consumer, open_store
from smsgw.projections.follower import Interest, StoreFollower
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw.views import message_view
from tests.conftest import start_platform
from tests.integration.helpers import ACCOUNT, send_request, wait_for_status
from tests.integration.postgres import postgres  # noqa: F401  (session fixture)
from tests.integration.test_message_store import dataset
from tests.integration.test_projector import (  # noqa: F401  (fixtures)
    assert_store_matches_fold,
    interleaved,
    produce,
    records_of,
    store_url,
    topic,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PARTITIONS = 12  # the events topic's (smsgw.events.topics)


def group_member(broker: RunningBroker, store: MessageStore, events_topic: str) -> Projector:
    wait = 20 if broker.kind == "tansu" else 200
    consumer = make_consumer(
        broker.bootstrap,
        fetch_max_wait_ms=wait,
        group_id=f"{events_topic}-projector",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    return Projector(store, consumer, events_topic, kafka=broker.bootstrap, group=True, retry_delay=0.1)


async def eventually(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)


def ends_of(written) -> dict[int, int]:
    ends: dict[int, int] = {}
    for m in written:
        ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
    return ends


async def wait_stored(store: MessageStore, ends: dict[int, int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stored = await store.checkpoint()
        if all(stored.get(p, 0) >= end for p, end in ends.items()):
            return
        assert time.monotonic() < deadline, f"store checkpoint {stored} short of {ends}"
        await asyncio.sleep(0.05)


async def test_group_members_share_the_partitions_and_write_one_store(broker, topic, store_url):  # noqa: F811
    events = interleaved(dataset(120, seed=21), seed=21)
    first, second = events[: len(events) // 2], events[len(events) // 2 :]
    later = interleaved(dataset(40, seed=22), seed=22)
    stores = [open_store(store_url) for _ in range(3)]
    a, b = group_member(broker, stores[0], topic), group_member(broker, stores[1], topic)
    written = await produce(broker, topic, records_of(first))
    try:
        await a.start()
        a.spawn()
        await eventually(lambda: len(a.partitions) == PARTITIONS, 60, "the first member takes every partition")
        await b.start()
        b.spawn()
        await eventually(
            lambda: a.partitions and b.partitions and len(a.partitions) + len(b.partitions) == PARTITIONS,
            60,
            f"two members share the partitions (a {a.partitions}, b {b.partitions})",
        )
        assert not set(a.partitions) & set(b.partitions)
        written += await produce(broker, topic, records_of(second))
        await stores[2].open()
        await wait_stored(stores[2], ends_of(written))
        await assert_store_matches_fold(stores[2], events)
        assert a.stats.applied and b.stats.applied, "each member wrote its share"

        # A member leaves: the other takes its partitions up where the store has them.
        await b.stop()
        await eventually(lambda: len(a.partitions) == PARTITIONS, 60, "the one left takes every partition")
        written += await produce(broker, topic, records_of(later))
        await wait_stored(stores[2], ends_of(written))
        await assert_store_matches_fold(stores[2], events + later)
        assert a.stats.failures == 0
    finally:
        await a.stop()
        await b.stop()
        for store in stores:
            await store.close()


async def test_the_follower_tells_every_stored_event_once_in_log_order_with_the_state_after_it(
    broker,
    topic,  # noqa: F811
    store_url,  # noqa: F811
):
    events = interleaved(dataset(80, seed=31), seed=31)
    before, after = events[: len(events) // 3], events[len(events) // 3 :]
    copies = after[:7]  # at-least-once delivery: copies change nothing and are not told
    writer_store, follower_store = open_store(store_url), open_store(store_url)
    wait = 20 if broker.kind == "tansu" else 200
    writer = Projector(
        writer_store, make_consumer(broker.bootstrap, fetch_max_wait_ms=wait), topic, kafka=broker.bootstrap
    )
    follower = StoreFollower(follower_store, topic, kafka=broker.bootstrap, interval=0.01, page=7)
    # A replica's follower tells every message's first event and what its streams watch.
    watched = Interest(accounts=frozenset({"other"}), message_ids=frozenset({after[-1].message_id}))
    narrow_store = open_store(store_url)
    narrow = StoreFollower(narrow_store, topic, kafka=broker.bootstrap, interval=0.01, page=7, interest=lambda: watched)
    written_by_writer: dict[tuple[int, int], object] = {}
    told: list = []
    told_narrowly: list = []
    writer.add_listener(lambda n: written_by_writer.__setitem__((n.partition, n.offset), n.state))
    follower.add_listener(told.append)
    narrow.add_listener(told_narrowly.append)
    try:
        await produce(broker, topic, records_of(before))
        await writer.start()
        await writer.catch_up(timeout=60)
        writer.spawn()
        # Started now, it tells only what is stored from here on; the states of messages begun
        # before are folded from the store (it has none of them in memory).
        await follower.start()
        await narrow.start()
        start = follower.positions
        assert start == narrow.positions == {p: writer.positions.get(p, 0) for p in range(PARTITIONS)}
        follower.spawn()
        narrow.spawn()
        written = await produce(broker, topic, records_of(after + copies))
        appended = ends_of(written)
        assert await follower.wait_until(appended, timeout=60), f"follower at {follower.positions}, log at {appended}"
        # The writer's listeners ran once its commit was seen (the follower may read it first).
        assert await writer.wait_until(appended, timeout=60)

        expected = {key: state for key, state in written_by_writer.items() if key[1] >= start.get(key[0], 0)}
        keys = [(n.partition, n.offset) for n in told]
        assert len(keys) == len(set(keys)) == len(expected) == len(after)
        assert set(keys) == set(expected)
        for partition in range(PARTITIONS):
            offsets = [offset for p, offset in keys if p == partition]
            assert offsets == sorted(offsets), f"partition {partition} told out of order"
        for notice in told:
            assert message_view(notice.state) == message_view(expected[(notice.partition, notice.offset)])
            assert notice.state.version == expected[(notice.partition, notice.offset)].version
        # What it told is in the store: a reader that heard of an event finds it there.
        last = {}
        for notice in told:
            last[notice.state.message_id] = notice.state
        for message_id, state in last.items():
            assert await follower_store.get(state.account_id, message_id) == message_view(state)
        assert follower.lag() == 0

        # The narrow one: the same events and states, only those it was asked for.
        assert await narrow.wait_until(appended, timeout=60)
        wanted = {
            key
            for key, state in expected.items()
            if state.version == 1 or state.account_id in watched.accounts or state.message_id in watched.message_ids
        }
        assert {(n.partition, n.offset) for n in told_narrowly} == wanted
        assert len(told_narrowly) == len(wanted) < len(told)
        for notice in told_narrowly:
            assert message_view(notice.state) == message_view(expected[(notice.partition, notice.offset)])
        assert narrow.cached_state(after[-1].message_id) is None  # its states of the rest are stale
        assert follower.cached_state(after[-1].message_id) is not None
    finally:
        await narrow.stop()
        await narrow_store.close()
        await follower.stop()
        await writer.stop()
        await writer_store.close()
        await follower_store.close()


async def test_intake_replicas_sharing_one_store_each_project_a_share_and_serve_every_read(
    broker,
    tmp_path,
    postgres,  # noqa: F811
):
    """Two intake replicas, one PostgreSQL store: each projects the partitions the group gives it,
    and each answers for every message (reads, watches); one killed, the other projects them all."""
    platform = await start_platform(
        broker,
        tmp_path,
        "shared-store",
        replicas={"intake": 2},
        extra_env={
            "SMSGW_PROJECTION_STORE": postgres.url(postgres.new_schema("shared")),
            "SMSGW_PROJECTION_SHARED": "true",
        },
    )
    names = platform.replica_names("intake")
    channels = [grpc.aio.insecure_channel(platform.address(name)) for name in names]
    try:
        stubs = [api_grpc.MessagingServiceStub(channel) for channel in channels]
        # A watch on the second replica, opened before anything is sent: it must hear of every
        # message, whichever replica projects its partition.
        watch = stubs[1].WatchMessages(api.WatchMessagesRequest(statuses=[st.DELIVERED]), metadata=ACCOUNT)
        assert (await asyncio.wait_for(watch.read(), 30)).cursor
        ids = []
        for i in range(40):
            reply = await stubs[i % 2].SendMessage(send_request(body=f"shared {i}"), metadata=ACCOUNT, timeout=10)
            ids.append(reply.message.id)
            # Read at once on the other replica: it waits for the store to have it.
            other = await stubs[(i + 1) % 2].GetMessage(api.GetMessageRequest(id=reply.message.id), metadata=ACCOUNT)
            assert other.id == reply.message.id
        heard: set[str] = set()
        deadline = time.monotonic() + 90
        while heard != set(ids):
            assert time.monotonic() < deadline, f"the watch heard of {len(heard)} of {len(ids)} DELIVERED"
            update = await asyncio.wait_for(watch.read(), max(0.1, deadline - time.monotonic()))
            if update.message.status == st.DELIVERED:
                heard.add(update.message.id)
        watch.cancel()
        for stub in stubs:
            for message_id in ids:
                assert (await wait_for_status(stub, message_id, {st.DELIVERED}, timeout=30)).status == st.DELIVERED
            listed = await stub.ListMessages(api.ListMessagesRequest(page_size=1000), metadata=ACCOUNT)
            assert {m.id for m in listed.messages} == set(ids)
        shares = [projected_partitions(platform, name) for name in names]
        assert all(shares) and not shares[0] & shares[1] and shares[0] | shares[1] == set(range(PARTITIONS)), shares

        # kill -9 the second: after its session ends, the first projects every partition.
        platform.remove_replica(names[1], hard=True)
        deadline = time.monotonic() + 60
        while projected_partitions(platform, names[0]) != set(range(PARTITIONS)):
            assert time.monotonic() < deadline, "the partitions of the killed replica were not taken over"
            await asyncio.sleep(0.2)
        more = []
        for i in range(10):
            reply = await stubs[0].SendMessage(send_request(body=f"shared after {i}"), metadata=ACCOUNT, timeout=10)
            more.append(reply.message.id)
        for message_id in more:
            assert (await wait_for_status(stubs[0], message_id, {st.DELIVERED}, timeout=60)).status == st.DELIVERED
        listed = await stubs[0].ListMessages(api.ListMessagesRequest(page_size=1000), metadata=ACCOUNT)
        assert {m.id for m in listed.messages} == set(ids) | set(more)
    finally:
        for channel in channels:
            await channel.close()
        platform.stop()


def projected_partitions(platform, name: str) -> set[int]:
    """The partitions a replica's projector took last, as its log says ("projecting partitions [...]")."""
    found = re.findall(r"projecting partitions \[([0-9, ]*)\]", platform.processes[name].log_tail(2000))
    return {int(p) for p in found[-1].split(",") if p.strip()} if found else set()


async def test_writers_of_one_partition_take_turns_and_writers_of_different_ones_both_write(
    store_url,  # noqa: F811
):
    """Members of a group write at once, each its partitions; two writers of one partition (a
    member that lost it in a rebalance, and the one that got it) must not both succeed."""
    stores = [open_store(store_url) for _ in range(4)]
    for store in stores:
        await store.open()
    try:
        same = await asyncio.gather(
            *(store.apply([], {0: 10 + i}, expected={0: None}) for i, store in enumerate(stores[:2])),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in same) == ["CheckpointConflict", "NoneType"], same
        await asyncio.gather(
            stores[2].apply([], {1: 5}, expected={1: None}), stores[3].apply([], {2: 7}, expected={2: None})
        )
        stored = await stores[0].checkpoint()
        assert stored[0] in (10, 11) and (stored[1], stored[2]) == (5, 7), stored
    finally:
        for store in stores:
            await store.close()
