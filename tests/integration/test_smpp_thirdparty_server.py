"""Our SmppClient against an SMPP server we did not write: smpp34 (PyPI, Rust core), over real TCP.

The simulator shares our codec and session layer, so client and simulator
could agree on a mistake. smpp34's server decodes every PDU with its own
codec: if it sees the binds, data_coding, esm_class, UDH and TLVs we meant,
and our client reads the ids and receipts it sends, the wire format is right.

Known limits of smpp34 1.5.0 (docs/smpp.md): no password check (any password
binds), the port must be given (it cannot report the one it took for port 0),
and a bind_receiver session answers the ESME's deliver_sm_resp with
generic_nack ESME_RINVCMDID, so receipts can only be cross-checked over a
transceiver (the pair case is kept below as a strict xfail).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import smpp34
from smpp34 import _smpp34 as smpp34_tags  # the tag constants, typed there (smpp34 re-exports them untyped)

from smsgw.domain.encoding import decode_gsm7, decode_ucs2, encode_gsm7, parse_concat_udh, plan_segments
from smsgw.smpp import constants as c
from smsgw.smpp.client import InboundDeliver, SmppClient
from smsgw.smpp.receipts import DELIVRD, format_receipt_text, normalize_message_id

pytestmark = pytest.mark.timeout(60)


@dataclass
class ThirdPartySmsc:
    """smpp34.Server plus a task that records what it sees and accepts every submit_sm."""

    server: Any
    port: int
    binds: list[Any] = field(default_factory=list)  # smpp34.Esme, one per bound session
    submits: list[Any] = field(default_factory=list)  # smpp34.SubmitSmEvent, in arrival order
    message_ids: list[str] = field(default_factory=list)
    unbound: list[str] = field(default_factory=list)  # session ids

    async def pump(self) -> None:
        while True:
            event = await self.server.next()
            if isinstance(event, smpp34.SubmitSmEvent):
                self.submits.append(event)
                # Hex ids with letters, as many SMSCs answer.
                message_id = f"{0xB0000000 + len(self.submits):08X}"
                self.message_ids.append(message_id)
                event.accept(message_id)
            elif isinstance(event, smpp34.Esme):
                self.binds.append(event)
            elif isinstance(event, smpp34.Unbound):
                self.unbound.append(event.session_id)

    def session(self, *, can_receive: bool) -> Any:
        return next(esme for esme in reversed(self.binds) if esme.can_receive == can_receive)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@asynccontextmanager
async def thirdparty_smsc() -> AsyncIterator[ThirdPartySmsc]:
    # smpp34 needs a concrete port; another process could take it between probe
    # and bind, so try a few.
    for attempt in range(5):
        port = free_port()
        server = smpp34.Server("127.0.0.1", port, system_id="SMPP34")
        try:
            await server.start()
            break
        except Exception:
            if attempt == 4:
                raise
    smsc = ThirdPartySmsc(server=server, port=port)
    pump = asyncio.create_task(smsc.pump())
    try:
        yield smsc
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        await server.stop()


class Inbox:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[InboundDeliver] = asyncio.Queue()

    async def __call__(self, inbound: InboundDeliver) -> None:
        await self.queue.put(inbound)

    async def get(self, timeout: float = 5.0) -> InboundDeliver:
        return await asyncio.wait_for(self.queue.get(), timeout)


async def eventually(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@asynccontextmanager
async def client_against(smsc: ThirdPartySmsc, **kwargs: Any) -> AsyncIterator[tuple[SmppClient, Inbox]]:
    inbox = Inbox()
    expected_binds = len(smsc.binds) + (2 if kwargs.get("bind_mode") == "pair" else 1)
    client = SmppClient(
        host="127.0.0.1",
        port=smsc.port,
        system_id="smsgw",
        password="secret",
        on_deliver=inbox,
        reconnect_min=0.05,
        reconnect_max=0.2,
        **{"response_timeout": 5.0, **kwargs},
    )
    try:
        await asyncio.wait_for(client.start(), 5)
        # Our bind_resp came from their core; their Python side hears of the session a moment later.
        await eventually(lambda: len(smsc.binds) >= expected_binds)
        yield client, inbox
    finally:
        await client.close()


LONG_GSM = ("The quick brown fox jumps over the lazy dog. " * 10)[:400]


async def test_bind_single_and_three_part_gsm_messages() -> None:
    async with thirdparty_smsc() as smsc, client_against(smsc) as (client, _inbox):
        [bind] = smsc.binds
        assert (bind.system_id, bind.can_receive) == ("smsgw", True)  # a transceiver

        single = await client.submit(source="SMSGW", destination="+447700900123", text="Hello @ £5 {ok}")
        assert single.ok and single.message_ids == [smsc.message_ids[0]]
        [sent] = smsc.submits
        assert (sent.destination_addr, sent.dest_addr_ton, sent.dest_addr_npi) == ("447700900123", 1, 1)
        assert (sent.source_addr, sent.source_addr_ton, sent.source_addr_npi) == ("SMSGW", 5, 0)
        assert (sent.data_coding, sent.esm_class, sent.registered_delivery) == (0, 0, 1)
        assert sent.short_message == encode_gsm7("Hello @ £5 {ok}") and sent.tlvs == []

        assert plan_segments(LONG_GSM).segments == 3
        multi = await client.submit(source="SMSGW", destination="+447700900123", text=LONG_GSM)
        assert multi.ok and multi.segments == 3 and multi.message_ids == smsc.message_ids[1:4]
        parts = smsc.submits[1:]
        assert [(p.data_coding, p.esm_class) for p in parts] == [(0, c.ESM_CLASS_UDHI)] * 3
        udhs = [parse_concat_udh(p.short_message) for p in parts]
        assert all(u is not None for u in udhs)
        assert len({u[0] for u in udhs if u}) == 1  # one reference
        assert [(u[1], u[2]) for u in udhs if u] == [(3, 1), (3, 2), (3, 3)]
        assert [p.short_message[:3] for p in parts] == [b"\x05\x00\x03"] * 3  # 8-bit concatenation IE
        assert decode_gsm7(b"".join(u[3] for u in udhs if u)) == LONG_GSM


async def test_ucs2_and_sar_and_payload_forms() -> None:
    text = "Привет, мир! 👋🏽 " * 5  # 2 UCS-2 parts
    async with thirdparty_smsc() as smsc:
        async with client_against(smsc, long_message="sar") as (client, _inbox):
            outcome = await client.submit(source="SMSGW", destination="447700900123", text=text)
            assert outcome.ok and outcome.segments == 2
            parts = smsc.submits[:2]
            assert [(p.data_coding, p.esm_class) for p in parts] == [(8, 0), (8, 0)]
            tlvs = [{t.tag: t.value for t in p.tlvs} for p in parts]
            assert [t[smpp34_tags.TLV_SAR_SEGMENT_SEQNUM] for t in tlvs] == [b"\x01", b"\x02"]
            assert {t[smpp34_tags.TLV_SAR_TOTAL_SEGMENTS] for t in tlvs} == {b"\x02"}
            assert len({t[smpp34_tags.TLV_SAR_MSG_REF_NUM] for t in tlvs}) == 1
            assert decode_ucs2(b"".join(p.short_message for p in parts)) == text
        async with client_against(smsc, long_message="payload") as (client, _inbox):
            outcome = await client.submit(source="SMSGW", destination="447700900123", text=text)
            assert outcome.ok and outcome.segments == 2 and outcome.message_ids == [smsc.message_ids[2]]
            payload = smsc.submits[2]
            assert payload.short_message == b"" and payload.data_coding == 8
            [tlv] = payload.tlvs
            assert tlv.tag == smpp34_tags.TLV_MESSAGE_PAYLOAD and decode_ucs2(tlv.value) == text


@pytest.mark.parametrize("form", ["text", "tlv"])
async def test_receipt_from_the_thirdparty_server(form: str) -> None:
    async with thirdparty_smsc() as smsc, client_against(smsc) as (client, inbox):
        outcome = await client.submit(source="SMSGW", destination="447700900123", text="receipt please")
        [message_id] = outcome.message_ids
        esme = smsc.session(can_receive=True)
        if form == "text":
            # Decimal in the text, hex in submit_sm_resp: only normalisation pairs them.
            text = format_receipt_text(
                message_id=f"{int(message_id, 16):010d}",
                stat="DELIVRD",
                submit_date="2601011200",
                done_date="2601011201",
            )
            resp = await asyncio.wait_for(
                esme.deliver_sm(
                    "SMSGW", text.encode(), source_addr="447700900123", esm_class=c.ESM_CLASS_SMSC_DELIVERY_RECEIPT
                ),
                5,
            )
        else:
            resp = await asyncio.wait_for(
                esme.deliver_sm(
                    "SMSGW",
                    b"",
                    source_addr="447700900123",
                    esm_class=c.ESM_CLASS_SMSC_DELIVERY_RECEIPT,
                    tlvs=[
                        smpp34.Tlv(smpp34_tags.TLV_RECEIPTED_MESSAGE_ID, message_id.encode() + b"\x00"),
                        smpp34.Tlv(smpp34_tags.TLV_MESSAGE_STATE, b"\x02"),
                    ],
                ),
                5,
            )
        assert resp.command_status == 0  # our deliver_sm_resp, read by their codec
        receipt = await inbox.get()
        assert receipt.is_receipt and receipt.state == DELIVRD
        assert receipt.message_id_key == normalize_message_id(message_id)
        assert (receipt.source, receipt.destination) == ("447700900123", "SMSGW")


async def test_mo_from_the_thirdparty_server() -> None:
    async with thirdparty_smsc() as smsc, client_against(smsc) as (_client, inbox):
        esme = smsc.session(can_receive=True)
        resp = await asyncio.wait_for(
            esme.deliver_sm("12345", "STOP 👋".encode("utf-16-be"), source_addr="447700900123", data_coding=8), 5
        )
        assert resp.command_status == 0
        mo = await inbox.get()
        assert not mo.is_receipt and (mo.source, mo.destination, mo.text) == ("447700900123", "12345", "STOP 👋")


async def test_pair_binds_keepalive_and_unbind() -> None:
    async with thirdparty_smsc() as smsc:
        # An enquire_link unanswered within 0.3 s would drop its bind (and count a reconnect).
        async with client_against(smsc, bind_mode="pair", enquire_link_interval=0.1, response_timeout=0.3) as (
            client,
            _inbox,
        ):
            assert sorted(esme.can_receive for esme in smsc.binds) == [False, True]  # transmitter + receiver
            outcome = await client.submit(source="SMSGW", destination="447700900123", text="via the transmitter")
            assert outcome.ok
            [sent] = smsc.submits
            assert sent.session_id == smsc.session(can_receive=False).session_id
            await asyncio.sleep(1.0)  # about ten enquire_link on each bind, all answered in time
            stats = client.stats()
            assert stats.bound == {"transmitter": True, "receiver": True} and stats.reconnects_total == 0
        # close() unbinds both sessions.
        await eventually(lambda: len(smsc.unbound) == 2)
        assert sorted(smsc.unbound) == sorted(esme.session_id for esme in smsc.binds)


@pytest.mark.xfail(
    strict=True,
    raises=(TimeoutError, smpp34.SmppError),
    reason="smpp34 1.5.0 answers deliver_sm_resp on a bind_receiver with generic_nack",
)
async def test_pair_receipt_over_the_receiver() -> None:
    async with thirdparty_smsc() as smsc, client_against(smsc, bind_mode="pair") as (_client, inbox):
        receiver = smsc.session(can_receive=True)
        resp = await asyncio.wait_for(
            receiver.deliver_sm(
                "SMSGW", b"id:1 stat:DELIVRD", source_addr="447700900123", esm_class=c.ESM_CLASS_SMSC_DELIVERY_RECEIPT
            ),
            2,
        )
        assert resp.command_status == 0
        assert (await inbox.get()).receipted_message_id == "1"
