"""A carrier down for longer than the adapter holds a message: its messages wait on the delay topic.

The real Dispatcher and the real reader of the delay topic (DelayedCommands) on a real broker
(both kinds), with the GatedCarrier of dispatch_rig.py: "slow" is down until the test opens its
gate, "fast" takes everything at once. Deferred, a message's command is committed (its
partition's commit no longer waits for it: nothing is parked or retried for it in the adapter)
and comes back a lap later, until its carrier takes it or its validity ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from aiokafka.structs import TopicPartition

from smsgw.events.topics import CARRIER_DISPATCH, CARRIER_DISPATCH_DELAYED, DELAY_TIERS, MESSAGE_EVENTS
from smsgw.kafka.clients import make_group_consumer, wait_for_partitions
from smsgw_carrier_adapter.deferral import DelayTiers
from smsgw_carrier_adapter.delayed_commands import DelayedCommands
from smsgw_carrier_adapter.dispatcher import Dispatcher
from smsgw_carrier_adapter.finished_outcomes import FinishedOutcomes
from tests.integration.dispatch_rig import SHARE, GatedCarrier, dispatch_command, events_of, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SLOW, FAST = 30, 10
LAP = 1.0


def _tiers(rig) -> DelayTiers:
    return DelayTiers({laps: rig.settings.topic(spec) for laps, spec in DELAY_TIERS.items()}, LAP)


def _deferring(rig, carriers: list[GatedCarrier], **overrides) -> Dispatcher:
    settings = {
        "delay_tiers": _tiers(rig),
        "defer_after": 0.5,
        "defer_longest": 2 * LAP,
        **overrides,
    }
    return rig.dispatcher(carriers, **settings)


@contextlib.asynccontextmanager
async def _delay_reader(rig, **settings):
    """The delay topic's reader of a carrier-adapter replica, running."""
    reader = _reader_of(rig, **settings)
    await reader.consumer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(reader.run(stop))
    try:
        yield reader
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await reader.consumer.stop()


def _reader_of(rig, **overrides) -> DelayedCommands:
    settings = rig.settings
    tiers = _tiers(rig)
    return DelayedCommands(
        **overrides,
        consumer=make_group_consumer(settings, "carrier-adapter-delayed", *tiers.topics.values()),
        producer=rig.producer,
        tiers=tiers,
        dispatch_topic=settings.topic(CARRIER_DISPATCH),
    )


async def _everything_committed(rig, dispatcher: Dispatcher, topic: str) -> bool:
    """The dispatcher's group has committed every partition of `topic` to its end."""
    consumer = dispatcher.consumer
    bootstrap = rig.settings.kafka_bootstrap
    partitions = [TopicPartition(topic, p) for p in await wait_for_partitions(bootstrap, topic)]
    ends = await consumer.end_offsets(partitions)
    for tp in partitions:
        if (await consumer.committed(tp) or 0) < ends[tp]:
            return False
    return True


async def test_messages_of_a_carrier_down_for_long_wait_on_the_delay_topic_and_go_once_it_is_back(rig):
    slow, fast = GatedCarrier("slow", up=False), GatedCarrier("fast")
    dispatcher = _deferring(rig, [slow, fast])
    stop, task = await rig.run(dispatcher)
    try:
        async with _delay_reader(rig) as reader:
            await rig.send([dispatch_command("slow", n) for n in range(SLOW)])
            await rig.send([dispatch_command("fast", n) for n in range(FAST)])
            await until(lambda: len(fast.accepted) == FAST, 30, "the fast carrier's commands")
            await until(lambda: dispatcher.deferred["slow"] >= SLOW, 60, "every slow command deferred")
            # Nothing of them is held here: the dispatch topic is committed to its end between laps.
            topic = rig.settings.topic(CARRIER_DISPATCH)
            deadline = time.monotonic() + 20
            while not await _everything_committed(rig, dispatcher, topic):
                assert time.monotonic() < deadline, "the dispatch topic's commit stayed behind deferred commands"
                await asyncio.sleep(0.1)
            assert dispatcher.parking.parked("slow") == 0
            await until(lambda: reader.dispatched >= SLOW, 30, "the deferred commands back on the dispatch topic")

            slow.up.set()
            await until(lambda: len(slow.accepted_messages) == SLOW, 60, "the slow carrier's messages once it is back")
            await asyncio.sleep(2 * LAP)  # time for a copy to be (wrongly) submitted
    finally:
        await rig.stop(dispatcher, stop, task)
    assert set(slow.accepted_messages.values()) == {1}, "each message once"
    assert set(fast.accepted.values()) == {1}
    found = await events_of(rig, {f"m-slow-{n}" for n in range(SLOW)}, {"carrier_accepted"}, 30)
    for kinds in found.values():
        assert "dispatch_deferred" in kinds and kinds[-1] == "carrier_accepted", kinds
        assert kinds.index("submit_attempt_failed") < kinds.index("dispatch_deferred"), kinds


async def test_a_backlog_beyond_max_parked_drains_to_the_delay_topic_and_the_others_go_on(rig):
    """The carrier down has more commands than the replica parks (`max_parked`): the partitions
    pause, and the parked commands must still be read again to be deferred, so that the other
    carrier's commands behind them go while the carrier is still down. (`make bench-outage` found
    every partition paused for good there: nothing deferred beyond the first share.)"""
    slow, fast = GatedCarrier("slow", up=False), GatedCarrier("fast")
    dispatcher = _deferring(rig, [slow, fast], max_parked=2 * SHARE)
    stop, task = await rig.run(dispatcher)
    try:
        async with _delay_reader(rig):
            await rig.send([dispatch_command("slow", n) for n in range(SLOW)])
            await rig.send([dispatch_command("fast", n) for n in range(FAST)])
            await until(lambda: len(fast.accepted) == FAST, 60, "the fast carrier's commands, the slow one down")
            await until(lambda: dispatcher.deferred["slow"] >= SLOW, 60, "every slow command deferred")
            assert not slow.accepted
            slow.up.set()
            await until(lambda: len(slow.accepted_messages) == SLOW, 60, "the slow carrier's messages once it is back")
            await asyncio.sleep(2 * LAP)  # time for a copy to be (wrongly) submitted
    finally:
        await rig.stop(dispatcher, stop, task)
    assert set(slow.accepted_messages.values()) == {1} and set(fast.accepted.values()) == {1}


async def test_while_a_carrier_stays_down_only_one_command_a_lap_leaves_the_delay_topic(rig):
    """With the dispatcher's view of its carriers (as in the service), the delay topic's reader
    keeps the due commands of a carrier still down for another wait and sends back one a lap, a
    probe: while it is down, the carrier sees a probe a lap, not every waiting message each time it
    comes due. Once a probe gets through, the others follow."""
    slow = GatedCarrier("slow", up=False)
    dispatcher = _deferring(rig, [slow], defer_longest=4 * LAP)
    stop, task = await rig.run(dispatcher)
    try:
        async with _delay_reader(rig, longest=4 * LAP, carrier_down=dispatcher.carrier_down) as reader:
            await rig.send([dispatch_command("slow", n) for n in range(SLOW)])
            await until(lambda: dispatcher.deferred["slow"] >= SLOW, 60, "every slow command deferred")
            tried = len(slow.tried)
            watched = 8 * LAP
            await asyncio.sleep(watched)
            probes = len(slow.tried) - tried
            assert reader.held >= SLOW, f"held {reader.held}"
            # Without the hold each of the 30 comes back every 1-4 laps: 60 attempts or more.
            assert probes <= watched / LAP + 2, f"{probes} attempts in {watched:.0f} laps"
            slow.up.set()
            await until(lambda: len(slow.accepted_messages) == SLOW, 60, "the slow carrier's messages once it is back")
            await asyncio.sleep(2 * LAP)  # time for a copy to be (wrongly) submitted
    finally:
        await rig.stop(dispatcher, stop, task)
    assert set(slow.accepted_messages.values()) == {1}


async def test_a_deferred_message_whose_validity_ends_expires(rig):
    """Deferred while its validity lasts; back within a lap of its end, it waits here and ends
    EXPIRED (DispatchExpired), never sent."""
    slow = GatedCarrier("slow", up=False)
    dispatcher = _deferring(rig, [slow])
    soon = dispatch_command("slow", 0)
    stop, task = await rig.run(dispatcher)
    try:
        async with _delay_reader(rig):
            soon.expires_at.FromNanoseconds(time.time_ns() + 8_000_000_000)  # a few laps
            await rig.send([soon])
            found = await events_of(rig, {soon.message_id}, {"dispatch_expired"}, 40)
    finally:
        await rig.stop(dispatcher, stop, task)
    kinds = found[soon.message_id]
    assert "dispatch_deferred" in kinds and kinds[-1] == "dispatch_expired", kinds
    assert not slow.accepted


async def test_commands_written_back_by_a_delay_reader_that_died_before_its_commit_are_sent_once(rig, monkeypatch):
    """The delay topic's reader writes due commands to the dispatch topic and commits after: killed
    in between, its successor writes them again. The copies carry the same command ids and are
    skipped by the dispatcher."""
    fast = GatedCarrier("fast")
    dispatcher = _deferring(rig, [fast])
    waiting = []
    for n in range(10):
        command = dispatch_command("fast", n)
        command.command_id = f"deferred-{n}"
        command.laps_left = 1
        command.deferrals = 1
        command.attempts_made = 3
        waiting.append(command)
    for command in waiting:
        await rig.producer.send_and_wait(
            rig.settings.topic(CARRIER_DISPATCH_DELAYED),
            key=command.message_id.encode(),
            value=command.SerializeToString(),
        )
    stop, task = await rig.run(dispatcher)
    try:
        dying = _reader_of(rig)

        async def killed_before_committing(offsets) -> None:
            """What a kill -9 right after the writes leaves: nothing committed."""

        monkeypatch.setattr(dying.consumer, "commit", killed_before_committing)
        await dying.consumer.start()
        stop_dying = asyncio.Event()
        dying_task = asyncio.create_task(dying.run(stop_dying))
        await until(lambda: dying.dispatched == 10, 30, "the first reader's writes")
        # Handled to the end first: a copy read while its original still runs waits for that
        # outcome (never submitted twice either, but not counted as a copy).
        await until(lambda: len(fast.accepted) == 10 and not dispatcher.parking.active("fast"), 30, "the originals")
        stop_dying.set()
        await asyncio.wait_for(dying_task, 30)
        await dying.consumer.stop()

        async with _delay_reader(rig) as successor:
            await until(lambda: successor.dispatched == 10, 30, "the successor's writes of the same commands")
            await until(lambda: dispatcher.copies_skipped == 10, 30, "the copies skipped")
    finally:
        await rig.stop(dispatcher, stop, task)
    assert set(fast.accepted_messages.values()) == {1} and len(fast.accepted_messages) == 10
    assert set(fast.accepted) == {c.command_id for c in waiting}


async def test_a_command_deferred_by_a_replica_killed_before_its_commit_is_not_sent_again(rig):
    """A replica deferred a command (its successor is on the delay topic) and was killed before it
    committed it. Its carrier is back when the next replica reads the command again: submitted
    then, the message would go twice (once now, once when the successor comes back). The next
    replica finds the successor on the delay topic and skips the command."""
    fast = GatedCarrier("fast")
    deferred, waiting = dispatch_command("fast", 0), dispatch_command("fast", 0)
    waiting.command_id = "successor-0"
    waiting.deferred_from = deferred.command_id
    waiting.laps_left = 1
    waiting.deferrals = 1
    waiting.attempts_made = 1
    await rig.send([deferred])
    await rig.producer.send_and_wait(
        rig.settings.topic(CARRIER_DISPATCH_DELAYED), key=waiting.message_id.encode(), value=waiting.SerializeToString()
    )
    outcomes = FinishedOutcomes(rig.settings.topic(MESSAGE_EVENTS), delay_topics=list(_tiers(rig).topics.values()))
    dispatcher = _deferring(rig, [fast], finished_outcomes=outcomes)
    stop, task = await rig.run(dispatcher)
    try:
        async with _delay_reader(rig):
            await until(lambda: waiting.command_id in fast.accepted, 30, "the successor, back from the delay topic")
            await asyncio.sleep(1.0)  # time for the deferred command to be (wrongly) submitted
    finally:
        await rig.stop(dispatcher, stop, task)
    assert deferred.command_id not in fast.tried, "the deferred command was handled again"
    assert fast.accepted_messages == {waiting.message_id: 1} and dispatcher.outcomes_found == 1


async def test_a_long_wait_is_one_write_to_its_tier_and_ends_on_time(rig):
    """A command that waits 4 laps is written once, to the 4-lap tier, and comes back 4 laps
    later (one tier: 4 writes, one a lap). One written before the tiers, 6 laps left on the
    one-lap tier, still waits 6 laps: a lap there, 4 on the 4-lap tier, the last one there again."""
    fast = GatedCarrier("fast")
    dispatcher = _deferring(rig, [fast])
    tiers = _tiers(rig)
    tiered, legacy = dispatch_command("fast", 0), dispatch_command("fast", 1)
    for command, laps, deferrals in ((tiered, 4, 3), (legacy, 6, 4)):
        command.laps_left, command.deferrals, command.attempts_made = laps, deferrals, 3
    stop, task = await rig.run(dispatcher)
    try:
        async with _delay_reader(rig) as reader:
            written = time.monotonic()
            await rig.producer.send_and_wait(
                tiers.topic_for(4), key=tiered.message_id.encode(), value=tiered.SerializeToString()
            )
            await rig.producer.send_and_wait(
                rig.settings.topic(CARRIER_DISPATCH_DELAYED),
                key=legacy.message_id.encode(),
                value=legacy.SerializeToString(),
            )
            back: dict[str, float] = {}

            def arrived() -> bool:
                for command in (tiered, legacy):
                    if command.command_id in fast.accepted:
                        back.setdefault(command.command_id, time.monotonic() - written)
                return len(back) == 2

            await until(arrived, 30, "both commands back from the delay topics")
            await asyncio.sleep(LAP)  # time for a copy (there must be none)
    finally:
        await rig.stop(dispatcher, stop, task)
    assert 4 * LAP <= back[tiered.command_id] < 4 * LAP + 1.5, back
    assert 6 * LAP <= back[legacy.command_id] < 6 * LAP + 1.5, back
    assert reader.dispatched == 2
    assert reader.lapped == 2, "the tiered command was written once; the legacy one twice more (4 laps, then 1)"
    assert fast.accepted_messages == {tiered.message_id: 1, legacy.message_id: 1}
