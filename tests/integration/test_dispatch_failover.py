"""A message its carrier cannot take moves to the next carrier of its route after the configured
number of failed attempts (SMSGW_DISPATCH_FAILOVER_AFTER_ATTEMPTS), before the time limit would
move it; the reroute says how many attempts were made. The real Dispatcher on a real broker
(both kinds), through the dispatch rig. The time limit is tested on the whole platform in
test_route_failover.py."""

from __future__ import annotations

import pytest

from smsgw.events.envelope import decode_event
from smsgw.events.topics import CARRIER_DISPATCH, MESSAGE_EVENTS
from tests.integration.dispatch_rig import GatedCarrier, dispatch_command, read_until, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MESSAGES, ATTEMPTS = 4, 3


async def test_a_message_moves_to_the_next_carrier_after_the_configured_failed_attempts(rig):
    down, up = GatedCarrier("down", up=False), GatedCarrier("up")
    commands = [dispatch_command("down", n) for n in range(MESSAGES)]
    for command in commands:
        command.fallback_carriers.append("up")
    dispatcher = rig.dispatcher(
        [down, up],
        dispatch_topic=rig.settings.topic(CARRIER_DISPATCH),
        failover_after=600.0,  # the time limit is far: only the count can move them
        failover_after_attempts=ATTEMPTS,
    )
    await rig.send(commands)
    stop, task = await rig.run(dispatcher)
    await until(lambda: len(up.accepted_messages) == MESSAGES, 30, "the messages at the next carrier")
    await rig.stop(dispatcher, stop, task)
    assert set(up.accepted_messages) == {c.message_id for c in commands}
    assert all(count == 1 for count in up.accepted_messages.values())
    assert not down.accepted

    rerouted = {}

    def on_record(record) -> None:
        envelope = decode_event(record.value)
        if envelope.HasField("message_rerouted"):
            rerouted[envelope.message_id] = envelope.message_rerouted

    await read_until(rig, MESSAGE_EVENTS, on_record, lambda: len(rerouted) == MESSAGES, 30, f"the reroutes: {rerouted}")
    assert {(r.from_carrier, r.carrier, r.reason, r.attempts) for r in rerouted.values()} == {
        ("down", "up", "NOT_CONNECTED", ATTEMPTS)
    }
