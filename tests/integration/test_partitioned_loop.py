"""The consume-decide-produce loop routing and receipt run on (smsgw.kafka.partitioned_loop), on a
real broker: the order of its writes, state that survives a restart and follows its partition to
another member, a record that fails being held and tried again, and when a partition is caught up."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from smsgw.events.topics import TopicSpec
from smsgw.kafka.changelog import read_changelog
from smsgw.kafka.clients import ensure_topics
from smsgw.kafka.partitioned_loop import COMMIT_INTERVAL, Batch, PartitionedLoop
from smsgw.lanes import is_high_lane
from smsgw.settings import ServiceSettings
from smsgw.v1 import events_pb2 as ev
from smsgw_dev.platform import broker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
PARTITIONS = 4


class Counter:
    """Counts the records of each key: the count is its state; each record is echoed to the output
    with the count it made. Records whose value starts with b"fail" raise `failures` times."""

    def __init__(self, changelog: str, output: str, failures: int = 0) -> None:
        self.changelogs: tuple[str, ...] = (changelog,)
        self.changelog, self.output = changelog, output
        self.counts: dict[int, dict[bytes, int]] = {}
        self.failures = failures
        self.loaded_partitions: list[int] = []
        self.revoked_partitions: list[int] = []

    def loaded(self, partition: int, state: dict[str, dict[bytes, bytes]]) -> None:
        self.counts[partition] = {key: int(value) for key, value in state[self.changelog].items()}
        self.loaded_partitions.append(partition)

    def revoked(self, partition: int) -> None:
        self.counts.pop(partition, None)
        self.revoked_partitions.append(partition)

    def on_record(self, partition: int, record: ConsumerRecord, batch: Batch) -> None:
        if record.value.startswith(b"fail") and self.failures:
            self.failures -= 1
            raise ConnectionError("a lookup failed")
        count = self.counts[partition].get(record.key, 0) + 1
        self.counts[partition][record.key] = count
        batch.publish(self.output, record.key, record.value + b"#%d" % count)
        batch.change(self.changelog, partition, record.key, b"%d" % count)

    def on_tick(self, batch: Batch) -> None:
        pass


@pytest.fixture
async def topics(broker, monkeypatch):
    for name, value in broker_env(broker.kind).items():
        monkeypatch.setenv(name, value)
    prefix = f"pl{uuid.uuid4().hex[:8]}."
    specs = (
        TopicSpec(
            name="in",
            value_type=ev.EventEnvelope,
            key="k",
            writers=("test",),
            description="input",
            partitions=PARTITIONS,
        ),
        TopicSpec(
            name="out",
            value_type=ev.EventEnvelope,
            key="k",
            writers=("test",),
            description="output",
            partitions=PARTITIONS,
        ),
        TopicSpec(
            name="state",
            value_type=ev.EventEnvelope,
            key="k",
            writers=("test",),
            description="changelog",
            partitions=PARTITIONS,
            cleanup_policy="compact",
        ),
    )
    await ensure_topics(broker.bootstrap, prefix, specs)
    settings = ServiceSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix, kafka_linger_ms=5)
    return settings


def _t(settings: ServiceSettings, name: str) -> str:
    return settings.topic_prefix + name


async def _send(settings: ServiceSettings, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(_t(settings, "in"), key=key, value=value)
    finally:
        await producer.stop()


async def _read_all(
    settings: ServiceSettings, topic: str, count: int, timeout: float = 60
) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        _t(settings, topic),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: list[tuple[bytes, bytes]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(seen) < count and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                seen += [(r.key, r.value) for r in records]
        await asyncio.sleep(0.5)  # and nothing more than expected
        for records in (await consumer.getmany(timeout_ms=300)).values():
            seen += [(r.key, r.value) for r in records]
    finally:
        await consumer.stop()
    return seen


async def _start(
    settings: ServiceSettings, handler: Counter, *, commit_interval: float = COMMIT_INTERVAL
) -> tuple[PartitionedLoop, asyncio.Event, asyncio.Task]:
    """A member of the group, ready; `commit_interval` 3600: it commits only when it stops."""
    loop = PartitionedLoop(
        settings, "counter", _t(settings, "in"), handler, tick_interval=0.1, commit_interval=commit_interval
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await asyncio.wait_for(loop.ready.wait(), 60)
    return loop, stop, task


async def test_state_survives_a_restart_and_every_record_is_decided_once(topics):
    settings = topics
    keys = [b"k%d" % i for i in range(8)]
    await _send(settings, [(key, b"a") for key in keys])
    first = Counter(_t(settings, "state"), _t(settings, "out"))
    _loop, stop, task = await _start(settings, first)
    assert sorted(first.loaded_partitions) == list(range(PARTITIONS))
    assert len(await _read_all(settings, "out", 8)) == 8
    stop.set()
    await task
    # A new member (same group) starts from the committed offsets with the counts reloaded.
    await _send(settings, [(key, b"b") for key in keys])
    second = Counter(_t(settings, "state"), _t(settings, "out"))
    _loop, stop, task = await _start(settings, second)
    try:
        out = await _read_all(settings, "out", 16)
        assert sorted(value for _key, value in out) == sorted([b"a#1"] * 8 + [b"b#2"] * 8), out
        state = await read_changelog(settings, _t(settings, "state"), range(PARTITIONS))
        assert {key: value for values in state.values() for key, value in values.items()} == dict.fromkeys(keys, b"2")
    finally:
        stop.set()
        await task


async def test_a_failed_write_commits_nothing_and_the_batch_is_decided_again(topics, monkeypatch):
    settings = topics
    await _send(settings, [(b"k1", b"a"), (b"k2", b"a")])
    handler = Counter(_t(settings, "state"), _t(settings, "out"))
    loop = PartitionedLoop(settings, "counter", _t(settings, "in"), handler, tick_interval=0.1)
    original = AIOKafkaProducer.send

    async def refuse_output(self, topic, *args, **kwargs):
        if topic == _t(settings, "out"):
            raise ConnectionError("broker gone")
        return await original(self, topic, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaProducer, "send", refuse_output)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(loop.run(asyncio.Event()), 60)
    # Neither the state nor an offset got ahead of the records that were not written.
    state = await read_changelog(settings, _t(settings, "state"), range(PARTITIONS))
    assert all(not values for values in state.values()), state
    monkeypatch.setattr(AIOKafkaProducer, "send", original)
    _loop, stop, task = await _start(settings, Counter(_t(settings, "state"), _t(settings, "out")))
    try:
        assert sorted(await _read_all(settings, "out", 2)) == [(b"k1", b"a#1"), (b"k2", b"a#1")]
    finally:
        stop.set()
        await task


async def test_a_record_that_fails_is_held_and_tried_again_in_order(topics):
    settings = topics
    await _send(settings, [(b"k", b"fail once"), (b"k", b"after")])
    handler = Counter(_t(settings, "state"), _t(settings, "out"), failures=3)
    _loop, stop, task = await _start(settings, handler)
    try:
        out = await _read_all(settings, "out", 2)
        assert out == [(b"k", b"fail once#1"), (b"k", b"after#2")]
        assert handler.failures == 0
    finally:
        stop.set()
        await task


async def test_a_partition_moves_to_a_new_member_with_its_state(topics):
    settings = topics
    keys = [b"k%d" % i for i in range(16)]
    await _send(settings, [(key, b"a") for key in keys])
    first = Counter(_t(settings, "state"), _t(settings, "out"))
    loop_one, stop_one, task_one = await _start(settings, first)
    assert len(await _read_all(settings, "out", 16)) == 16
    second = Counter(_t(settings, "state"), _t(settings, "out"))
    loop_two = PartitionedLoop(settings, "counter", _t(settings, "in"), second, tick_interval=0.1)
    stop_two = asyncio.Event()
    task_two = asyncio.create_task(loop_two.run(stop_two))
    try:
        await asyncio.wait_for(loop_two.ready.wait(), 60)
        deadline = asyncio.get_running_loop().time() + 30
        while (
            not loop_one.owned
            or not loop_two.owned
            or loop_one.owned & loop_two.owned
            or len(loop_one.owned | loop_two.owned) < PARTITIONS
        ):
            assert asyncio.get_running_loop().time() < deadline, (loop_one.owned, loop_two.owned)
            await asyncio.sleep(0.1)
        # Each member holds the state of its own partitions only; the new one loaded its part.
        assert set(first.counts) == loop_one.owned and set(second.counts) == loop_two.owned
        assert set(first.revoked_partitions) >= loop_two.owned
        await _send(settings, [(key, b"b") for key in keys])
        out = await _read_all(settings, "out", 32)
        assert sorted(value for _key, value in out) == sorted([b"a#1"] * 16 + [b"b#2"] * 16), out
        for partition in loop_two.owned:
            assert loop_two.caught_up(partition) or await _eventually(lambda p=partition: loop_two.caught_up(p))
    finally:
        stop_one.set()
        stop_two.set()
        await asyncio.gather(task_one, task_two)


async def _eventually(check, timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def test_caught_up_only_once_the_partition_is_read_to_its_end(topics):
    settings = topics
    await _send(settings, [(b"k", b"%d" % i) for i in range(30)])
    handler = Counter(_t(settings, "state"), _t(settings, "out"))
    loop = PartitionedLoop(settings, "counter", _t(settings, "in"), handler, tick_interval=0.1, max_batch=1)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await asyncio.wait_for(loop.ready.wait(), 60)
        # One record a batch: the backlog takes a while to read.
        while not loop.owned or not any(handler.counts.values()):
            await asyncio.sleep(0.005)
        partition = next(p for p, counts in handler.counts.items() if b"k" in counts)
        assert handler.counts[partition][b"k"] < 30 and not loop.caught_up(partition)
        assert await _eventually(lambda: loop.caught_up(partition))
        assert handler.counts[partition][b"k"] == 30
        assert all(loop.caught_up(p) for p in loop.owned)  # the empty ones too
        assert not loop.caught_up(PARTITIONS + 1)  # not one it owns
    finally:
        stop.set()
        await task


async def _committed(settings: ServiceSettings) -> dict[int, int]:
    """The group's committed offsets of the input topic, per partition (missing: none yet)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=_t(settings, "counter"), enable_auto_commit=False
    )
    await consumer.start()
    try:
        committed = {p: await consumer.committed(TopicPartition(_t(settings, "in"), p)) for p in range(PARTITIONS)}
    finally:
        await consumer.stop()
    return {p: offset for p, offset in committed.items() if offset is not None}


async def _changelog_records(settings: ServiceSettings) -> int:
    """Records ever written to the changelog (end offsets summed; compaction has not run yet)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(_t(settings, "state"), p) for p in range(PARTITIONS)])
    finally:
        await consumer.stop()
    return sum(ends.values())


async def test_offsets_and_state_changes_are_written_once_an_interval_and_always_at_stop(topics):
    """Offsets are committed at most once an interval (an hour here: only at the stop), and the
    state changes of the polls in between are written with them: a key changed in two polls is
    written once, and none is written while the offsets are not."""
    settings = topics
    keys = [b"k%d" % i for i in range(4)]
    await _send(settings, [(key, b"a") for key in keys])
    _loop, stop, task = await _start(
        settings, Counter(_t(settings, "state"), _t(settings, "out")), commit_interval=3600
    )
    assert len(await _read_all(settings, "out", 4)) == 4
    await _send(settings, [(key, b"b") for key in keys])  # a later poll: each key counted again
    assert len(await _read_all(settings, "out", 8)) == 8
    assert await _changelog_records(settings) == 0
    assert await _committed(settings) == {}
    stop.set()
    await task
    assert await _changelog_records(settings) == 4  # one record a key, its newest count
    state = await read_changelog(settings, _t(settings, "state"), range(PARTITIONS))
    assert {key: value for values in state.values() for key, value in values.items()} == dict.fromkeys(keys, b"2")
    assert sum((await _committed(settings)).values()) == 8


class Replier(Counter):
    """A Counter whose every record is followed by an action (receipt's automatic replies): the
    action notes whether the count it follows is already on the changelog."""

    def __init__(self, settings: ServiceSettings) -> None:
        super().__init__(_t(settings, "state"), _t(settings, "out"))
        self.settings = settings
        self.seen_by_actions: list[dict[bytes, bytes]] = []

    def on_record(self, partition: int, record: ConsumerRecord, batch: Batch) -> None:
        super().on_record(partition, record, batch)

        async def reply() -> None:
            state = await read_changelog(self.settings, self.changelog, range(PARTITIONS))
            self.seen_by_actions.append({key: value for values in state.values() for key, value in values.items()})

        batch.then.append(reply)


async def test_an_action_follows_the_state_change_it_came_with(topics):
    """An action is taken only once the state that says it was taken is written: a restart
    before the commit must not decide it, and take it, again."""
    settings = topics
    handler = Replier(settings)
    _loop, stop, task = await _start(settings, handler, commit_interval=3600)
    try:
        await _send(settings, [(b"k", b"a")])
        assert len(await _read_all(settings, "out", 1)) == 1
        async with asyncio.timeout(30):
            while not handler.seen_by_actions:
                await asyncio.sleep(0.05)
        assert handler.seen_by_actions[0] == {b"k": b"1"}
        assert await _committed(settings) == {}  # the offsets still wait for their interval
    finally:
        stop.set()
        await task


class Timer(Counter):
    """A Counter with one deadline: `on_tick` notes when it first sees it has come."""

    def __init__(self, changelog: str, output: str, at: float) -> None:
        super().__init__(changelog, output)
        self.at = at
        self.seen_at: float | None = None

    def next_deadline(self) -> float | None:
        return None if self.seen_at is not None else self.at

    def on_tick(self, batch: Batch) -> None:
        if self.seen_at is None and time.time() >= self.at:
            self.seen_at = time.time()


async def test_a_quiet_poll_ends_at_the_handlers_next_deadline_not_a_tick_later(topics):
    """routing's scheduled sends: with nothing to read, the loop wakes at the next deadline the
    handler gives, though its tick is long (30 s: without the deadline the first poll after the
    assignment would end 30 s later)."""
    settings = topics
    handler = Timer(_t(settings, "state"), _t(settings, "out"), at=time.time() + 10.0)
    loop = PartitionedLoop(
        settings, "timer", _t(settings, "in"), handler, tick_interval=30.0, next_deadline=handler.next_deadline
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await asyncio.wait_for(loop.ready.wait(), 60)
        ready_at = time.time()
        for _ in range(600):
            if handler.seen_at is not None:
                break
            await asyncio.sleep(0.05)
        assert handler.seen_at is not None, "the deadline was not handled within 30 s"
        # Due at `at` (or at once, had the assignment taken longer than the 10 s).
        late = handler.seen_at - max(handler.at, ready_at)
        assert late <= 2.0, f"handled {late:.2f} s after it was due"
    finally:
        stop.set()
        await task


async def test_records_of_the_lane_are_decided_and_written_ahead_of_their_poll(topics):
    """routing's lane: a HIGH message's record, last of a poll of hundreds, is decided first, its
    key's later record with it in order, and written before the poll's other records are decided;
    every record is decided once and the offsets cover the whole poll (a new member reads nothing
    again). Without the lane it is decided in its partition's turn, after the bulk before it."""
    settings = topics
    urgent = b"otp"
    records = [(b"k%d" % (n % 50), b"bulk %d" % n) for n in range(600)]
    records += [(urgent, b"urgent"), (urgent, b"urgent again")]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for key, value in records:
            headers = [("smsgw-lane", b"high")] if value == b"urgent" else []
            await producer.send(_t(settings, "in"), key=key, value=value, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()
    handler = Counter(_t(settings, "state"), _t(settings, "out"))
    decided: list[bytes] = []
    outputs_then: dict[bytes, int] = {}  # record -> outputs written (acknowledged) when it was decided
    written = 0
    on_record = handler.on_record

    def noting(partition: int, record: ConsumerRecord, batch: Batch) -> None:
        decided.append(record.value)
        outputs_then[record.value] = written
        on_record(partition, record, batch)

    handler.on_record = noting
    loop = PartitionedLoop(
        settings,
        "counter",
        _t(settings, "in"),
        handler,
        tick_interval=0.1,
        lane=lambda record: is_high_lane(record.headers),
    )
    write = loop._write

    async def counting(batch: Batch) -> None:
        nonlocal written
        await write(batch)
        written += len(batch.records)

    loop._write = counting
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await asyncio.wait_for(loop.ready.wait(), 60)
        out = await _read_all(settings, "out", len(records))
    finally:
        stop.set()
        await task
    assert sorted(decided) == sorted(value for _key, value in records), "every record decided once"
    assert decided[:2] == [b"urgent", b"urgent again"], decided[:5]
    assert outputs_then[b"bulk 0"] >= 2, "the urgent records' outputs were written before the bulk was decided"
    assert sorted(value for key, value in out if key == urgent) == [b"urgent again#2", b"urgent#1"]
    again = Counter(_t(settings, "state"), _t(settings, "out"))
    _loop, stop, task = await _start(settings, again)
    try:
        assert len(await _read_all(settings, "out", len(records) + 1, timeout=3)) == len(records), "decided twice"
    finally:
        stop.set()
        await task
    assert again.counts == handler.counts


async def test_a_record_of_the_lane_that_fails_is_held_in_its_turn_and_nothing_is_lost(topics):
    settings = topics
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            _t(settings, "in"), key=b"otp", value=b"fail urgent", headers=[("smsgw-lane", b"high")]
        )
        await producer.send_and_wait(_t(settings, "in"), key=b"otp", value=b"after")
        for n in range(100):
            await producer.send(_t(settings, "in"), key=b"k%d" % n, value=b"bulk")
        await producer.flush()
    finally:
        await producer.stop()
    handler = Counter(_t(settings, "state"), _t(settings, "out"), failures=3)
    loop = PartitionedLoop(
        settings, "counter", _t(settings, "in"), handler, tick_interval=0.1, lane=lambda r: is_high_lane(r.headers)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await asyncio.wait_for(loop.ready.wait(), 60)
        out = await _read_all(settings, "out", 102)
    finally:
        stop.set()
        await task
    assert handler.failures == 0 and loop.dead_lettered == 0
    assert [value for key, value in out if key == b"otp"] == [b"fail urgent#1", b"after#2"]
    assert len(out) == 102
