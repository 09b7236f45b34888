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
