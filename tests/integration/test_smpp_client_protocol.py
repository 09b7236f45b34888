"""SmppClient protocol behaviour against a scripted SMSC (real TCP, 127.0.0.1).

The simulator is a well-behaved SMSC; these tests need one that misbehaves on
cue (holds responses, never answers, pushes odd PDUs), so they drive the wire
directly with our framing layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from smsgw.smpp import constants as c
from smsgw.smpp.client import InboundDeliver, SmppClient, SmppRefusedForNow, SmppTimeout, SmppUnavailable
from smsgw.smpp.framing import ConnectionClosed, PduStream
from smsgw.smpp.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    SubmitSm,
    Unbind,
    UnknownPdu,
)

pytestmark = pytest.mark.timeout(60)

SubmitScript = Callable[["FakeSmsc", PduStream, SubmitSm], Coroutine[Any, Any, None]]


class FakeSmsc:
    """Accepts one bind per connection; hands each submit_sm to ``on_submit``."""

    def __init__(self, on_submit: SubmitScript):
        self.on_submit = on_submit
        self.submits: list[SubmitSm] = []
        self.others: list[Pdu] = []
        self.streams: list[PduStream] = []
        self.bound = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for stream in self.streams:
            stream.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = PduStream(reader, writer)
        self.streams.append(stream)
        try:
            while True:
                pdu = await stream.read()
                if isinstance(pdu, BindTransceiver):
                    await stream.send(pdu.response(system_id="FAKE"))
                    self.bound.set()
                elif isinstance(pdu, SubmitSm):
                    self.submits.append(pdu)
                    task = asyncio.create_task(self.on_submit(self, stream, pdu))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif isinstance(pdu, (EnquireLink, Unbind)):
                    await stream.send(pdu.response())
                else:
                    self.others.append(pdu)
        except ConnectionClosed:
            pass


@asynccontextmanager
async def client_against(
    on_submit: SubmitScript, on_deliver: Callable[[InboundDeliver], Awaitable[None]] | None = None, **kwargs: object
) -> AsyncIterator[tuple[FakeSmsc, SmppClient]]:
    smsc = FakeSmsc(on_submit)
    await smsc.start()
    client = SmppClient(
        host="127.0.0.1",
        port=smsc.port,
        system_id="smsgw",
        password="secret",
        reconnect_min=0.05,
        reconnect_max=0.2,
        throttle_min=0.02,
        throttle_max=0.1,
        on_deliver=on_deliver,
        **{"response_timeout": 2.0, **kwargs},  # type: ignore[arg-type]
    )
    try:
        await asyncio.wait_for(client.start(), 5)
        yield smsc, client
    finally:
        await client.close()
        await smsc.stop()


async def answer_ok(smsc: FakeSmsc, stream: PduStream, pdu: SubmitSm) -> None:
    await stream.send(pdu.response(message_id=str(len(smsc.submits))))


async def read_until(stream: PduStream, kind: type[Pdu], timeout: float = 5.0) -> Pdu:
    async with asyncio.timeout(timeout):
        while True:
            pdu = await stream.read()
            if isinstance(pdu, kind):
                return pdu


async def test_window_limits_outstanding_submits() -> None:
    release = asyncio.Event()

    async def hold(smsc: FakeSmsc, stream: PduStream, pdu: SubmitSm) -> None:
        await release.wait()
        await answer_ok(smsc, stream, pdu)

    async with client_against(hold, window=3) as (smsc, client):
        sends = [
            asyncio.create_task(client.submit(source="SMSGW", destination=f"4477009{i:05d}", text="w"))
            for i in range(8)
        ]
        await asyncio.sleep(0.3)
        assert len(smsc.submits) == 3  # the other five wait for a window slot
        assert client.stats().window_in_use == 3
        release.set()
        outcomes = await asyncio.wait_for(asyncio.gather(*sends), 10)
        assert all(o.ok for o in outcomes) and len(smsc.submits) == 8
        assert client.stats().window_in_use == 0 and client.stats().submits_total == 8
        assert len({p.sequence_number for p in smsc.submits}) == 8


async def test_no_response_raises_timeout() -> None:
    async def never(smsc: FakeSmsc, stream: PduStream, pdu: SubmitSm) -> None:
        return None

    async with client_against(never, response_timeout=0.2) as (_smsc, client):
        with pytest.raises(SmppTimeout):
            await client.submit(source="SMSGW", destination="447700900123", text="void")
        # The timed-out request frees its window slot and the bind stays up.
        assert client.bound


async def test_queue_full_retries_the_same_part() -> None:
    async def full_once(smsc: FakeSmsc, stream: PduStream, pdu: SubmitSm) -> None:
        if len(smsc.submits) == 1:
            await stream.send(pdu.response(c.ESME_RMSGQFUL))
        else:
            await answer_ok(smsc, stream, pdu)

    async with client_against(full_once) as (smsc, client):
        outcome = await client.submit(source="SMSGW", destination="447700900123", text="again")
        assert outcome.ok and outcome.message_ids == ["2"]
        first, second = smsc.submits
        assert first.short_message == second.short_message
        assert first.sequence_number != second.sequence_number


async def test_a_temporary_fault_on_a_long_messages_part_keeps_the_parts_taken_for_the_retry() -> None:
    async def syserr_on_the_second(smsc: FakeSmsc, stream: PduStream, pdu: SubmitSm) -> None:
        if len(smsc.submits) == 2:
            await stream.send(pdu.response(c.ESME_RSYSERR))
        else:
            await answer_ok(smsc, stream, pdu)

    text = "x" * 400  # three parts
    async with client_against(syserr_on_the_second) as (smsc, client):
        with pytest.raises(SmppRefusedForNow) as refused:
            await client.submit(source="SMSGW", destination="447700900123", text=text, key="m-1")
        assert refused.value.command_status == c.ESME_RSYSERR and not refused.value.in_doubt
        assert client.holds_part_of("m-1")  # part 1 was taken: the message stays with this SMSC
        outcome = await client.submit(source="SMSGW", destination="447700900123", text=text, key="m-1")
        assert outcome.ok and outcome.message_ids == ["1", "3", "4"]  # part 1 not sent again
        assert len(smsc.submits) == 4 and smsc.submits[1].short_message == smsc.submits[2].short_message


async def test_generic_nack_to_a_submit_is_a_failed_outcome() -> None:
    async def nack(smsc: FakeSmsc, stream: PduStream, pdu: SubmitSm) -> None:
        await stream.send(GenericNack(command_status=c.ESME_RINVCMDLEN, sequence_number=pdu.sequence_number))

    async with client_against(nack) as (_smsc, client):
        outcome = await client.submit(source="SMSGW", destination="447700900123", text="x")
        assert not outcome.ok and outcome.command_status == c.ESME_RINVCMDLEN


async def test_connection_lost_mid_request_is_unavailable() -> None:
    async def hang_up(smsc: FakeSmsc, stream: PduStream, pdu: SubmitSm) -> None:
        stream.abort()

    async with client_against(hang_up) as (smsc, client):
        with pytest.raises(SmppUnavailable):
            await client.submit(source="SMSGW", destination="447700900123", text="x")
        # ... and the client binds again by itself.
        smsc.bound.clear()
        await asyncio.wait_for(smsc.bound.wait(), 5)
        await client.wait_bound(5)


async def test_client_answers_enquire_link_and_nacks_unknown_commands() -> None:
    async with client_against(answer_ok) as (smsc, _client):
        await asyncio.wait_for(smsc.bound.wait(), 5)
        stream = smsc.streams[-1]
        # FakeSmsc's reader files whatever the client answers under ``others``.
        await stream.send(EnquireLink(sequence_number=500))
        await stream.send(UnknownPdu(command_id=c.DATA_SM, sequence_number=501, body=b""))

        async def answered() -> None:
            while len(smsc.others) < 2:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(answered(), 5)
        link_resp, nack = smsc.others
        assert isinstance(link_resp, EnquireLinkResp) and link_resp.sequence_number == 500
        assert isinstance(nack, GenericNack)
        assert (nack.sequence_number, nack.command_status) == (501, c.ESME_RINVCMDID)


async def test_deliver_sm_is_acked_only_after_on_deliver_returns() -> None:
    handling = asyncio.Event()
    release = asyncio.Event()
    seen: list[InboundDeliver] = []

    async def slow_handler(inbound: InboundDeliver) -> None:
        seen.append(inbound)
        handling.set()
        await release.wait()

    async with client_against(answer_ok, on_deliver=slow_handler) as (smsc, _client):
        await asyncio.wait_for(smsc.bound.wait(), 5)
        stream = smsc.streams[-1]
        await stream.send(DeliverSm(sequence_number=77, source_addr="447700900123", short_message=b"hello"))
        await asyncio.wait_for(handling.wait(), 5)
        await asyncio.sleep(0.2)
        assert smsc.others == []  # no deliver_sm_resp while on_deliver is still running
        release.set()

        async def acked() -> None:
            while not smsc.others:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(acked(), 5)
        [resp] = smsc.others
        assert isinstance(resp, DeliverSmResp) and resp.sequence_number == 77 and resp.command_status == 0
        assert seen[0].text == "hello" and not seen[0].is_receipt


async def test_unbind_from_the_smsc_is_answered_and_the_client_rebinds() -> None:
    async with client_against(answer_ok) as (smsc, client):
        await asyncio.wait_for(smsc.bound.wait(), 5)
        smsc.bound.clear()
        await smsc.streams[-1].send(Unbind(sequence_number=900))

        async def answered() -> None:
            while not smsc.others:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(answered(), 5)
        [resp] = smsc.others
        assert resp.command_id == c.UNBIND_RESP and resp.sequence_number == 900
        await asyncio.wait_for(smsc.bound.wait(), 5)  # a fresh bind on a new connection
        await client.wait_bound(5)
        assert (await client.submit(source="SMSGW", destination="447700900123", text="back")).ok


async def test_start_cancelled_then_close_is_clean() -> None:
    # Nothing listens on this port: start() keeps retrying until the caller gives up.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    client = SmppClient(
        host="127.0.0.1", port=port, system_id="smsgw", password="secret", reconnect_min=0.01, reconnect_max=0.05
    )
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.start(), 0.3)
    assert not client.bound
    await asyncio.wait_for(client.close(), 5)


async def test_keepalive_timeout_drops_and_rebinds() -> None:
    # An SMSC that stops answering enquire_link: the client must give up on the link and rebind.
    smsc = FakeSmsc(answer_ok)
    binds = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal binds
        stream = PduStream(reader, writer)
        smsc.streams.append(stream)
        try:
            while True:
                pdu = await stream.read()
                if isinstance(pdu, BindTransceiver):
                    binds += 1
                    await stream.send(pdu.response(system_id="MUTE"))
                # enquire_link deliberately unanswered
        except ConnectionClosed:
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = SmppClient(
        host="127.0.0.1",
        port=port,
        system_id="smsgw",
        password="secret",
        enquire_link_interval=0.05,
        response_timeout=0.1,
        reconnect_min=0.02,
        reconnect_max=0.05,
    )
    try:
        await asyncio.wait_for(client.start(), 5)
        async with asyncio.timeout(5):
            while binds < 2:
                await asyncio.sleep(0.01)
    finally:
        await client.close()
        server.close()
        for stream in smsc.streams:
            stream.abort()
        await server.wait_closed()


async def test_pair_sends_enquire_link_on_both_binds_and_unbinds_both() -> None:
    # Per connection: which bind it was, how many enquire_link and unbind it got.
    seen: list[dict[str, object]] = []
    streams: list[PduStream] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = PduStream(reader, writer)
        streams.append(stream)
        record: dict[str, object] = {"bind": None, "enquire_link": 0, "unbind": 0}
        seen.append(record)
        try:
            while True:
                pdu = await stream.read()
                if isinstance(pdu, (BindTransmitter, BindReceiver, BindTransceiver)):
                    record["bind"] = type(pdu).__name__
                    await stream.send(pdu.response(system_id="PAIR"))
                elif isinstance(pdu, EnquireLink):
                    record["enquire_link"] = int(record["enquire_link"]) + 1  # type: ignore[call-overload]
                    await stream.send(pdu.response())
                elif isinstance(pdu, Unbind):
                    record["unbind"] = int(record["unbind"]) + 1  # type: ignore[call-overload]
                    await stream.send(pdu.response())
                elif isinstance(pdu, SubmitSm):
                    await stream.send(pdu.response(message_id="1"))
        except ConnectionClosed:
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = SmppClient(
        host="127.0.0.1",
        port=port,
        system_id="smsgw",
        password="secret",
        bind_mode="pair",
        enquire_link_interval=0.05,
        response_timeout=1.0,
    )
    try:
        await asyncio.wait_for(client.start(), 5)
        assert sorted(str(r["bind"]) for r in seen) == ["BindReceiver", "BindTransmitter"]
        async with asyncio.timeout(5):
            while not all(int(r["enquire_link"]) >= 2 for r in seen):  # type: ignore[call-overload]
                await asyncio.sleep(0.01)
        assert (await client.submit(source="SMSGW", destination="447700900123", text="x")).ok
        await client.close()
        assert [r["unbind"] for r in seen] == [1, 1]
        assert len(seen) == 2  # no reconnects
    finally:
        await client.close()
        server.close()
        for stream in streams:
            stream.abort()
        await server.wait_closed()
