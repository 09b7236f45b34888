"""Our SmppClient against our SMSC simulator, over real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from smsgw.domain.encoding import decode_gsm7, decode_ucs2, encode_gsm7, parse_concat_udh, plan_segments
from smsgw.smpp import constants as c
from smsgw.smpp.client import InboundDeliver, SmppBindRejected, SmppClient, SmppUnavailable
from smsgw.smpp.receipts import DELIVRD, normalize_message_id
from smsgw_dev.simulators.smsc import SmscSimulator, SubmittedMessage

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


LONG_MO = "".join(f"{n:03d} word " for n in range(40))  # 360 GSM characters: 3 parts of 153
LONG_UCS2_MO = "Grüße 😀 " * 20  # 180 UTF-16 units: 3 parts of 67


@pytest.mark.parametrize("long_message", ["udh", "udh16", "sar"])
@pytest.mark.parametrize("text", [LONG_MO, LONG_UCS2_MO], ids=["gsm7", "ucs2"])
async def test_long_mo_parts_out_of_order_say_where_they_belong(long_message: str, text: str) -> None:
    async with running() as (simulator, client, inbox):
        total = await simulator.send_mo(
            source="447700900123", destination="12345", text=text, long_message=long_message, parts=[3, 1, 2]
        )
        assert total == 3
        parts = [await inbox.get() for _ in range(3)]
        concats = [p.concat for p in parts if not p.is_receipt and p.concat is not None]
        assert len(concats) == 3
        assert [c.sequence for c in concats] == [3, 1, 2]
        assert {(c.total, c.reference) for c in concats} == {(3, concats[0].reference)}
        if long_message == "udh":
            assert concats[0].reference < 256
        by_number = sorted(parts, key=lambda p: p.concat.sequence if p.concat else 0)
        assert "".join(p.text or "" for p in by_number) == text
        # Each part's text is its own: no UDH octets leak into it.
        assert all(len(p.text or "") <= (67 if text is LONG_UCS2_MO else 153) for p in parts)


async def test_long_mo_as_message_payload_is_one_whole_deliver_sm() -> None:
    async with running() as (simulator, client, inbox):
        assert (
            await simulator.send_mo(
                source="447700900123", destination="12345", text=LONG_UCS2_MO, long_message="payload"
            )
            == 1
        )
        whole = await inbox.get()
        assert whole.concat is None and whole.text == LONG_UCS2_MO
        await eventually(lambda: len(simulator.delivered) == 1)
        assert simulator.delivered[0].short_message == b"" and c.TAG_MESSAGE_PAYLOAD in simulator.delivered[0].tlvs


async def test_mo_parts_can_repeat_or_be_left_out_and_bad_requests_are_refused() -> None:
    async with running() as (simulator, client, inbox):
        await simulator.send_mo(source="447700900123", destination="12345", text=LONG_MO, parts=[2, 2])
        repeated = [await inbox.get(), await inbox.get()]
        assert [p.concat.sequence for p in repeated if p.concat] == [2, 2] and repeated[0].text == repeated[1].text
        with pytest.raises(ValueError, match=r"parts: \[4\] given; the message has parts 1..3"):
            await simulator.send_mo(source="447700900123", destination="12345", text=LONG_MO, parts=[1, 4])
        with pytest.raises(ValueError, match="long_message must be one of"):
            await simulator.send_mo(source="447700900123", destination="12345", text=LONG_MO, long_message="x")


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


# --- long messages per carrier: "sar" and "payload" ------------------------------------------------

LONG_GSM = ("The quick brown fox jumps over the lazy dog. " * 10)[:400]  # 3 parts
LONG_UCS2 = "Привет, мир! 👋🏽 " * 5  # 2 parts


def reassemble_sar(parts: list[SubmittedMessage]) -> tuple[int, bytes]:
    """(reference, joined text octets) after checking the SAR TLVs form one complete message."""
    assert all(p.long_message == "sar" and p.concat is not None for p in parts)
    assert all(not p.esm_class & c.ESM_CLASS_UDHI and parse_concat_udh(p.short_message) is None for p in parts)
    concats = [p.concat for p in parts if p.concat is not None]
    assert len({ref for ref, _total, _seq in concats}) == 1
    assert [total for _ref, total, _seq in concats] == [len(parts)] * len(parts)
    assert [seq for _ref, _total, seq in concats] == list(range(1, len(parts) + 1))  # sent in order
    return concats[0][0], b"".join(p.user_data for p in parts)


@pytest.mark.parametrize(
    ("text", "decode"),
    [(LONG_GSM, decode_gsm7), (LONG_UCS2, decode_ucs2)],
    ids=["gsm7-3-parts", "ucs2-2-parts"],
)
async def test_sar_long_message_reassembles(text: str, decode: Callable[[bytes], str]) -> None:
    async with running(long_message="sar") as (simulator, client, inbox):
        outcome = await client.submit(source="SMSGW", destination="447700900123", text=text)
        assert outcome.ok and outcome.segments == plan_segments(text).segments == len(simulator.submitted)
        assert outcome.message_ids == [s.message_id for s in simulator.submitted]
        _reference, payload = reassemble_sar(simulator.submitted)
        assert decode(payload) == text
        keys = {(await inbox.get()).message_id_key for _ in range(outcome.segments)}
        assert keys == {normalize_message_id(i) for i in outcome.message_ids}


async def test_sar_references_differ_between_messages() -> None:
    async with running(long_message="sar") as (simulator, client, _inbox):
        await client.submit(source="SMSGW", destination="447700900123", text="s" * 200)
        await client.submit(source="SMSGW", destination="447700900123", text="s" * 200)
        first, _ = reassemble_sar(simulator.submitted[:2])
        second, _ = reassemble_sar(simulator.submitted[2:])
        assert first != second


@pytest.mark.parametrize(
    ("text", "decode"),
    [(LONG_GSM, decode_gsm7), (LONG_UCS2, decode_ucs2)],
    ids=["gsm7", "ucs2"],
)
async def test_payload_long_message_is_one_submit(text: str, decode: Callable[[bytes], str]) -> None:
    async with running(long_message="payload") as (simulator, client, inbox):
        outcome = await client.submit(source="SMSGW", destination="447700900123", text=text)
        # The handset still gets (and the carrier bills) every part; the SMSC splits.
        assert outcome.ok and outcome.segments == plan_segments(text).segments > 1
        [sent] = simulator.submitted
        assert outcome.message_ids == [sent.message_id]
        assert sent.long_message == "payload" and sent.concat is None and sent.esm_class == 0
        assert sent.tlvs[c.TAG_MESSAGE_PAYLOAD] == sent.short_message  # recorded from message_payload
        assert decode(sent.user_data) == text
        receipt = await inbox.get()
        assert receipt.message_id_key == normalize_message_id(sent.message_id)


@pytest.mark.parametrize("mode", ["udh", "sar", "payload"])
async def test_short_text_is_a_plain_submit_in_every_mode(mode: str) -> None:
    async with running(long_message=mode) as (simulator, client, _inbox):
        assert (await client.submit(source="SMSGW", destination="447700900123", text="short")).ok
        [sent] = simulator.submitted
        assert (sent.long_message, sent.esm_class, sent.tlvs, sent.short_message) == ("single", 0, {}, b"short")


# --- bind modes: a transmitter/receiver pair ----------------------------------------------------------------


async def test_pair_binds_a_transmitter_and_a_receiver() -> None:
    async with running(bind_mode="pair") as (simulator, client, inbox):
        assert simulator.binds == [("smsgw", "receiver"), ("smsgw", "transmitter")]
        assert client.bound and client.stats().bound == {"transmitter": True, "receiver": True}
        outcome = await client.submit(source="SMSGW", destination="447700900123", text="x" * 200)
        assert outcome.ok and len(simulator.submitted) == 2
        # Receipts and MO come in on the receiver.
        keys = {(await inbox.get()).message_id_key for _ in range(2)}
        assert keys == {normalize_message_id(i) for i in outcome.message_ids}
        await simulator.send_mo(source="447700900123", destination="12345", text="STOP")
        mo = await inbox.get()
        assert not mo.is_receipt and mo.text == "STOP"


async def test_pair_sessions_reconnect_independently() -> None:
    async with running({"dlr_delay": 0.3}, bind_mode="pair") as (simulator, client, inbox):
        outcome = await client.submit(source="SMSGW", destination="447700900123", text="before")
        # The receiver goes: submits carry on over the transmitter, and the receipt waits for the rebind.
        await simulator.drop_connections(kind="receiver")
        await eventually(lambda: not client.stats().bound["receiver"])
        assert client.stats().bound["transmitter"] and not client.bound
        assert (await client.submit(source="SMSGW", destination="447700900124", text="during")).ok
        receipts = {(await inbox.get(timeout=10)).message_id_key for _ in range(2)}
        assert normalize_message_id(outcome.message_ids[0]) in receipts
        await eventually(lambda: simulator.binds == [("smsgw", "receiver"), ("smsgw", "transmitter")])
        # The transmitter goes: the receiver stays up and still takes MO.
        await simulator.drop_connections(kind="transmitter")
        await eventually(lambda: not client.stats().bound["transmitter"])
        assert client.stats().bound["receiver"]
        await simulator.send_mo(source="447700900123", destination="12345", text="still listening")
        assert (await inbox.get()).text == "still listening"
        await client.wait_bound(5)
        assert (await client.submit(source="SMSGW", destination="447700900125", text="after")).ok
        assert client.stats().reconnects_total == 2


async def test_pair_close_unbinds_both() -> None:
    async with running(bind_mode="pair") as (simulator, client, _inbox):
        assert simulator.bound_count == 2
        await client.close()
        await eventually(lambda: simulator.bound_count == 0)
        assert client.stats().bound == {"transmitter": False, "receiver": False}


async def test_pair_keepalive_keeps_both_binds() -> None:
    async with running(bind_mode="pair", enquire_link_interval=0.05) as (simulator, client, _inbox):
        await asyncio.sleep(0.4)
        assert client.bound and simulator.bound_count == 2


async def test_pair_wrong_password_is_rejected_at_start() -> None:
    simulator = SmscSimulator()
    await simulator.start()
    client = SmppClient(host="127.0.0.1", port=simulator.port, system_id="smsgw", password="wrong", bind_mode="pair")
    try:
        with pytest.raises(SmppBindRejected) as info:
            await asyncio.wait_for(client.start(), 5)
        assert info.value.command_status == c.ESME_RINVPASWD
        assert not client.bound
    finally:
        await client.close()
        await simulator.stop()


async def test_simulator_refuses_malformed_long_messages() -> None:
    from smsgw.smpp.framing import PduStream
    from smsgw.smpp.pdu import BindTransmitter, SubmitSm, tlv_u8, tlv_u16

    simulator = SmscSimulator(send_dlrs=False)
    await simulator.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", simulator.port)
    stream = PduStream(reader, writer)
    try:
        await stream.send(BindTransmitter(system_id="smsgw", password="secret", sequence_number=1))
        assert (await asyncio.wait_for(stream.read(), 5)).command_status == c.ESME_ROK
        sar = {c.TAG_SAR_MSG_REF_NUM: tlv_u16(7), c.TAG_SAR_TOTAL_SEGMENTS: tlv_u8(2)}
        malformed = [
            SubmitSm(destination_addr="447700900123", short_message=b"a", tlvs=sar),  # seqnum missing
            SubmitSm(
                destination_addr="447700900123", short_message=b"a", tlvs={**sar, c.TAG_SAR_SEGMENT_SEQNUM: tlv_u8(3)}
            ),  # 3 of 2
            SubmitSm(
                destination_addr="447700900123", short_message=b"a", tlvs={c.TAG_MESSAGE_PAYLOAD: b"b"}
            ),  # both bodies
        ]
        for sequence, pdu in enumerate(malformed, start=2):
            pdu.sequence_number = sequence
            await stream.send(pdu)
            resp = await asyncio.wait_for(stream.read(), 5)
            assert (resp.sequence_number, resp.command_status) == (sequence, c.ESME_RINVOPTPARAMVAL)
        assert simulator.submitted == []
    finally:
        stream.abort()
        await simulator.stop()
