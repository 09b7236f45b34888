"""A connection that drops mid-message: what the client knows, and what a retry sends.

Our SmppClient against our SMSC simulator over real TCP on 127.0.0.1. The simulator cuts
the connection on a chosen submit_sm, either before taking it (it never arrived) or after
(it took it and the answer was lost: the in-doubt case no SMPP client can resolve).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from smsgw.domain.encoding import decode_gsm7, parse_concat_udh, plan_segments
from smsgw.smpp.client import SmppUnavailable
from tests.integration.test_smpp_client_simulator import eventually, reassemble, running

pytestmark = pytest.mark.timeout(60)

TEXT = ("The quick brown fox jumps over the lazy dog. " * 10)[:400]  # 3 GSM parts


def _udh_sequence(part) -> tuple[int, int]:
    parsed = parse_concat_udh(part.short_message)
    assert parsed is not None, part
    reference, _total, sequence, _rest = parsed
    return reference, sequence


async def _submit_after_reconnect(client, key: str, text: str = TEXT):
    """The dispatcher's retry: wait for the bind, submit the same message again."""
    await client.wait_bound(5)
    return await client.submit(source="SMSGW", destination="447700900123", text=text, key=key)


async def test_a_drop_before_the_smsc_took_a_part_resumes_without_resending_accepted_parts() -> None:
    assert plan_segments(TEXT).segments == 3
    async with running({"send_dlrs": False}) as (simulator, client, _inbox):
        simulator.drop_on_submit(after=1, accept=False)  # part 1 answered, part 2 lost on the way in
        with pytest.raises(SmppUnavailable) as raised:
            await client.submit(source="SMSGW", destination="447700900123", text=TEXT, key="m-1")
        assert raised.value.in_doubt, "a submit_sm was on the wire when the connection went"
        assert len(simulator.submitted) == 1

        outcome = await _submit_after_reconnect(client, "m-1")

        assert outcome.ok and len(outcome.message_ids) == 3
        # Each part reached the SMSC exactly once, under one reference: the handset gets one message.
        assert Counter(_udh_sequence(p)[1] for p in simulator.submitted) == {1: 1, 2: 1, 3: 1}
        _reference, payload = reassemble(simulator.submitted)
        assert decode_gsm7(payload) == TEXT
        assert outcome.message_ids[0] == simulator.submitted[0].message_id


async def test_an_in_doubt_part_is_the_only_one_sent_twice_and_keeps_its_place() -> None:
    async with running({"send_dlrs": False}) as (simulator, client, _inbox):
        simulator.drop_on_submit(after=1, accept=True)  # part 2 taken, its answer lost
        with pytest.raises(SmppUnavailable) as raised:
            await client.submit(source="SMSGW", destination="447700900123", text=TEXT, key="m-2")
        assert raised.value.in_doubt
        assert len(simulator.submitted) == 2

        outcome = await _submit_after_reconnect(client, "m-2")

        assert outcome.ok and len(outcome.message_ids) == 3
        counts = Counter(_udh_sequence(p) for p in simulator.submitted)
        references = {ref for ref, _seq in counts}
        assert len(references) == 1, "the resumed parts keep the first attempt's reference"
        # Part 1 once, part 3 once; only part 2, the one in doubt, twice — as the same segment
        # (same reference and number), which a handset drops as a repeat.
        assert sorted(counts.values()) == [1, 1, 2]
        assert counts[(references.pop(), 2)] == 2
        unique = {_udh_sequence(p): p for p in simulator.submitted}
        _reference, payload = reassemble(list(unique.values()))
        assert decode_gsm7(payload) == TEXT


async def test_without_a_key_a_retry_sends_the_whole_message_again() -> None:
    # The contrast that shows the key is what prevents the resend (and the test can fail).
    async with running({"send_dlrs": False}) as (simulator, client, _inbox):
        simulator.drop_on_submit(after=1, accept=False)
        with pytest.raises(SmppUnavailable):
            await client.submit(source="SMSGW", destination="447700900123", text=TEXT)
        await client.wait_bound(5)
        assert (await client.submit(source="SMSGW", destination="447700900123", text=TEXT)).ok
        assert len(simulator.submitted) == 4
        assert len({_udh_sequence(p)[0] for p in simulator.submitted}) == 2


async def test_not_bound_is_not_in_doubt() -> None:
    async with running({"send_dlrs": False}) as (simulator, client, _inbox):
        await simulator.stop()
        await eventually(lambda: not client.bound)
        with pytest.raises(SmppUnavailable) as raised:
            await client.submit(source="SMSGW", destination="447700900123", text="hi", key="m-3")
        assert not raised.value.in_doubt


async def test_a_drop_mid_window_resends_only_what_was_in_doubt() -> None:
    """Forty single-part messages with a window of 10; the connection drops with submits out.
    Nothing is lost, and a message reaches the SMSC twice only if its submit was in doubt."""
    async with running({"send_dlrs": False}, window=10) as (simulator, client, _inbox):
        destinations = [f"4477009{n:05d}" for n in range(40)]
        in_doubt: set[str] = set()

        async def send(destination: str) -> None:
            for _ in range(20):
                try:
                    assert (
                        await client.submit(
                            source="SMSGW", destination=destination, text=f"to {destination}", key=destination
                        )
                    ).ok
                    return
                except SmppUnavailable as exc:
                    if exc.in_doubt:
                        in_doubt.add(destination)
                    await client.wait_bound(5)
            raise AssertionError(f"{destination} not accepted after 20 attempts")

        simulator.drop_on_submit(after=15, accept=True)
        await asyncio.wait_for(asyncio.gather(*(send(d) for d in destinations)), 30)

        counts = Counter(s.destination for s in simulator.submitted)
        assert set(counts) == set(destinations), "every message reached the SMSC"
        twice = {d for d, n in counts.items() if n > 1}
        assert all(n <= 2 for n in counts.values())
        assert twice, "the dropping submit was taken by the SMSC and must come again"
        assert twice <= in_doubt, f"sent twice without being in doubt: {sorted(twice - in_doubt)}"
