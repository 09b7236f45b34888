import asyncio
from datetime import UTC, datetime, timedelta

from smsgw.events.envelope import new_event
from smsgw.projections.store import LoggedEvent
from smsgw.v1 import events_pb2 as ev
from smsgw_intake.live import LiveMessages
from smsgw_intake.redrive import Redriver, due_for_redrive

T0 = datetime(2026, 11, 26, 12, tzinfo=UTC)


def queued(message_id, send_at=None):
    q = ev.MessageQueued(to="+14155550100", content=ev.MessageContent(text="x"), segments=1)
    if send_at:
        q.send_at.FromDatetime(send_at)
    return new_event(
        q, service="intake", producer="t", message_id=message_id, account_id="a", sequence=1, occurred_at=T0
    )


def routed(message_id):
    return new_event(
        ev.MessageRouted(carrier="c"),
        service="routing",
        producer="t",
        message_id=message_id,
        account_id="a",
        sequence=2,
        occurred_at=T0,
    )


class Log:
    """The store's commits as the redriver sees them: states by id, and each message's MessageQueued."""

    def __init__(self):
        self.live = LiveMessages()
        self.states = {}
        self.queued = {}
        self.offset = 0

    def commit(self, envelope):
        state = self.live.apply_own(envelope, self.states.get(envelope.message_id))
        self.states[envelope.message_id] = state
        if envelope.WhichOneof("payload") == "message_queued":
            self.queued[envelope.message_id] = envelope
        self.live.on_committed(LoggedEvent(0, self.offset, envelope, state))
        self.offset += 1
        return state

    def redriver(self, append, **kwargs):
        async def state_of(message_id):
            return self.states.get(message_id)

        async def queued_event_of(state):
            return self.queued.get(state.message_id)

        return Redriver(self.live.queued_since, state_of, queued_event_of, append, **kwargs)


def test_only_messages_stuck_in_queued_are_redriven_with_the_same_event():
    log = Log()
    stuck, routed_one, held = queued("stuck"), queued("routed"), queued("held", send_at=T0 + timedelta(hours=1))
    for envelope in (stuck, routed_one, held):
        log.commit(envelope)
    log.commit(routed("routed"))
    appended = []

    async def append(envelope):
        appended.append(envelope)

    redriver = log.redriver(append, after=timedelta(seconds=15))
    assert asyncio.run(redriver.round(T0 + timedelta(seconds=14))) == 0
    assert asyncio.run(redriver.round(T0 + timedelta(seconds=15))) == 1
    assert [e.SerializeToString() for e in appended] == [stuck.SerializeToString()]
    # Not again before another full period.
    assert asyncio.run(redriver.round(T0 + timedelta(seconds=20))) == 0


def test_due_rule():
    state = LiveMessages().apply_own(queued("m"), None)
    assert not due_for_redrive(state, T0 + timedelta(seconds=1), timedelta(seconds=15))
    assert due_for_redrive(state, T0 + timedelta(seconds=16), timedelta(seconds=15))


def test_a_backlog_is_not_redriven_until_few_messages_wait():
    # Many messages QUEUED past the deadline at once is routing's backlog (overload, routing
    # down), not lost records: redriving them would add to the backlog.
    log = Log()
    for i in range(12):
        log.commit(queued(f"m{i}"))
    appended = []

    async def append(envelope):
        appended.append(envelope.message_id)

    redriver = log.redriver(append, after=timedelta(seconds=15), max_per_round=10)
    assert asyncio.run(redriver.round(T0 + timedelta(seconds=20))) == 0
    assert appended == [] and redriver.backlog_rounds == 1
    # Routing catches up with most of them; the two left are redriven.
    for i in range(10):
        log.commit(routed(f"m{i}"))
    assert asyncio.run(redriver.round(T0 + timedelta(seconds=25))) == 2
    assert sorted(appended) == ["m10", "m11"]


def test_a_failed_append_keeps_the_message_for_the_next_round():
    log = Log()
    log.commit(queued("m"))
    calls = []

    async def append(envelope):
        calls.append(envelope.message_id)
        if len(calls) == 1:
            raise ConnectionError("log down")

    redriver = log.redriver(append, after=timedelta(seconds=15))
    assert asyncio.run(redriver.round(T0 + timedelta(seconds=16))) == 0
    assert asyncio.run(redriver.round(T0 + timedelta(seconds=21))) == 1
    assert calls == ["m", "m"]


def test_only_queued_messages_are_in_the_index():
    log = Log()
    log.commit(queued("q"))
    log.commit(queued("held", send_at=T0 + timedelta(hours=1)))
    assert "q" in log.live.queued_since and "held" not in log.live.queued_since
    log.commit(routed("q"))
    assert "q" not in log.live.queued_since
