"""LiveMessages: intake's own appends until the store has them, and bounded watcher queues."""

import asyncio
from datetime import UTC, datetime

from smsgw.events.envelope import new_event
from smsgw.projections.store import LoggedEvent
from smsgw.v1 import events_pb2 as ev
from smsgw_intake.live import LiveMessages
from smsgw_intake.subscriptions import Subscription

T0 = datetime(2026, 11, 26, 12, tzinfo=UTC)


def queued(message_id, account="a", producer="intake/me"):
    q = ev.MessageQueued(to="+14155550100", content=ev.MessageContent(text="x"), segments=1)
    return new_event(
        q, service="intake", producer=producer, message_id=message_id, account_id=account, sequence=1, occurred_at=T0
    )


def test_an_own_append_is_kept_until_the_store_has_it_and_no_longer():
    live = LiveMessages()
    live.producer_name = "intake/me"
    envelope = queued("m1")
    state = live.apply_own(envelope, None)
    assert live.own("m1") == state
    live.on_committed(LoggedEvent(0, 7, envelope, state))
    assert live.own("m1") is None and len(live) == 0


def test_own_appends_are_bounded():
    live = LiveMessages(own_capacity=3)
    for i in range(10):
        live.apply_own(queued(f"m{i}"), None)
    assert len(live) == 3 and live.own("m9") is not None and live.own("m0") is None


def test_only_what_other_replicas_appended_is_reported_as_committed_elsewhere():
    live = LiveMessages()
    live.producer_name = "intake/me"
    elsewhere = []
    live.on_committed_elsewhere = elsewhere.append
    mine, theirs = queued("m1"), queued("m2", producer="intake/other")
    for offset, envelope in enumerate((mine, theirs)):
        live.on_committed(LoggedEvent(0, offset, envelope, live.apply_own(envelope, None)))
    assert [n.envelope.message_id for n in elsewhere] == ["m2"]


async def test_a_watcher_that_does_not_read_falls_behind_instead_of_growing():
    live = LiveMessages(queue_size=2)
    watcher = live.watch_account("a")
    other = live.watch_account("b")
    for i in range(5):
        envelope = queued(f"m{i}")
        live.on_committed(LoggedEvent(0, i, envelope, live.apply_own(envelope, None)))
    # The third update overflowed the queue of 2: what it held is released at once, nothing
    # more is queued, and None says "fell behind" (the stream ends with its cursor).
    assert watcher.fell_behind and watcher.queue.qsize() == 0
    assert other.queue.qsize() == 0 and not other.fell_behind  # other accounts' streams see nothing
    assert await watcher.next(1) is None
    live.unwatch_account("a", watcher)
    live.unwatch_account("b", other)
    assert live.watcher_count() == 0


async def test_next_waits_for_an_update_or_the_timeout():
    subscription: Subscription[int] = Subscription(4)
    assert await subscription.next(0.01) is None
    asyncio.get_running_loop().call_later(0.01, subscription.offer, 42)
    assert await subscription.next(1) == 42


async def test_an_update_already_waiting_is_taken_in_order_and_ready_takes_the_rest_up_to_its_limit():
    subscription: Subscription[int] = Subscription(10)
    for n in range(5):
        subscription.offer(n)
    assert await subscription.next(0.01) == 0  # waiting already: returned without a wait
    assert subscription.ready(3) == [1, 2, 3]
    assert subscription.ready(3) == [4]
    assert subscription.ready(3) == []  # nothing waits: an empty batch, at once
    asyncio.get_running_loop().call_later(0.01, subscription.offer, 5)
    assert await subscription.next(1) == 5


async def test_ready_takes_nothing_from_a_stream_that_fell_behind():
    subscription: Subscription[int] = Subscription(2)
    for n in range(3):
        subscription.offer(n)
    assert subscription.fell_behind
    assert subscription.ready(10) == [] and await subscription.next(0.01) is None


async def test_a_watcher_queues_only_what_it_would_send_and_does_not_fall_behind_on_the_rest():
    """WatchMessages asking for a few statuses: the updates it would drop are not queued, so a
    burst of them does not make it read everything again from the store."""
    live = LiveMessages(queue_size=2)
    wanted = live.watch_account("a", wants=lambda entry: entry.offset % 5 == 0)
    everything = live.watch_account("a")
    for i in range(10):
        envelope = queued(f"m{i}")
        live.on_committed(LoggedEvent(0, i, envelope, live.apply_own(envelope, None)))
    assert not wanted.fell_behind and [(await wanted.next(1)).offset for _ in range(2)] == [0, 5]
    assert everything.fell_behind, "without a filter the same burst overflows the queue"
