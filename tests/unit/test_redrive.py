import asyncio
from datetime import datetime, timedelta, timezone

from smsgw.events.envelope import new_event
from smsgw.v1 import events_pb2 as ev
from smsgw_intake.projection import MessageProjection
from smsgw_intake.redrive import Redriver, due_for_redrive

T0 = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)


def queued(message_id, send_at=None):
    q = ev.MessageQueued(to="+14155550100", content=ev.MessageContent(text="x"), segments=1)
    if send_at:
        q.send_at.FromDatetime(send_at)
    return new_event(q, service="intake", producer="t", message_id=message_id, account_id="a", sequence=1,
                     occurred_at=T0)


def test_only_messages_stuck_in_queued_are_redriven_with_the_same_event():
    projection = MessageProjection()
    stuck, routed, held = queued("stuck"), queued("routed"), queued("held", send_at=T0 + timedelta(hours=1))
    for envelope in (stuck, routed, held):
        projection.apply(envelope)
    projection.apply(new_event(ev.MessageRouted(carrier="c"), service="routing", producer="t", message_id="routed",
                               account_id="a", sequence=2, occurred_at=T0))
    appended = []

    async def append(envelope):
        appended.append(envelope)

    redriver = Redriver(projection, append, after=timedelta(seconds=15))
    assert asyncio.run(redriver.round(T0 + timedelta(seconds=14))) == 0
    assert asyncio.run(redriver.round(T0 + timedelta(seconds=15))) == 1
    assert [e.SerializeToString() for e in appended] == [stuck.SerializeToString()]
    # Not again before another full period.
    assert asyncio.run(redriver.round(T0 + timedelta(seconds=20))) == 0


def test_due_rule():
    projection = MessageProjection()
    state = projection.apply(queued("m"))
    assert not due_for_redrive(state, T0 + timedelta(seconds=1), timedelta(seconds=15))
    assert due_for_redrive(state, T0 + timedelta(seconds=16), timedelta(seconds=15))


def test_a_backlog_is_not_redriven_until_few_messages_wait():
    # Many messages QUEUED past the deadline at once is routing's backlog (overload, routing
    # down), not lost records: redriving them would add to the backlog.
    projection = MessageProjection()
    for i in range(12):
        projection.apply(queued(f"m{i}"))
    appended = []

    async def append(envelope):
        appended.append(envelope.message_id)

    redriver = Redriver(projection, append, after=timedelta(seconds=15), max_per_round=10)
    assert asyncio.run(redriver.round(T0 + timedelta(seconds=20))) == 0
    assert appended == [] and redriver.backlog_rounds == 1
    # Routing catches up with most of them; the two left are redriven.
    for i in range(10):
        projection.apply(new_event(ev.MessageRouted(carrier="c"), service="routing", producer="t",
                                   message_id=f"m{i}", account_id="a", sequence=2, occurred_at=T0))
    assert asyncio.run(redriver.round(T0 + timedelta(seconds=25))) == 2
    assert sorted(appended) == ["m10", "m11"]


def test_a_failed_append_keeps_the_message_for_the_next_round():
    projection = MessageProjection()
    projection.apply(queued("m"))
    calls = []

    async def append(envelope):
        calls.append(envelope.message_id)
        if len(calls) == 1:
            raise ConnectionError("log down")

    redriver = Redriver(projection, append, after=timedelta(seconds=15))
    assert asyncio.run(redriver.round(T0 + timedelta(seconds=16))) == 0
    assert asyncio.run(redriver.round(T0 + timedelta(seconds=21))) == 1
    assert calls == ["m", "m"]


def test_only_queued_messages_are_in_the_index():
    projection = MessageProjection()
    projection.apply(queued("q"))
    projection.apply(queued("held", send_at=T0 + timedelta(hours=1)))
    assert "q" in projection.queued_since and "held" not in projection.queued_since
    projection.apply(new_event(ev.MessageRouted(carrier="c"), service="routing", producer="t", message_id="q",
                               account_id="a", sequence=2, occurred_at=T0))
    assert "q" not in projection.queued_since
