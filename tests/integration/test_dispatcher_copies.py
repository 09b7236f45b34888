"""A dispatch command that reaches the dispatch topic twice is submitted once.

Routing publishes a message's command before it records that the message was routed; killed
in between, it publishes the same command (same id) again after its restart, a little further
down the same partition. The real Dispatcher on a real broker (both kinds) must hand the copy
to nobody, whether it saw the original itself or another reader handled it before a restart.
"""

from __future__ import annotations

import asyncio

import pytest

from smsgw.events.topics import MESSAGE_EVENTS
from smsgw_carrier_adapter.finished_outcomes import FinishedOutcomes
from tests.integration.dispatch_rig import (
    GatedCarrier,
    accepted_before_a_crash,
    correlations_of,
    dispatch_command,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_a_copy_of_a_command_is_not_submitted_again_even_after_a_restart(rig):
    carrier = GatedCarrier("fast")
    originals = [dispatch_command("fast", n) for n in range(10)]

    first = rig.dispatcher([carrier])
    stop, task = await rig.run(first)
    try:
        await rig.send(originals)
        # Handled to the end first: a copy read while its original still runs waits for that
        # (the dispatcher's in-flight check); this test is about copies read afterwards.
        await until(lambda: len(carrier.accepted) == 10 and not first.parking.active("fast"), 30, "the originals")
        await rig.send([originals[3], originals[7]])  # copies, as a restarted routing would publish them
        await rig.send([dispatch_command("fast", 10)])
        await until(
            lambda: len(carrier.accepted) == 11 and first.copies_skipped == 2,
            30,
            "the commands, and the copies skipped",
        )
    finally:
        await rig.stop(first, stop, task)

    # A new reader (the adapter restarted): it never saw the originals, which its group's commit
    # is past; the copies come after that commit.
    await rig.send([originals[1], originals[5]])
    await rig.send([dispatch_command("fast", 11)])
    second = rig.dispatcher([carrier])
    stop, task = await rig.run(second)
    try:
        await until(
            lambda: len(carrier.accepted) == 12 and second.copies_skipped == 2,
            30,
            "the new command, and the copies read after the restart skipped",
        )
    finally:
        await rig.stop(second, stop, task)
    assert set(carrier.accepted.values()) == {1}, carrier.accepted


async def test_a_copy_further_back_than_the_window_is_submitted_again(rig):
    """The window is a bound, not a promise beyond it: it is sized for what routing can publish
    twice (a batch or two); a copy further away is a new command to the dispatcher."""
    carrier = GatedCarrier("fast")
    dispatcher = rig.dispatcher([carrier])
    dispatcher.dedupe_window = 3
    stop, task = await rig.run(dispatcher)
    try:
        commands = [dispatch_command("fast", n) for n in range(6)]
        for command in commands:
            command.message_id = "m-one-partition"  # the key: all in one partition, where the window counts
        await rig.send(commands)
        await until(lambda: len(carrier.accepted) == 6 and not dispatcher.parking.active("fast"), 30, "the originals")
        await rig.send([commands[0]])  # 6 commands back in its partition: forgotten
        try:
            await until(lambda: sum(carrier.accepted.values()) == 7, 30, "the commands and the far copy")
        except AssertionError:
            raise AssertionError(f"{dict(carrier.accepted)}, {dispatcher.copies_skipped} skipped") from None
    finally:
        await rig.stop(dispatcher, stop, task)
    assert carrier.accepted[commands[0].command_id] == 2 and dispatcher.copies_skipped == 0


async def test_a_command_rerouted_by_a_replica_killed_before_its_commit_is_not_sent_again(rig):
    """A replica rerouted a command to the next carrier of its route (the successor is on the
    topic, after it) and was killed before it committed it. The first carrier is back when the next
    replica reads the command again: submitted there, the message would go to both carriers. The
    next replica finds the successor after the commit and skips the command."""
    first, second = GatedCarrier("first"), GatedCarrier("second")
    original = dispatch_command("first", 0)
    successor = dispatch_command("second", 0)
    successor.message_id = original.message_id  # the same message: the same partition, after it
    successor.command_id = "rerouted-0"
    successor.rerouted_from = original.command_id
    await rig.send([original, successor])
    dispatcher = rig.dispatcher([first, second], finished_outcomes=FinishedOutcomes(rig.settings.topic(MESSAGE_EVENTS)))
    stop, task = await rig.run(dispatcher)
    try:
        await until(lambda: successor.command_id in second.accepted, 30, "the successor")
        await asyncio.sleep(1.0)  # time for the original to be (wrongly) submitted
    finally:
        await rig.stop(dispatcher, stop, task)
    assert not first.tried, "the rerouted command was handled again"
    assert second.accepted == {successor.command_id: 1} and dispatcher.outcomes_found == 1


async def test_a_command_accepted_by_a_replica_killed_before_its_commit_gets_its_correlations_again(rig):
    """The dispatcher writes a CarrierAccepted and the correlations of its carrier ids together
    (one round of acknowledged writes): a replica killed then may leave the event durable and a
    correlation not. The next reader finds the command accepted but uncommitted: it does not
    submit it again, writes its correlations (so its receipts find their message), and commits."""
    carrier = GatedCarrier("fast")
    accepted, newer = dispatch_command("fast", 0), dispatch_command("fast", 1)
    await rig.send([accepted, newer])
    # What the killed replica left: the CarrierAccepted of the first command only.
    await accepted_before_a_crash(rig, accepted, ["sm-7a", "sm-7b"])
    outcomes = FinishedOutcomes(rig.settings.topic(MESSAGE_EVENTS))
    dispatcher = rig.dispatcher([carrier], finished_outcomes=outcomes)
    stop, task = await rig.run(dispatcher)
    try:
        await until(lambda: newer.command_id in carrier.accepted and dispatcher.outcomes_found == 1, 30, "the commands")
        correlations = await correlations_of(rig, {"fast/sm-7a", "fast/sm-7b", f"fast/fast-{newer.command_id}"}, 30)
    finally:
        await rig.stop(dispatcher, stop, task)
    assert accepted.command_id not in carrier.tried, "the accepted command was submitted again"
    assert correlations["fast/sm-7a"] == (accepted.message_id, 0, 2, accepted.sequence + 2)
    assert correlations["fast/sm-7b"] == (accepted.message_id, 1, 2, accepted.sequence + 2)
    assert correlations[f"fast/fast-{newer.command_id}"] == (newer.message_id, 0, 1, newer.sequence + 2)

    # Committed once its correlations were durable: the next reader has nothing to do again.
    again = rig.dispatcher([carrier], finished_outcomes=FinishedOutcomes(rig.settings.topic(MESSAGE_EVENTS)))
    stop, task = await rig.run(again)
    try:
        await asyncio.sleep(1.0)  # time to read (wrongly) what the commit is past
    finally:
        await rig.stop(again, stop, task)
    assert again.outcomes_found == 0 and carrier.accepted == {newer.command_id: 1}
