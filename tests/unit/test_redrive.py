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
