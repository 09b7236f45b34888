"""A batch that mixes HIGH with NORMAL messages while routing's backlog is at its limit: the HIGH
ones are appended at once, before the NORMAL ones wait at the gate, so the wait never eats the
time their append needs (a CI run saw a HIGH item answered ACCEPTANCE_IN_DOUBT after its
batch's NORMAL item had waited out most of a 0.5 s deadline). The answers keep the request's order.

The append is stood in for: what is under test is the order of admission and append."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from smsgw.domain import errors as de
from smsgw.v1 import message_pb2 as mp
from smsgw_intake.admission import AdmissionPolicy, SendCommand
from smsgw_intake.backlog_gate import BacklogGate
from smsgw_intake.live import LiveMessages
from smsgw_intake.servicer import Intake

HIGH = mp.MessagePriority.MESSAGE_PRIORITY_HIGH
NORMAL = mp.MessagePriority.MESSAGE_PRIORITY_NORMAL


class AppendsRecorded(Intake):
    """Each append is written down with when it started and which messages it carried."""

    appends: list[tuple[float, list[str]]]

    async def _send_admitted(self, account_id, commands, grant, *, within):
        self.appends.append((time.monotonic(), [c.body for c in commands if isinstance(c, SendCommand)]))
        await asyncio.sleep(0.01)
        return [c if isinstance(c, de.DomainError) else (c.body, False) for c in commands]


def intake_with(gate: BacklogGate) -> AppendsRecorded:
    intake = AppendsRecorded(
        producer=None,
        topic="t",
        store=cast(Any, None),  # never read: no message is looked up
        projector=cast(Any, None),
        live=LiveMessages(),
        producer_name="intake/me",
        policy=AdmissionPolicy(),
        max_in_flight=10,
        gate=gate,
    )
    intake.appends = []
    return intake


def command(body: str, priority: Any) -> SendCommand:
    return SendCommand(to="+14155550100", sender="ACME", body=body, priority=priority)


async def test_high_items_are_appended_before_the_normal_ones_wait_and_answers_keep_their_order():
    backlog = 100  # over the limit of 10; it moved just now, so the gate holds
    gate = BacklogGate(lambda: backlog, limit=10, max_wait=5.0)
    intake = intake_with(gate)
    undecodable = de.InvalidArgument("not a number", field="to")
    batch = [command("bulk 1", NORMAL), command("otp 1", HIGH), undecodable, command("otp 2", HIGH)]
    started = time.monotonic()
    answers = await intake.send_many("a", batch, within=0.6)

    (when, bodies), *rest = intake.appends
    assert bodies == ["otp 1", "otp 2"] and when - started < 0.1, "the HIGH items waited for the gate"
    assert rest == [], "the NORMAL item was appended without room"
    refused, otp1, passed_through, otp2 = answers
    assert isinstance(refused, de.QueueFull)
    assert time.monotonic() - started >= 0.6 - 2 * 0.2 - 0.05, "the NORMAL item waited for room in its time"
    assert otp1 == ("otp 1", False) and otp2 == ("otp 2", False)
    assert passed_through is undecodable
    assert gate.refused == 1


async def test_with_room_the_normal_items_follow_the_high_ones():
    backlog = 100
    gate = BacklogGate(lambda: backlog, limit=10, max_wait=5.0)
    intake = intake_with(gate)
    sending = asyncio.create_task(intake.send_many("a", [command("otp", HIGH), command("bulk", NORMAL)]))
    await asyncio.sleep(0.05)
    assert [bodies for _, bodies in intake.appends] == [["otp"]]
    backlog = 0  # routing took the backlog
    gate.changed(taken=True)
    assert await asyncio.wait_for(sending, 1) == [("otp", False), ("bulk", False)]
    assert [bodies for _, bodies in intake.appends] == [["otp"], ["bulk"]]
    assert gate.waited == 1 and gate.refused == 0
