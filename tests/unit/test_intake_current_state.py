"""intake's view of a message while the projector commits it: never "no such message".

A CI run caught WatchMessage ending at once for a message just sent: the replica's own append was
dropped from `live` (the projector had committed it) while the store was read from a snapshot
taken before that commit, so neither had it. The store and projector here are stand-ins that let
the commit land exactly during the store read."""

import asyncio

from smsgw.events.envelope import new_event
from smsgw.projections.store import LoggedEvent
from smsgw.v1 import events_pb2 as ev
from smsgw_intake.admission import AdmissionPolicy
from smsgw_intake.live import LiveMessages
from smsgw_intake.servicer import Intake


class CommittingDuringRead:
    """get_state answers from a snapshot taken before a commit that lands while it reads."""

    def __init__(self, commit):
        self.commit = commit

    async def get_state(self, message_id):
        self.commit()
        await asyncio.sleep(0)
        return None  # the snapshot predates the commit


class Projector:
    def __init__(self):
        self.cache = {}

    def cached_state(self, message_id):
        return self.cache.get(message_id)


async def test_a_message_committed_while_the_store_is_read_is_still_found():
    live = LiveMessages()
    projector = Projector()
    envelope = new_event(
        ev.MessageQueued(to="+14155550100", content=ev.MessageContent(text="x"), segments=1),
        service="intake",
        producer="intake/me",
        message_id="m1",
        account_id="a",
        sequence=1,
    )
    state = live.apply_own(envelope, None)

    def commit():  # what the projector does after its transaction: cache, then listeners
        projector.cache["m1"] = state
        live.on_committed(LoggedEvent(0, 0, envelope, state))

    intake = Intake(
        producer=None,
        topic="t",
        store=CommittingDuringRead(commit),
        projector=projector,
        live=live,
        producer_name="intake/me",
        policy=AdmissionPolicy(),
        max_in_flight=10,
    )
    assert await intake.current_state("m1") == state
    assert live.own("m1") is None  # it was dropped during the read: the cache answered


class AckedWhenTold:
    """A producer whose acks come back only when the test says so."""

    def __init__(self):
        self.sent = []

    async def send(self, topic, key, value, headers):
        ack = asyncio.get_running_loop().create_future()
        self.sent.append((value, ack))
        return ack


class RecordMetadata:
    partition = 0
    offset = 0


async def test_an_ack_that_comes_back_after_the_projector_committed_later_events_answers_with_those():
    """Under load the brokers' ack can reach intake after routing read the record and this
    replica's projector committed the message's later events. The answer is then the newest
    state, and the QUEUED index (the backlog gate's measure) does not take the message back: a CI
    run on Tansu saw 3,000 delivered messages stay in it, holding sends behind a backlog that
    was gone."""
    from smsgw.domain import status as st
    from smsgw.domain.message_state import fold
    from smsgw.events.envelope import decode_event
    from smsgw_intake.admission import SendCommand

    live = LiveMessages()
    projector = Projector()
    producer = AckedWhenTold()
    intake = Intake(
        producer=producer,
        topic="t",
        store=CommittingDuringRead(lambda: None),
        projector=projector,
        live=live,
        producer_name="intake/me",
        policy=AdmissionPolicy(),
        max_in_flight=10,
    )
    sending = asyncio.create_task(intake.send("a", SendCommand(to="+14155550100", sender="", body="hello")))
    while not producer.sent:
        await asyncio.sleep(0.001)
    ((value, ack),) = producer.sent
    queued = decode_event(value)
    routed = new_event(
        ev.MessageRouted(carrier="smsc-sim", route="*"),
        service="routing",
        producer="routing/r",
        message_id=queued.message_id,
        account_id="a",
        sequence=queued.sequence + 1,
    )
    # The projector commits both events (cache, then listeners) before the ack is back.
    for envelope in (queued, routed):
        projector.cache[queued.message_id] = state = fold([queued, routed][: 1 + (envelope is routed)])
        live.on_committed(LoggedEvent(0, 0, envelope, state))
    assert queued.message_id not in live.queued_since
    ack.set_result(RecordMetadata())
    answer, duplicate = await sending
    assert answer.status == st.SENDING and answer.version == 2 and not duplicate
    assert queued.message_id not in live.queued_since, "a routed message is back in the QUEUED index"
    assert live.own(queued.message_id) is None
