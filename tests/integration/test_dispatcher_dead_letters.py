"""A record on the dispatch topic that is no command this code can read (not protobuf, or
without the ids every command has) goes to the dead-letter topic and the partition goes on:
the commands behind it are submitted, the commit passes it, and a replica that reads the
partition again neither dead-letters it twice nor submits anything twice.

The real Dispatcher on a real broker (both kinds), through the dispatch rig."""

from __future__ import annotations

import asyncio

import pytest

from smsgw.dead_letters import read_dead_letters
from smsgw.events.topics import CARRIER_DISPATCH, DEAD_LETTERS
from smsgw.v1 import carrier_pb2 as cp
from tests.integration.dispatch_rig import GatedCarrier, dispatch_command, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

COMMANDS = 12


async def test_an_unreadable_dispatch_record_is_dead_lettered_and_the_partition_goes_on(rig):
    commands = [dispatch_command("fast", n) for n in range(COMMANDS)]
    dispatch_topic = rig.settings.topic(CARRIER_DISPATCH)
    # In front of the first command, in its partition (same key): bytes that are not protobuf,
    # and a record that parses but has no ids (written by something that is not routing).
    key = commands[0].message_id.encode()
    await rig.producer.send_and_wait(dispatch_topic, key=key, value=b"\xff\xfe not a command")
    await rig.producer.send_and_wait(
        dispatch_topic, key=key, value=cp.DispatchCommand(carrier="fast").SerializeToString()
    )
    await rig.send(commands)

    fast = GatedCarrier("fast")
    dispatcher = rig.dispatcher([fast], dead_letter_topic=rig.settings.topic(DEAD_LETTERS))
    stop, task = await rig.run(dispatcher)
    await until(lambda: len(fast.accepted) == COMMANDS, 30, "the commands behind the unreadable records")
    assert dispatcher.dead_lettered == 2
    await rig.stop(dispatcher, stop, task)  # commits what finished, the dead letters included

    letters = await read_dead_letters(rig.settings.kafka_connection(), rig.settings.topic(DEAD_LETTERS))
    assert [letter.value for letter in letters] == [
        b"\xff\xfe not a command",
        cp.DispatchCommand(carrier="fast").SerializeToString(),
    ]
    sources = [letter.source for letter in letters]
    assert {topic for topic, _, _ in sources} == {dispatch_topic} and len({p for _, p, _ in sources}) == 1
    assert all(letter.header("service") == "carrier-adapter" for letter in letters)
    assert all(letter.header("error").startswith("DecodeError") for letter in letters)
    assert all(letter.key == key and letter.original_headers == [] for letter in letters)

    # The next replica starts after them: nothing dead-lettered or submitted again.
    again = GatedCarrier("fast")
    successor = rig.dispatcher([again], dead_letter_topic=rig.settings.topic(DEAD_LETTERS))
    stop, task = await rig.run(successor)
    await asyncio.sleep(2.0)  # time to read anything the commit did not cover
    await rig.stop(successor, stop, task)
    assert successor.dead_lettered == 0 and not again.tried
    assert len(await read_dead_letters(rig.settings.kafka_connection(), rig.settings.topic(DEAD_LETTERS))) == 2
    assert all(count == 1 for count in fast.accepted.values())
