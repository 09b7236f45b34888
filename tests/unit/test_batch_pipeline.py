"""BatchPipeline: records out first, then the state changes, then the acks; the next batch fills
while one is in flight. A fake topic and stream stand in for faust's (no broker)."""

import asyncio

from smsgw.streams import BatchPipeline, Outgoing


class FakeTopic:
    """Records sends; each send's future resolves when the test releases the broker."""

    def __init__(self):
        self.sent: list[bytes] = []
        self.release = asyncio.Event()
        self.fail_next = 0
        self.acks: set = set()

    async def send(self, *, key, value, headers=None):
        self.sent.append(value)
        future = asyncio.get_running_loop().create_future()

        async def ack():
            await self.release.wait()
            if self.fail_next:
                self.fail_next -= 1
                future.set_exception(ConnectionError("broker gone"))
            else:
                future.set_result(None)

        self.acks.add(task := asyncio.ensure_future(ack()))
        task.add_done_callback(self.acks.discard)
        return future


class FakeStream:
    def __init__(self):
        self.acked: list[str] = []

    async def ack(self, event):
        self.acked.append(event)


def pipeline_with(topic, log):
    stream = FakeStream()

    def apply(changes):
        log.append(("applied", dict(changes), list(stream.acked)))

    return BatchPipeline(stream, apply, what="test", max_batch=3), stream


async def add(pipeline, topic, event, key=None, change=None):
    pipeline.filling.outgoing.append(Outgoing(topic, b"k", event.encode()))
    if key is not None:
        pipeline.filling.changes[key] = change
    await pipeline.add(event)


async def test_changes_apply_after_the_broker_acks_and_events_are_acked_after_that():
    topic, log = FakeTopic(), []
    pipeline, stream = pipeline_with(topic, log)
    await add(pipeline, topic, "e1", key="m1", change="dispatched")
    await asyncio.sleep(0.01)
    assert log == [] and stream.acked == []              # nothing before the broker's ack
    assert pipeline.pending_change("m1") == "dispatched"  # but later decisions see it
    topic.release.set()
    await pipeline.drain()
    assert log == [("applied", {"m1": "dispatched"}, [])]  # applied before any ack
    assert stream.acked == ["e1"]
    assert pipeline.pending_change("m1", "none") == "none"


async def test_the_next_batch_fills_while_one_is_in_flight_and_goes_out_as_one():
    topic, log = FakeTopic(), []
    pipeline, stream = pipeline_with(topic, log)
    await add(pipeline, topic, "e1", key="a", change=1)    # goes out at once, alone
    await add(pipeline, topic, "e2", key="b", change=2)    # waits for e1's batch
    await add(pipeline, topic, "e3", key="a", change=3)
    await asyncio.sleep(0.01)
    assert topic.sent == [b"e1"]                         # e2, e3 wait for e1's acks
    assert pipeline.pending_change("a") == 3 and pipeline.has_pending_change("b")
    topic.release.set()
    await pipeline.drain()
    assert topic.sent == [b"e1", b"e2", b"e3"]
    assert [entry[1] for entry in log] == [{"a": 1}, {"b": 2, "a": 3}]
    assert stream.acked == ["e1", "e2", "e3"]


async def test_a_full_batch_makes_the_agent_wait():
    topic, log = FakeTopic(), []
    pipeline, _ = pipeline_with(topic, log)
    await add(pipeline, topic, "e0")
    for i in range(1, 3):
        await add(pipeline, topic, f"e{i}")
    third = asyncio.ensure_future(add(pipeline, topic, "e3"))   # the batch filling is full now
    await asyncio.sleep(0.01)
    assert not third.done()
    topic.release.set()
    await asyncio.wait_for(third, 1)
    await pipeline.drain()


async def test_a_failed_publish_is_retried_and_nothing_is_acked_before_it_succeeds(monkeypatch):
    topic, log = FakeTopic(), []
    pipeline, stream = pipeline_with(topic, log)
    topic.fail_next = 1
    real_sleep = asyncio.sleep
    monkeypatch.setattr(asyncio, "sleep", lambda delay: real_sleep(0))  # no real backoff in tests
    await add(pipeline, topic, "e1", key="m", change="x")
    topic.release.set()
    await asyncio.wait_for(pipeline.drain(), 1)
    assert topic.sent == [b"e1", b"e1"]          # sent again after the failure
    assert log == [("applied", {"m": "x"}, [])] and stream.acked == ["e1"]



async def test_events_are_acked_only_once_the_state_changes_are_written_too():
    topic, log = FakeTopic(), []
    stream = FakeStream()
    changelog_acked = asyncio.Event()

    async def written():
        log.append(("written awaited", list(stream.acked)))
        await changelog_acked.wait()

    pipeline = BatchPipeline(stream, lambda changes: log.append(("applied", dict(changes))), what="test",
                             written=written)
    await add(pipeline, topic, "e1", key="m1", change="dispatched")
    topic.release.set()
    await asyncio.sleep(0.01)
    assert log == [("applied", {"m1": "dispatched"}), ("written awaited", [])]
    assert stream.acked == []                 # the changelog is not on the broker yet
    changelog_acked.set()
    await asyncio.wait_for(pipeline.drain(), 1)
    assert stream.acked == ["e1"]


async def test_a_batch_without_state_changes_does_not_wait_for_the_changelog():
    topic, stream = FakeTopic(), FakeStream()
    waited = []

    async def written():
        waited.append(True)

    pipeline = BatchPipeline(stream, lambda changes: None, what="test", written=written)
    await add(pipeline, topic, "e1")
    topic.release.set()
    await asyncio.wait_for(pipeline.drain(), 1)
    assert stream.acked == ["e1"] and waited == []


async def test_the_next_batch_goes_out_while_the_previous_one_waits_for_its_changelog():
    topic, stream = FakeTopic(), FakeStream()
    changelog_acked = asyncio.Event()

    async def written():
        await changelog_acked.wait()

    pipeline = BatchPipeline(stream, lambda changes: None, what="test", written=written)
    topic.release.set()
    await add(pipeline, topic, "e1", key="a", change=1)
    await asyncio.sleep(0.01)
    await add(pipeline, topic, "e2", key="b", change=2)
    await asyncio.sleep(0.01)
    assert topic.sent == [b"e1", b"e2"]   # e2 did not wait for e1's changelog
    assert stream.acked == []             # but nothing is acked before its changelog is written
    changelog_acked.set()
    await asyncio.wait_for(pipeline.drain(), 1)
    assert sorted(stream.acked) == ["e1", "e2"]
