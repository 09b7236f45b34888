"""Flow control against the simulator: message order under throttling, the TPS limit, and stats()."""

from __future__ import annotations

import asyncio

import pytest

from smsgw.domain.encoding import decode_gsm7
from smsgw.smpp.client import SmppClientStats
from tests.integration.test_smpp_client_simulator import eventually, reassemble, running

pytestmark = pytest.mark.timeout(60)


async def test_throttling_keeps_the_order_of_messages_to_one_handset() -> None:
    # Every 3rd submit_sm is refused ESME_RTHROTTLED; the bind pauses and the same part goes again.
    async with running({"throttle_every": 3, "send_dlrs": False}) as (simulator, client, _inbox):
        texts = [f"message {n}" for n in range(10)]
        outcomes = await asyncio.gather(
            *(client.submit(source="SMSGW", destination="447700900123", text=t) for t in texts)
        )
        assert all(o.ok for o in outcomes)
        assert simulator.throttled >= 4  # 14 submit_sm for 10 messages: 3, 6, 9, 12 refused
        assert [decode_gsm7(s.short_message) for s in simulator.submitted] == texts
        assert [o.message_ids[0] for o in outcomes] == [s.message_id for s in simulator.submitted]


async def test_throttling_keeps_multipart_messages_whole_and_in_order() -> None:
    async with running({"throttle_every": 3, "send_dlrs": False}) as (simulator, client, _inbox):
        texts = [f"{n}" * 200 for n in range(5)]  # 2 parts each
        outcomes = await asyncio.gather(
            *(client.submit(source="SMSGW", destination="447700900123", text=t) for t in texts)
        )
        assert all(o.ok and o.segments == 2 for o in outcomes)
        assert simulator.throttled >= 3
        # Parts of one message are adjacent and in sequence; messages in call order.
        for index, text in enumerate(texts):
            _reference, payload = reassemble(simulator.submitted[2 * index : 2 * index + 2])
            assert decode_gsm7(payload) == text
            assert [s.concat[2] for s in simulator.submitted[2 * index : 2 * index + 2] if s.concat] == [1, 2]


async def test_window_of_one_keeps_the_global_order_under_throttling() -> None:
    async with running({"throttle_every": 3, "send_dlrs": False}, window=1) as (simulator, client, _inbox):
        destinations = [f"4477009{n:05d}" for n in range(10)]
        outcomes = await asyncio.gather(
            *(client.submit(source="SMSGW", destination=d, text=f"to {d}") for d in destinations)
        )
        assert all(o.ok for o in outcomes) and simulator.throttled >= 4
        assert [s.destination for s in simulator.submitted] == destinations


async def test_other_handsets_keep_flowing_while_one_is_throttled() -> None:
    # The per-destination order does not serialise the bind: distinct handsets share the window.
    async with running({"throttle_every": 3, "send_dlrs": False}, window=5) as (simulator, client, _inbox):
        destinations = [f"4477009{n:05d}" for n in range(20)]
        outcomes = await asyncio.gather(
            *(client.submit(source="SMSGW", destination=d, text=f"to {d}") for d in destinations)
        )
        assert all(o.ok for o in outcomes)
        assert sorted(s.destination for s in simulator.submitted) == sorted(destinations)


def max_in_any_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


async def test_max_tps_spaces_every_part() -> None:
    # 4 messages x 3 parts = 12 submit_sm at 10/s: 11 gaps of 100 ms.
    async with running({"send_dlrs": False}, max_tps=10) as (simulator, client, _inbox):
        loop = asyncio.get_running_loop()
        start = loop.time()
        outcomes = await asyncio.gather(
            *(client.submit(source="SMSGW", destination=f"44770090012{n}", text="t" * 400) for n in range(4))
        )
        elapsed = loop.time() - start
        assert all(o.ok and o.segments == 3 for o in outcomes)
        assert len(simulator.submitted) == 12
        assert elapsed >= 11 / 10 * 0.95
        # A one-token bucket lets at most rate * T + 1 through in any window of T seconds.
        assert max_in_any_second([s.received_at for s in simulator.submitted]) <= 10 + 1
        gaps = [b.received_at - a.received_at for a, b in zip(simulator.submitted, simulator.submitted[1:])]
        assert sum(gaps) / len(gaps) >= 0.1 * 0.95
        stats = client.stats()
        assert stats.submits_total == 12 and stats.current_tps == pytest.approx(1.2)


async def test_max_tps_counts_retries_after_throttling() -> None:
    async with running({"throttle_every": 2, "send_dlrs": False}, max_tps=20) as (simulator, client, _inbox):
        loop = asyncio.get_running_loop()
        start = loop.time()
        outcomes = await asyncio.gather(
            *(client.submit(source="SMSGW", destination=f"4477009001{n:02d}", text="r") for n in range(10))
        )
        assert all(o.ok for o in outcomes)
        sent = len(simulator.submitted) + simulator.throttled  # 10 accepted + ~10 refused
        assert sent == client.stats().submits_total
        assert loop.time() - start >= (sent - 1) / 20 * 0.95


async def test_stats_count_submits_failures_throttling_receipts_and_reconnects() -> None:
    sim = {"throttle_every": 4, "fail_pattern": r"^4499", "dlr_delay": 0.01}
    async with running(sim) as (simulator, client, inbox):
        fresh = client.stats()
        assert isinstance(fresh, SmppClientStats)
        assert fresh.bound == {"transceiver": True} and fresh.window_size == 10
        assert (fresh.submits_total, fresh.submit_failures_total, fresh.throttled_total) == (0, 0, 0)
        assert (fresh.reconnects_total, fresh.receipts_total, fresh.mo_total, fresh.window_in_use) == (0, 0, 0, 0)
        with pytest.raises(AttributeError):
            fresh.submits_total = 1  # type: ignore[misc]  # frozen

        for n in range(6):
            assert (await client.submit(source="SMSGW", destination=f"4477009001{n:02d}", text="ok")).ok
        assert not (await client.submit(source="SMSGW", destination="449900000001", text="no")).ok
        for _ in range(6):
            assert (await inbox.get()).is_receipt
        await simulator.send_mo(source="447700900123", destination="12345", text="hi")
        assert not (await inbox.get()).is_receipt
        await simulator.drop_connections()
        await eventually(lambda: client.stats().reconnects_total == 1)
        await client.wait_bound(5)

        stats = client.stats()
        assert stats.submits_total == 6 + 1 + simulator.throttled
        assert stats.throttled_total == simulator.throttled >= 1
        assert stats.submit_failures_total == 1
        assert (stats.receipts_total, stats.mo_total) == (6, 1)
        assert stats.reconnects_total == 1 and stats.bound == {"transceiver": True}
        assert stats.window_in_use == 0
        assert stats.current_tps == pytest.approx(stats.submits_total / 10)
