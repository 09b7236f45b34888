"""Our SmppClient against our SMSC simulator, over real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from smsgw.domain.encoding import decode_gsm7, decode_ucs2, encode_gsm7, parse_concat_udh, plan_segments
from smsgw.simulators.smsc import SmscSimulator, SubmittedMessage
from smsgw.smpp import constants as c
from smsgw.smpp.client import InboundDeliver, SmppBindRejected, SmppClient, SmppUnavailable
from smsgw.smpp.receipts import DELIVRD, normalize_message_id

pytestmark = pytest.mark.timeout(60)


class Inbox:
    """Collects on_deliver calls; optionally fails the first N to test redelivery."""

    def __init__(self, fail_first: int = 0):
        self.queue: asyncio.Queue[InboundDeliver] = asyncio.Queue()
        self.calls = 0
        self._fail_first = fail_first

    async def __call__(self, inbound: InboundDeliver) -> None:
        self.calls += 1
        if self.calls <= self._fail_first:
            raise RuntimeError("simulated handler failure")
        await self.queue.put(inbound)

    async def get(self, timeout: float = 5.0) -> InboundDeliver:
        return await asyncio.wait_for(self.queue.get(), timeout)


@asynccontextmanager
async def running(
    sim_kwargs: dict[str, Any] | None = None, inbox: Inbox | None = None, **client_kwargs: Any
) -> AsyncIterator[tuple[SmscSimulator, SmppClient, Inbox]]:
    simulator = SmscSimulator(**{"dlr_delay": 0.05, **(sim_kwargs or {})})
    await simulator.start()
    inbox = inbox or Inbox()
    client = SmppClient(
        host="127.0.0.1",
        port=simulator.port,
        system_id="smsgw",
        password="secret",
        on_deliver=inbox,
        reconnect_min=0.05,
        reconnect_max=0.5,
        throttle_min=0.02,
        throttle_max=0.2,
        response_timeout=5.0,
        **client_kwargs,
    )
    try:
        await asyncio.wait_for(client.start(), 5)
        yield simulator, client, inbox
    finally:
        await client.close()
        await simulator.stop()


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition the other side of the socket makes true (bounded in time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def reassemble(parts: list[SubmittedMessage]) -> tuple[int, bytes]:
    """(reference, joined payload) after checking the UDHs form one complete message."""
    headers = []
    for part in parts:
        assert part.esm_class & c.ESM_CLASS_UDHI
        parsed = parse_concat_udh(part.short_message)
        assert parsed is not None
        headers.append(parsed)
    references = {ref for ref, _total, _seq, _rest in headers}
    assert len(references) == 1
    assert [total for _ref, total, _seq, _rest in headers] == [len(parts)] * len(parts)
    assert sorted(seq for _ref, _total, seq, _rest in headers) == list(range(1, len(parts) + 1))
    ordered = sorted(headers, key=lambda h: h[2])
    return references.pop(), b"".join(rest for _ref, _total, _seq, rest in ordered)


async def test_single_gsm_message() -> None:
    async with running() as (simulator, client, _inbox):
        outcome = await client.submit(source="SMSGW", destination="+447700900123", text="Hello @ £5 {ok}")
        assert outcome.ok and outcome.command_status == c.ESME_ROK
        assert outcome.segments == 1
        assert outcome.message_ids == [simulator.submitted[0].message_id]
        [sent] = simulator.submitted
        assert (sent.destination, sent.source) == ("447700900123", "SMSGW")
        assert (sent.data_coding, sent.esm_class) == (0, 0)
        assert sent.short_message == encode_gsm7("Hello @ £5 {ok}")
        assert sent.registered_delivery == 1


async def test_three_part_gsm_message_reassembles() -> None:
    text = ("The quick brown fox jumps over the lazy dog. " * 10)[:400]
    assert plan_segments(text).segments == 3
    async with running() as (simulator, client, _inbox):
        outcome = await client.submit(source="SMSGW", destination="447700900123", text=text)
        assert outcome.ok and outcome.segments == 3 and len(outcome.message_ids) == 3
        assert len(set(outcome.message_ids)) == 3
        assert all(part.data_coding == 0 for part in simulator.submitted)
        _reference, payload = reassemble(simulator.submitted)
        assert decode_gsm7(payload) == text


async def test_multipart_messages_get_distinct_references() -> None:
    text = "x" * 200
    async with running() as (simulator, client, _inbox):
        await client.submit(source="SMSGW", destination="447700900123", text=text)
        await client.submit(source="SMSGW", destination="447700900123", text=text)
        first, _ = reassemble(simulator.submitted[:2])
        second, _ = reassemble(simulator.submitted[2:])
        assert first != second


async def test_two_part_ucs2_with_emoji() -> None:
    text = "Привет, мир! 👋🏽 " * 5
    plan = plan_segments(text)
    assert plan.segments == 2 and plan.encoding.value == "UCS2"
    async with running() as (simulator, client, _inbox):
        outcome = await client.submit(source="SMSGW", destination="447700900123", text=text)
        assert outcome.ok and outcome.segments == 2
        assert all(part.data_coding == 8 for part in simulator.submitted)
        _reference, payload = reassemble(simulator.submitted)
        assert decode_ucs2(payload) == text


@pytest.mark.parametrize("hex_ids", [False, True], ids=["decimal", "hex"])
@pytest.mark.parametrize("dlr_format", ["text", "tlv", "both"])
async def test_receipt_id_matches_submit_id(hex_ids: bool, dlr_format: str) -> None:
    async with running({"hex_ids": hex_ids, "dlr_format": dlr_format}) as (_simulator, client, inbox):
        outcome = await client.submit(source="SMSGW", destination="447700900123", text="receipt please")
        assert outcome.ok
        receipt = await inbox.get()
        assert receipt.is_receipt
        assert receipt.state == DELIVRD
        assert receipt.error_code == "000"
        assert receipt.message_id_key == normalize_message_id(outcome.message_ids[0])
        assert (receipt.source, receipt.destination) == ("447700900123", "SMSGW")
        if hex_ids and dlr_format == "text":
            # The text form carries the decimal spelling; only normalisation matches them.
            assert receipt.receipted_message_id != outcome.message_ids[0]


async def test_receipt_for_every_part() -> None:
    async with running() as (_simulator, client, inbox):
        outcome = await client.submit(source="SMSGW", destination="447700900123", text="y" * 320)
        assert outcome.segments == 3
        keys = {(await inbox.get()).message_id_key for _ in range(3)}
        assert keys == {normalize_message_id(i) for i in outcome.message_ids}


async def test_no_receipt_when_not_requested() -> None:
    async with running() as (simulator, client, inbox):
        await client.submit(source="SMSGW", destination="447700900123", text="quiet", registered_delivery=False)
        await asyncio.sleep(0.3)
        assert inbox.queue.empty() and simulator.submitted[0].registered_delivery == 0


async def test_failed_handler_gets_the_receipt_redelivered() -> None:
    # deliver_sm_resp only after on_deliver returned: an exception means no ACK, so the SMSC resends.
    inbox = Inbox(fail_first=1)
    async with running({"dlr_delay": 0.01}, inbox=inbox) as (simulator, client, _inbox):
        outcome = await client.submit(source="SMSGW", destination="447700900123", text="retry me")
        receipt = await inbox.get()
        assert receipt.message_id_key == normalize_message_id(outcome.message_ids[0])
        assert inbox.calls == 2
        await eventually(lambda: len(simulator.delivered) == 1)


async def test_throttling_loses_nothing() -> None:
    async with running({"throttle_every": 3, "send_dlrs": False}, window=5) as (simulator, client, _inbox):
        destinations = [f"4477009{n:05d}" for n in range(20)]
        outcomes = await asyncio.gather(
            *(client.submit(source="SMSGW", destination=d, text=f"msg {d}") for d in destinations)
        )
        assert all(o.ok for o in outcomes)
        assert simulator.throttled >= 6
        assert sorted(s.destination for s in simulator.submitted) == sorted(destinations)
        assert len({o.message_ids[0] for o in outcomes}) == 20


async def test_fail_pattern_gives_failed_outcome() -> None:
    async with running({"fail_pattern": r"^4499"}) as (simulator, client, _inbox):
        outcome = await client.submit(source="SMSGW", destination="449900000001", text="nope")
        assert not outcome.ok
        assert outcome.command_status == c.ESME_RINVDSTADR
        assert outcome.message_ids == []
        assert simulator.submitted == []
        assert (await client.submit(source="SMSGW", destination="447700900123", text="yes")).ok


async def test_fail_on_multipart_stops_sending() -> None:
    async with running({"fail_pattern": r"^4499"}) as (simulator, client, _inbox):
        outcome = await client.submit(source="SMSGW", destination="449900000001", text="z" * 400)
        assert outcome.command_status == c.ESME_RINVDSTADR and outcome.segments == 3
        assert simulator.submitted == []


async def _submit_with_retry(
    client: SmppClient, destination: str, failures: list[str], attempts: int = 20
) -> list[str]:
    for _ in range(attempts):
        try:
            outcome = await client.submit(source="SMSGW", destination=destination, text=f"to {destination}")
        except SmppUnavailable:
            failures.append(destination)
            await client.wait_bound(5)
            continue
        assert outcome.ok
        return outcome.message_ids
    raise AssertionError(f"{destination} not accepted after {attempts} attempts")


async def test_reconnects_after_connections_drop() -> None:
    async with running({"send_dlrs": False}) as (simulator, client, _inbox):
        destinations = [f"4477009{n:05d}" for n in range(40)]
        results: list[list[str]] = []
        unavailable: list[str] = []

        async def sender() -> None:
            for destination in destinations:
                results.append(await _submit_with_retry(client, destination, unavailable))
                await asyncio.sleep(0.005)  # a steady stream, so the drop lands mid-way

        task = asyncio.create_task(sender())
        await eventually(lambda: len(simulator.submitted) >= 10)
        await simulator.drop_connections()
        assert simulator.bound_count == 0
        await asyncio.wait_for(task, 20)

        assert len(results) == 40
        assert unavailable, "the drop should have made at least one submit fail over"
        assert len(simulator.submitted) < 40 + len(unavailable) + 1
        await eventually(lambda: simulator.bound_count == 1)
        assert client.bound
        # Every message got through at least once (a drop mid-request may duplicate one).
        assert set(destinations) <= {s.destination for s in simulator.submitted}
        assert (await client.submit(source="SMSGW", destination="447700900999", text="after")).ok


async def test_receipt_survives_a_drop() -> None:
    # The receipt is due while the client is disconnected; the SMSC keeps it until the rebind.
    async with running({"dlr_delay": 0.3}) as (simulator, client, inbox):
        outcome = await client.submit(source="SMSGW", destination="447700900123", text="hold it")
        await simulator.drop_connections()
        receipt = await inbox.get(timeout=10)
        assert receipt.message_id_key == normalize_message_id(outcome.message_ids[0])


async def test_mo_delivered() -> None:
    async with running() as (simulator, client, inbox):
        await simulator.send_mo(source="447700900123", destination="12345", text="STOP 👋")
        mo = await inbox.get()
        assert not mo.is_receipt
        assert (mo.source, mo.destination, mo.text) == ("447700900123", "12345", "STOP 👋")
        assert mo.receipted_message_id is None
        await eventually(lambda: len(simulator.delivered) == 1)


async def test_long_mo_arrives_as_parts() -> None:
    text = "a" * 200
    async with running() as (simulator, client, inbox):
        await simulator.send_mo(source="447700900123", destination="12345", text=text)
        parts = [await inbox.get(), await inbox.get()]
        assert [p.raw["concat"]["sequence"] for p in parts] == [1, 2]
        assert "".join(p.text or "" for p in parts) == text


async def test_keepalive_keeps_the_bind() -> None:
    async with running(enquire_link_interval=0.05) as (simulator, client, _inbox):
        await asyncio.sleep(0.4)
        assert client.bound and simulator.bound_count == 1
        assert (await client.submit(source="SMSGW", destination="447700900123", text="still here")).ok


async def test_wrong_password_is_rejected_at_start() -> None:
    simulator = SmscSimulator()
    await simulator.start()
    client = SmppClient(host="127.0.0.1", port=simulator.port, system_id="smsgw", password="wrong")
    try:
        with pytest.raises(SmppBindRejected) as info:
            await asyncio.wait_for(client.start(), 5)
        assert info.value.command_status == c.ESME_RINVPASWD
        assert not client.bound
    finally:
        await client.close()
        await simulator.stop()


async def test_submit_when_not_bound_is_unavailable() -> None:
    client = SmppClient(host="127.0.0.1", port=9, system_id="smsgw", password="secret")
    with pytest.raises(SmppUnavailable):
        await client.submit(source="SMSGW", destination="447700900123", text="x")


async def test_close_unbinds_and_later_submits_are_unavailable() -> None:
    async with running() as (simulator, client, _inbox):
        await client.close()
        await eventually(lambda: simulator.bound_count == 0)
        assert not client.bound
        with pytest.raises(SmppUnavailable):
            await client.submit(source="SMSGW", destination="447700900123", text="x")


