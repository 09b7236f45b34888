"""Every dispatch command is submitted once while replicas join and leave the dispatch group.

Real Dispatchers on a real broker (both kinds): two run throughout while a third joins and
leaves again and again, so partitions move between readers while commands arrive and run.
Each reader that is given a partition reads back over the commands before its commit (for
their ids, recent_commands.py) before it hands over what comes after; a command arriving
after a move must be submitted, exactly once, whoever reads its partition then. A command
running when its partition moves gets time to finish and is committed before the move
(Dispatcher.hand_over); without that its next reader submitted it again.
"""

from __future__ import annotations

import asyncio

import pytest

from smsgw.events.topics import MESSAGE_EVENTS
from smsgw.kafka.clients import make_reader
from smsgw_carrier_adapter.carrier import SubmitProgress, SubmitResult
from smsgw_carrier_adapter.finished_outcomes import FinishedOutcomes
from tests.integration.dispatch_rig import GatedCarrier, dispatch_command, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

#: Commands per second offered, for how long, and how often the group changes.
RATE, SECONDS, CHANGE_EVERY = 40, 24, 3.0


class SlowCarrier(GatedCarrier):
    """Takes 50 ms a submit, so that commands are running when their partition moves."""

    delay = 0.05

    async def submit(self, command, progress: SubmitProgress | None = None) -> SubmitResult:
        await asyncio.sleep(self.delay)
        return await super().submit(command, progress)


async def test_each_command_is_submitted_once_while_replicas_join_and_leave(rig):
    carrier = SlowCarrier("fast")

    def replica():
        return rig.dispatcher([carrier], finished_outcomes=FinishedOutcomes(rig.settings.topic(MESSAGE_EVENTS)))

    steady = [replica() for _ in range(2)]
    running = [(d, *await rig.run(d)) for d in steady]
    sent: list[str] = []

    async def offer() -> None:
        for n in range(RATE * SECONDS):
            command = dispatch_command("fast", n)
            command.message_id = f"m-{n}"  # spread over every partition
            await rig.send([command])
            sent.append(command.command_id)
            await asyncio.sleep(1 / RATE)

    offering = asyncio.create_task(offer())
    changes = 0
    try:
        while not offering.done():
            extra = replica()
            stop, task = await rig.run(extra)
            await asyncio.sleep(CHANGE_EVERY)
            await rig.stop(extra, stop, task)
            changes += 1
            await asyncio.sleep(CHANGE_EVERY / 2)
        await offering
        try:
            await until(lambda: set(carrier.accepted) >= set(sent), 60, "every command submitted")
        except AssertionError:
            missing = sorted(set(sent) - set(carrier.accepted), key=lambda c: int(c.rsplit("-", 1)[1]))
            raise AssertionError(f"{len(missing)} of {len(sent)} never submitted: {missing[:20]}") from None
    finally:
        offering.cancel()
        for dispatcher, stop, task in running:
            await rig.stop(dispatcher, stop, task)
    assert changes >= 3
    twice = {cid: n for cid, n in carrier.accepted.items() if n > 1}
    assert not twice, f"submitted more than once: {twice}"


class HeldLookUp:
    """Makes a dispatcher's look-up readers; the first one starts only once the test releases it,
    so the group can rebalance while the dispatcher looks up its new partitions."""

    def __init__(self, make) -> None:
        self.make = make
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    def __call__(self):
        reader = self.make()
        if not self.entered.is_set():
            self.entered.set()
            start = reader.start

            async def held_start() -> None:
                await self.release.wait()
                await start()

            reader.start = held_start
        return reader


async def test_records_fetched_before_a_rebalance_are_not_started_after_it(rig):
    """A member's poll returns records of partitions new to it, and it looks up what their last
    readers did (recent_records.py: a reader of its own, reads that can take seconds). A member that
    joins meanwhile takes some of those partitions: the records polled before must not be started
    by the first member once the look-up ends (the CI run of ac7a67a submitted one twice so), since
    their new reader starts them from the commit too."""
    carrier = SlowCarrier("fast")
    carrier.delay = 1.0  # the joining member looks up outcomes before the first member's are written

    held = HeldLookUp(lambda: make_reader(rig.settings))
    commands = [dispatch_command("fast", n) for n in range(12)]
    for n, command in enumerate(commands):
        command.message_id = f"m-{n}"  # spread over every partition
    await rig.send(commands)
    first = rig.dispatcher([carrier], finished_outcomes=FinishedOutcomes(rig.settings.topic(MESSAGE_EVENTS)))
    first.make_reader = held
    second = rig.dispatcher([carrier], finished_outcomes=FinishedOutcomes(rig.settings.topic(MESSAGE_EVENTS)))
    running = [(first, *await rig.run(first))]
    try:
        await asyncio.wait_for(held.entered.wait(), 30)  # polled, looking up
        everything = set(first.consumer.assignment())
        running.append((second, *await rig.run(second)))
        await until(lambda: set(first.consumer.assignment()) not in (set(), everything), 60, "the group to rebalance")
        held.release.set()
        await until(lambda: set(carrier.accepted) >= {c.command_id for c in commands}, 60, "every command submitted")
        await asyncio.sleep(1.0)  # a second submit of the last ones would land by now
    finally:
        for dispatcher, stop, task in running:
            await rig.stop(dispatcher, stop, task)
    twice = {cid: n for cid, n in carrier.accepted.items() if n > 1}
    assert not twice, f"submitted more than once: {twice}"
