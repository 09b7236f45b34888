"""A carrier that is down takes only its share of the dispatcher; the rest of its commands are
parked and come back, each submitted once, when it recovers.

The real Dispatcher on a real broker (both kinds), with two carriers in this file: "slow" is
down (CarrierUnavailable) until the test opens its gate, "fast" accepts at once. The window
(max_in_flight) is smaller than the slow carrier's backlog, so without parking the slow
carrier's waiting commands fill it and the fast carrier's never start.
"""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import pytest

from smsgw.events.topics import MESSAGE_EVENTS
from smsgw.metrics_endpoint import MetricsEndpoint
from smsgw_carrier_adapter.finished_outcomes import FinishedOutcomes
from smsgw_carrier_adapter.metrics import DispatchCollector
from tests.integration.dispatch_rig import (
    SHARE,
    GatedCarrier,
    accepted_before_a_crash,
    dispatch_command,
    events_of,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SLOW, FAST = 40, 20


async def _slow_backlog_then_fast(rig, fast: GatedCarrier) -> None:
    """The slow carrier's backlog comes first and is larger than the whole window; then the fast one's."""
    await rig.send([dispatch_command("slow", n) for n in range(SLOW)])
    await rig.send([dispatch_command("fast", n) for n in range(FAST)])
    await until(lambda: len(fast.accepted) == FAST, 30, "the fast carrier's commands")


@pytest.mark.parametrize("kept", [20_000, 7, 0], ids=["all-kept", "some-kept", "none-kept"])
async def test_a_carrier_that_is_down_takes_only_its_share(rig, kept):
    """`kept`: parked commands kept in memory; the others are read again from the topic."""
    slow, fast = GatedCarrier("slow", up=False), GatedCarrier("fast")
    dispatcher = rig.dispatcher([slow, fast], parked_in_memory=kept)
    stop, task = await rig.run(dispatcher)
    try:
        await _slow_backlog_then_fast(rig, fast)
        # Only the slow carrier's share ever tried; the rest waited parked, never submitted.
        assert len(slow.tried) == SHARE and not slow.accepted
        # And /metrics says so.
        metrics = MetricsEndpoint([DispatchCollector(dispatcher)], service="carrier-adapter")
        await metrics.start()
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{metrics.port}/metrics") as response:
                    text = await response.text()
        finally:
            await metrics.stop()
        assert f'smsgw_carrier_commands_running{{carrier="slow"}} {float(SHARE)}' in text
        assert f'smsgw_carrier_commands_parked{{carrier="slow"}} {float(SLOW - SHARE)}' in text
        assert 'smsgw_carrier_commands_parked{carrier="fast"} 0.0' in text
        assert "smsgw_carrier_command_copies_skipped_total 0.0" in text
        retried = re.search(r'smsgw_carrier_submit_retries_total\{carrier="slow",reason="NOT_CONNECTED"\} (\S+)', text)
        assert retried and float(retried[1]) >= SHARE, text  # each running command failed at least once
        assert 'smsgw_carrier_submit_retries_total{carrier="fast"' not in text

        slow.up.set()
        await until(lambda: len(slow.accepted) == SLOW, 60, "the slow carrier's backlog after it came back")
        assert set(slow.accepted.values()) == {1} and set(fast.accepted.values()) == {1}
        # Started from memory where kept; the partition read again only for the others.
        assert (dispatcher.parked_rereads == 0) == (kept >= SLOW - SHARE), dispatcher.parked_rereads
        assert dispatcher.parking.kept() == 0, "a started command is still kept"
    finally:
        await rig.stop(dispatcher, stop, task)

    # Everything was committed: a new reader of the group submits nothing again.
    again_slow, again_fast = GatedCarrier("slow"), GatedCarrier("fast")
    second = rig.dispatcher([again_slow, again_fast])
    stop, task = await rig.run(second)
    await asyncio.sleep(2.0)
    await rig.stop(second, stop, task)
    assert not again_slow.tried and not again_fast.tried


@pytest.mark.parametrize("kept", [20_000, 0], ids=["all-kept", "none-kept"])
async def test_a_backlog_beyond_max_parked_goes_once_its_carrier_is_back(rig, kept):
    """More parked commands than `max_parked`: the partitions pause (the fast carrier's commands
    behind them wait too, by design: the bound on what a replica holds). Once the slow carrier is
    back, its parked commands are read again and start, so everything goes, each once. (The
    partitions being read again used to stay paused with the rest: nothing ever moved again.)"""
    slow, fast = GatedCarrier("slow", up=False), GatedCarrier("fast")
    dispatcher = rig.dispatcher([slow, fast], max_parked=2 * SHARE, parked_in_memory=kept)
    stop, task = await rig.run(dispatcher)
    try:
        await rig.send([dispatch_command("slow", n) for n in range(SLOW)])
        await rig.send([dispatch_command("fast", n) for n in range(FAST)])
        await until(lambda: dispatcher.parking.parked("slow") >= 2 * SHARE, 30, "the parking full")
        await asyncio.sleep(1.0)
        assert dispatcher.parking.parked("slow") < SLOW - SHARE, "read beyond max_parked"
        slow.up.set()
        await until(lambda: len(slow.accepted) == SLOW, 60, "the slow carrier's backlog after it came back")
        await until(lambda: len(fast.accepted) == FAST, 30, "the fast carrier's commands behind it")
        await asyncio.sleep(1.0)  # time for anything wrongly resubmitted to show
    finally:
        await rig.stop(dispatcher, stop, task)
    assert set(slow.accepted.values()) == {1} and set(fast.accepted.values()) == {1}


async def test_parked_commands_survive_a_restart(rig, broker):
    slow, fast = GatedCarrier("slow", up=False), GatedCarrier("fast")
    dispatcher = rig.dispatcher([slow, fast])
    stop, task = await rig.run(dispatcher)
    try:
        await _slow_backlog_then_fast(rig, fast)
    finally:
        await rig.stop(dispatcher, stop, task)  # slow still down: its commands hold the commits

    back_slow, back_fast = GatedCarrier("slow"), GatedCarrier("fast")
    second = rig.dispatcher([back_slow, back_fast])
    stop, task = await rig.run(second)
    try:
        await until(lambda: len(back_slow.accepted) == SLOW, 60, "the slow carrier's backlog after the restart")
        await asyncio.sleep(1.0)  # time for anything wrongly resubmitted to show
    finally:
        await rig.stop(second, stop, task)
    assert set(back_slow.accepted.values()) == {1}
    if broker.keeps_commit_metadata:
        # The fast commands behind the held commits are named in the commit's metadata.
        assert not back_fast.tried
    else:
        # Tansu drops commit metadata: those behind a held commit go again (never lost).
        assert set(back_fast.accepted) <= {f"fast-{n}" for n in range(FAST)}


async def test_a_command_whose_outcome_was_written_before_a_crash_is_not_submitted_again(rig):
    done, pending = dispatch_command("fast", 1), dispatch_command("fast", 2)
    await rig.send([done, pending])
    await accepted_before_a_crash(rig, done)
    fast = GatedCarrier("fast")
    outcomes = FinishedOutcomes(rig.settings.topic(MESSAGE_EVENTS))
    dispatcher = rig.dispatcher([fast], finished_outcomes=outcomes)
    stop, task = await rig.run(dispatcher)
    try:
        await until(lambda: len(fast.accepted) == 1, 30, "the command without an outcome")
        await asyncio.sleep(1.0)  # time for the other to be (wrongly) submitted
    finally:
        await rig.stop(dispatcher, stop, task)
    assert set(fast.accepted) == {pending.command_id} and done.command_id not in fast.tried
    assert dispatcher.outcomes_found == 1

    # Without the look-up the same situation submits the finished command again: the duplicate
    # a kill -9 of carrier-adapter left before (make chaos).
    again = dispatch_command("fast", 3)
    await rig.send([again])
    await accepted_before_a_crash(rig, again)
    blind_carrier = GatedCarrier("fast")
    blind = rig.dispatcher([blind_carrier])
    stop, task = await rig.run(blind)
    try:
        await until(lambda: again.command_id in blind_carrier.accepted, 30, "the blind resubmission")
    finally:
        await rig.stop(blind, stop, task)
    assert blind.outcomes_found == 0


async def test_a_message_whose_validity_ends_while_its_carrier_is_down_expires(rig):
    """A carrier down past a message's validity: the message ends EXPIRED (DispatchExpired after
    its recorded attempts) instead of waiting for ever; one whose validity ended while it waited
    in a backlog is never submitted; the carrier's other messages still go once it is back."""
    slow = GatedCarrier("slow", up=False)
    dispatcher = rig.dispatcher([slow])
    soon, late, stale = dispatch_command("slow", 0), dispatch_command("slow", 1), dispatch_command("slow", 2)
    stop, task = await rig.run(dispatcher)
    try:
        # Validity counted from the send, not from before the group assigned the partition (a
        # join can take seconds on a loaded machine: `soon` then expired before any attempt).
        soon.expires_at.FromNanoseconds(time.time_ns() + 6_000_000_000)  # after a few attempts
        late.expires_at.FromSeconds(int(time.time()) + 3600)
        stale.expires_at.FromSeconds(int(time.time()) - 1)
        await rig.send([soon, late, stale])
        found = await events_of(rig, {soon.message_id, stale.message_id}, {"dispatch_expired"}, 30)
        assert "submit_attempt_failed" in found[soon.message_id], found  # its attempts are in its history
        assert found[stale.message_id] == ["dispatch_expired"]
        assert stale.command_id not in slow.tried
        slow.up.set()
        await until(lambda: late.command_id in slow.accepted, 30, "the message still valid")
        assert soon.command_id not in slow.accepted and stale.command_id not in slow.accepted
    finally:
        await rig.stop(dispatcher, stop, task)
