"""Android phones as a carrier: AndroidCarrierClient and DeviceGatewayService against
simulated phones, over real gRPC on 127.0.0.1 (no broker: reports go to a fake
CarrierReports that records the calls)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import device_gateway_pb2 as dg
from smsgw.v1 import device_gateway_pb2_grpc as dg_grpc
from smsgw.v1 import events_pb2 as ev
from smsgw_carrier_adapter.android.client import AndroidCarrierClient
from smsgw_carrier_adapter.android.config import AndroidCarrier
from smsgw_carrier_adapter.android.registry import DeviceRegistry
from smsgw_carrier_adapter.android.servicer import add_device_gateway
from smsgw_carrier_adapter.carrier import CarrierUnavailable
from smsgw_dev.simulators.android_device import AndroidDeviceSimulator

pytestmark = pytest.mark.timeout(60)

R = dg.SmsManagerResult
DS = ev.DeliveryState
ACCOUNT = "acct-android"
CARRIER = "phones"
TOKENS = {f"phone-{x}": f"tok-{x}-{'0123456789abcdef'}" for x in "abc"}


class FakeReports:
    """Records what the carrier hands to the dispatcher; can fail the first N receipts."""

    def __init__(self, fail_receipts: int = 0):
        self.receipts: list[tuple] = []
        self.inbound: list[tuple] = []
        self.fail_receipts = fail_receipts

    async def on_receipt(
        self, carrier: str, carrier_message_id: str, state: int, carrier_state: str = "", error: str = ""
    ) -> None:
        if self.fail_receipts:
            self.fail_receipts -= 1
            raise RuntimeError("simulated: the reports topic is unreachable")
        self.receipts.append((carrier, carrier_message_id, state, carrier_state, error))

    async def on_inbound(
        self,
        carrier: str,
        source: str,
        destination: str,
        text: str,
        parts: int = 1,
        *,
        concat_reference: int = 0,
        part_number: int = 0,
        total_parts: int = 0,
        media_urls: Sequence[str] = (),
    ) -> None:
        self.inbound.append((carrier, source, destination, text, parts))


class Gateway:
    def __init__(
        self,
        address: str,
        client: AndroidCarrierClient,
        reports: FakeReports,
        registry: DeviceRegistry,
        stack: AsyncExitStack,
    ):
        self.address, self.client, self.reports, self.registry = address, client, reports, registry
        self._stack = stack

    async def phone(self, device_id: str, connect: bool = True, **kwargs) -> AndroidDeviceSimulator:
        kwargs.setdefault("token", TOKENS.get(device_id, "tok-unknown-0123456789abcdef"))
        phone = AndroidDeviceSimulator(self.address, device_id=device_id, **kwargs)
        self._stack.push_async_callback(phone.close)
        if connect:
            await phone.connect()
        return phone


@asynccontextmanager
async def gateway(reports: FakeReports | None = None, keepalive_timeout: float = 3.0, **overrides):
    reports = reports or FakeReports()
    registry = DeviceRegistry(ping_interval=0.2, keepalive_timeout=keepalive_timeout, hello_timeout=1.0)
    config = AndroidCarrier(
        name=CARRIER,
        account_id=ACCOUNT,
        device_tokens=[{"token": token, "device_id": device} for device, token in TOKENS.items()],
        **{"ack_timeout": 2.0, "sent_timeout": 15.0, **overrides},
    )
    client = AndroidCarrierClient(config, reports, registry)
    server = grpc.aio.server()
    add_device_gateway(server, registry)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await client.start()
    async with AsyncExitStack() as stack:
        try:
            yield Gateway(f"127.0.0.1:{port}", client, reports, registry, stack)
        finally:
            await client.close()
            await server.stop(0)


def command(
    to: str = "+14155550100", text: str = "hello", segments: int = 1, expires_in: float | None = 300.0
) -> cp.DispatchCommand:
    cmd = cp.DispatchCommand(
        command_id=str(uuid.uuid4()),
        message_id=str(uuid.uuid4()),
        account_id=ACCOUNT,
        carrier=CARRIER,
        to=to,
        content=ev.MessageContent(text=text),
        segments=segments,
    )
    setattr(cmd, "from", "+15550009999")
    if expires_in is not None:
        cmd.expires_at.FromDatetime(datetime.now(UTC) + timedelta(seconds=expires_in))
    return cmd


async def eventually(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# --- sending ------------------------------------------------------------------------------


async def test_phone_sends_and_reports_sent_then_delivered() -> None:
    async with gateway() as gw:
        phone = await gw.phone("phone-a")
        cmd = command()
        result = await gw.client.submit(cmd)

        assert result.accepted
        assert result.carrier_ids == (f"phone-a:{cmd.message_id}:0",)
        [sent] = phone.received
        assert (sent.message_id, sent.to, sent.body, sent.delivery_report) == (cmd.message_id, cmd.to, "hello", True)
        assert 0 < sent.validity.seconds <= 300 and sent.expires_at == cmd.expires_at
        await eventually(lambda: gw.reports.receipts)
        assert gw.reports.receipts == [(CARRIER, result.carrier_ids[0], DS.DELIVERY_STATE_DELIVERED, "3gpp:0x00", "")]
        await eventually(lambda: phone.outbox == 0)  # every report acknowledged
        assert phone.pending_message_ids() == []


async def test_multipart_message_gets_an_id_and_a_receipt_per_part() -> None:
    async with gateway() as gw:
        await gw.phone("phone-a")
        cmd = command(text="x" * 300, segments=2)
        result = await gw.client.submit(cmd)
        assert result.carrier_ids == (f"phone-a:{cmd.message_id}:0", f"phone-a:{cmd.message_id}:1")
        await eventually(lambda: len(gw.reports.receipts) == 2)
        assert {r[1] for r in gw.reports.receipts} == set(result.carrier_ids)


async def test_failed_delivery_is_undeliverable() -> None:
    async with gateway() as gw:
        await gw.phone("phone-a", deliveries={r"^\+1415555067": 0x41})
        result = await gw.client.submit(command(to="+14155550671"))
        await eventually(lambda: gw.reports.receipts)
        assert gw.reports.receipts == [
            (CARRIER, result.carrier_ids[0], DS.DELIVERY_STATE_UNDELIVERABLE, "3gpp:0x41", "3gpp:0x41")
        ]


async def test_two_phones_share_the_load() -> None:
    async with gateway() as gw:
        a = await gw.phone("phone-a", send_delay=0.2)
        b = await gw.phone("phone-b", send_delay=0.2)
        commands = [command() for _ in range(10)]
        results = await asyncio.gather(*(gw.client.submit(c) for c in commands))

        assert len(a.received) == len(b.received) == 5
        assert set(a.received_ids()).isdisjoint(b.received_ids())
        for cmd, result in zip(commands, results):
            owner = "phone-a" if cmd.message_id in a.received_ids() else "phone-b"
            assert result.carrier_ids == (f"{owner}:{cmd.message_id}:0",)


async def test_least_outstanding_phone_gets_the_next_message() -> None:
    async with gateway() as gw:
        a = await gw.phone("phone-a")
        a.send_gate.clear()  # a holds what it accepts
        b = await gw.phone("phone-b")
        held = [asyncio.create_task(gw.client.submit(command())) for _ in range(2)]
        await eventually(lambda: len(a.received) == 1 and len(b.received) == 1)
        for _ in range(3):  # b is free again after each: it takes them all
            assert (await gw.client.submit(command())).accepted
        assert len(a.received) == 1 and len(b.received) == 4
        a.send_gate.set()
        await asyncio.gather(*held)


# --- phones that go away ----------------------------------------------------------------


async def test_disconnect_hands_unaccepted_messages_to_another_phone() -> None:
    async with gateway(ack_timeout=30.0) as gw:
        a = await gw.phone("phone-a", ack=False)  # receives, never accepts
        commands = [command() for _ in range(3)]
        tasks = [asyncio.create_task(gw.client.submit(c)) for c in commands]
        await eventually(lambda: len(a.received) == 3)
        b = await gw.phone("phone-b")
        await a.disconnect()

        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert [r.carrier_ids for r in results] == [(f"phone-b:{c.message_id}:0",) for c in commands]
        assert sorted(b.received_ids()) == sorted(c.message_id for c in commands)  # each once: nothing lost
        assert a.sent == []


async def test_disconnect_without_another_phone_is_unavailable_then_retried() -> None:
    async with gateway(ack_timeout=30.0) as gw:
        a = await gw.phone("phone-a", ack=False)
        cmd = command()
        task = asyncio.create_task(gw.client.submit(cmd))
        await eventually(lambda: len(a.received) == 1)
        await a.disconnect()
        with pytest.raises(CarrierUnavailable, match="no phone of account"):
            await asyncio.wait_for(task, 5)
        a.ack = True
        await a.connect()
        result = await gw.client.submit(cmd)  # the dispatcher's retry
        assert result.carrier_ids == (f"phone-a:{cmd.message_id}:0",)
        assert a.received_ids() == [cmd.message_id] * 2  # never accepted the first time: sent again
        assert a.sent == [cmd.message_id]


async def test_reconnect_resends_only_what_the_phone_never_accepted() -> None:
    async with gateway() as gw:
        a = await gw.phone("phone-a")
        a.send_gate.clear()  # accepts, does not send yet
        m1, m2, m3 = command(), command(), command()
        waiting = [asyncio.create_task(gw.client.submit(c)) for c in (m1, m2)]
        device = gw.client.devices["phone-a"]
        await eventually(lambda: device.accepted_ids == {m1.message_id, m2.message_id})
        a.ack = False
        unaccepted = asyncio.create_task(gw.client.submit(m3))
        await eventually(lambda: len(a.received) == 3)

        await a.disconnect()
        with pytest.raises(CarrierUnavailable):
            await asyncio.wait_for(unaccepted, 5)
        assert not any(t.done() for t in waiting)  # accepted ones stay with phone-a
        b = await gw.phone("phone-b")
        retry_m1 = asyncio.create_task(gw.client.submit(m1))  # a dispatcher retry must not move it to b
        await asyncio.sleep(0.2)

        a.ack = True
        await a.connect()
        assert sorted(a.pending_message_ids()) == sorted([m1.message_id, m2.message_id])
        r3 = await gw.client.submit(m3)
        a.send_gate.set()
        r1, r2, r1_again = await asyncio.wait_for(asyncio.gather(*waiting, retry_m1), 10)

        assert r1 == r1_again and r1.carrier_ids == (f"phone-a:{m1.message_id}:0",)
        assert r2.carrier_ids == (f"phone-a:{m2.message_id}:0",)
        assert r3.accepted
        counts = Counter(a.received_ids())
        assert counts[m1.message_id] == counts[m2.message_id] == 1
        assert counts[m3.message_id] == 1 + (r3.carrier_ids[0].startswith("phone-a"))
        assert m1.message_id not in b.received_ids() and m2.message_id not in b.received_ids()
        assert sorted(a.sent + b.sent) == sorted(c.message_id for c in (m1, m2, m3))  # each sent exactly once


async def test_restarted_gateway_learns_accepted_messages_from_hello() -> None:
    cmd = command()
    a = AndroidDeviceSimulator("unset", TOKENS["phone-a"], "phone-a")  # outlives the first gateway
    try:
        async with gateway() as first:
            a.server = first.address
            await a.connect()
            a.send_gate.clear()
            task = asyncio.create_task(first.client.submit(cmd))
            await eventually(lambda: first.client.devices["phone-a"].accepted_ids == {cmd.message_id})
            task.cancel()
            await a.disconnect()
        async with gateway() as second:  # a new adapter process: nothing in memory
            a.server = second.address
            b = await second.phone("phone-b")
            await a.connect()  # hello lists cmd as pending
            task = asyncio.create_task(second.client.submit(cmd))  # Kafka redelivers the command
            await asyncio.sleep(0.2)
            assert b.received == [] and not task.done()  # kept for phone-a, not handed to phone-b
            a.send_gate.set()
            result = await asyncio.wait_for(task, 10)
            assert result.carrier_ids == (f"phone-a:{cmd.message_id}:0",)
            assert a.received_ids() == [cmd.message_id] and a.sent == [cmd.message_id]
    finally:
        await a.close()


async def test_accepted_but_never_reported_fails_once_validity_ended() -> None:
    async with gateway(sent_timeout=0.3) as gw:
        a = await gw.phone("phone-a")
        a.send_gate.clear()  # accepts, never sends
        b = await gw.phone("phone-b")
        cmd = command(expires_in=0.6)
        with pytest.raises(CarrierUnavailable, match="accepted .* waiting for it"):
            await gw.client.submit(cmd)
        await asyncio.sleep(0.6)
        result = await gw.client.submit(cmd)  # the dispatcher's retry, after validity ended
        assert result.failure.reason == "DEVICE_VALIDITY_ENDED" and "unconfirmed" in result.failure.message
        assert a.received_ids() == [cmd.message_id] and b.received == []


async def test_phone_that_does_not_accept_in_time_is_passed_over() -> None:
    async with gateway(ack_timeout=0.3) as gw:
        a = await gw.phone("phone-a", ack=False)
        await gw.phone("phone-b")
        cmd = command()
        result = await gw.client.submit(cmd)
        assert result.carrier_ids == (f"phone-b:{cmd.message_id}:0",)
        assert a.received_ids() == [cmd.message_id]
        await eventually(lambda: a.canceled == [cmd.message_id])


async def test_same_device_connecting_again_replaces_the_old_stream() -> None:
    async with gateway() as gw:
        old = await gw.phone("phone-a")
        new = await gw.phone("phone-a")
        await eventually(lambda: old.end_status is not None)
        assert old.end_status[0] == grpc.StatusCode.ABORTED
        assert new.connected
        assert (await gw.client.submit(command())).accepted
        assert len(new.received) == 1 and old.received == []


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", [R.SMS_MANAGER_RESULT_ERROR_SHORT_CODE_NEVER_ALLOWED, R.SMS_MANAGER_RESULT_ERROR_NULL_PDU]
)
async def test_permanent_error_fails_the_message(code: int) -> None:
    async with gateway() as gw:
        a = await gw.phone("phone-a", results={r"^\+1415555066": code})
        b = await gw.phone("phone-b")
        result = await gw.client.submit(command(to="+14155550662"))
        assert not result.accepted
        name = R.Name(code).removeprefix("SMS_MANAGER_")
        assert (result.failure.error_code, result.failure.reason, result.failure.carrier_error) == (
            500,
            "DEVICE_SEND_FAILED",
            name,
        )
        assert result.failure.carrier == CARRIER and "phone-a" in result.failure.message
        assert b.received == []  # a permanent error is not retried elsewhere
        assert a.sent == []


async def test_transient_error_tries_another_phone_then_prefers_it() -> None:
    async with gateway() as gw:
        a = await gw.phone("phone-a", results={".": R.SMS_MANAGER_RESULT_ERROR_NO_SERVICE})
        await gw.phone("phone-b")
        first = command()
        result = await gw.client.submit(first)
        assert result.carrier_ids == (f"phone-b:{first.message_id}:0",)
        assert a.received_ids() == [first.message_id]
        second = command()
        assert (await gw.client.submit(second)).carrier_ids == (f"phone-b:{second.message_id}:0",)
        assert a.received_ids() == [first.message_id]  # a's radio is down: passed over for a while


async def test_rejections_fail_or_move_on_by_reason() -> None:
    async with gateway() as gw:
        a = await gw.phone(
            "phone-a",
            rejections={
                r"^\+1415555069": dg.SendRejectReason.SEND_REJECT_REASON_INVALID_MESSAGE,
                ".": dg.SendRejectReason.SEND_REJECT_REASON_BUSY,
            },
        )
        invalid = await gw.client.submit(command(to="+14155550691"))
        assert (invalid.failure.reason, invalid.failure.carrier_error) == ("DEVICE_REJECTED", "INVALID_MESSAGE")
        assert invalid.failure.message.endswith("SEND_REJECT_REASON_INVALID_MESSAGE simulated rejection")
        busy = command()
        with pytest.raises(CarrierUnavailable, match="SEND_REJECT_REASON_BUSY"):
            await gw.client.submit(busy)
        await gw.phone("phone-b")
        assert (await gw.client.submit(busy)).carrier_ids == (f"phone-b:{busy.message_id}:0",)
        assert a.received_ids().count(busy.message_id) == 1


async def test_transient_error_everywhere_is_unavailable() -> None:
    async with gateway() as gw:
        await gw.phone("phone-a", results={".": R.SMS_MANAGER_RESULT_ERROR_RADIO_OFF})
        await gw.phone("phone-b", results={".": R.SMS_MANAGER_RESULT_ERROR_GENERIC_FAILURE})
        with pytest.raises(
            CarrierUnavailable,
            match="RESULT_ERROR_RADIO_OFF.*RESULT_ERROR_GENERIC_FAILURE|"
            "RESULT_ERROR_GENERIC_FAILURE.*RESULT_ERROR_RADIO_OFF",
        ):
            await gw.client.submit(command())


async def test_no_phone_connected_is_unavailable() -> None:
    async with gateway() as gw:
        with pytest.raises(CarrierUnavailable, match=f"no phone of account {ACCOUNT} is connected"):
            await asyncio.wait_for(gw.client.submit(command()), 2)


async def test_expired_message_fails_without_reaching_a_phone() -> None:
    async with gateway() as gw:
        a = await gw.phone("phone-a")
        result = await gw.client.submit(command(expires_in=-1))
        assert (result.failure.error_code, result.failure.reason) == (500, "DEVICE_VALIDITY_ENDED")
        assert a.received == []


async def test_media_is_refused_phones_send_text_only() -> None:
    async with gateway() as gw:
        a = await gw.phone("phone-a")
        cmd = command()
        cmd.media_urls.append("https://example.com/cat.jpg")
        result = await gw.client.submit(cmd)
        assert (result.failure.reason, result.failure.carrier_error) == ("CARRIER_REJECTED", "MMS_NOT_SUPPORTED")
        assert a.received == []


async def test_another_accounts_message_is_refused() -> None:
    async with gateway() as gw:
        a = await gw.phone("phone-a")
        cmd = command()
        cmd.account_id = "someone-else"
        result = await gw.client.submit(cmd)
        assert (result.failure.reason, result.failure.carrier_error) == ("CARRIER_REJECTED", "ACCOUNT_MISMATCH")
        assert a.received == []


async def test_repeated_submit_after_the_answer_never_resends() -> None:
    async with gateway() as gw:
        a = await gw.phone("phone-a")
        cmd = command()
        first = await gw.client.submit(cmd)
        assert await gw.client.submit(cmd) == first
        assert a.received_ids() == [cmd.message_id]


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize("in_metadata", [True, False])
async def test_unknown_token_is_unauthenticated(in_metadata: bool) -> None:
    async with gateway() as gw:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gw.phone("phone-a", token="not-a-real-token-0123456789", token_in_metadata=in_metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "unknown device token" in refused.value.details()
        assert gw.registry.connected(ACCOUNT) == []


async def test_token_of_another_device_is_unauthenticated() -> None:
    async with gateway() as gw:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gw.phone("phone-z", token=TOKENS["phone-a"])
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "issued for device 'phone-a'" in refused.value.details()


async def test_registry_lists_connected_phones_per_account() -> None:
    async with gateway() as gw:
        a = await gw.phone("phone-a")
        await gw.phone("phone-b")
        assert sorted(d.device_id for d in gw.registry.connected(ACCOUNT)) == ["phone-a", "phone-b"]
        assert gw.registry.connected("someone-else") == []
        await a.disconnect()
        await eventually(lambda: [d.device_id for d in gw.registry.connected(ACCOUNT)] == ["phone-b"])


# --- what phones report -------------------------------------------------------------------


async def test_received_sms_goes_to_on_inbound() -> None:
    async with gateway() as gw:
        a = await gw.phone("phone-a", phone_number="+15550001111")
        await a.send_mo("+14155550123", "STOP")
        await a.send_mo("+14155550124", "HELP", to="+15550002222")
        assert gw.reports.inbound == [
            (CARRIER, "+14155550123", "+15550001111", "STOP", 1),
            (CARRIER, "+14155550124", "+15550002222", "HELP", 1),
        ]
        assert a.outbox == 0


async def test_unrecorded_receipt_is_repeated_by_the_phone_after_reconnect() -> None:
    async with gateway(reports=FakeReports(fail_receipts=1)) as gw:
        a = await gw.phone("phone-a")
        result = await gw.client.submit(command())
        await eventually(lambda: a.outbox == 1 and not gw.reports.receipts)  # the receipt was not acknowledged
        await asyncio.sleep(0.1)
        await a.disconnect()
        await a.connect()  # the outbox is written again after hello
        await eventually(lambda: gw.reports.receipts)
        assert gw.reports.receipts[0][1:3] == (result.carrier_ids[0], DS.DELIVERY_STATE_DELIVERED)
        await eventually(lambda: a.outbox == 0)


async def test_server_pings_and_phone_answers() -> None:
    async with gateway() as gw:
        a = await gw.phone("phone-a")
        assert a.welcome.ping_interval.ToMilliseconds() == 200
        await eventually(lambda: a.pings >= 3, timeout=3)
        assert a.connected


# --- the protocol's edges, with a raw client ------------------------------------------------


@asynccontextmanager
async def raw_stream(address: str, metadata=()):
    async with grpc.aio.insecure_channel(address) as channel:
        call = dg_grpc.DeviceGatewayServiceStub(channel).Connect(metadata=metadata)
        try:
            yield call
        finally:
            call.cancel()


async def ended_with(call) -> tuple[grpc.StatusCode, str]:
    async with asyncio.timeout(10):
        while await call.read() is not grpc.aio.EOF:
            pass
    return await call.code(), await call.details()


async def test_first_frame_must_be_hello() -> None:
    async with gateway() as gw, raw_stream(gw.address) as call:
        await call.write(dg.ConnectRequest(keepalive=dg.DeviceKeepalive()))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await ended_with(call)
        assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "first frame must be hello" in ended.value.details()


async def test_hello_without_token_is_unauthenticated() -> None:
    async with gateway() as gw, raw_stream(gw.address) as call:
        await call.write(dg.ConnectRequest(hello=dg.DeviceHello(device_id="phone-a")))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await ended_with(call)
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "no device token" in ended.value.details()


async def test_metadata_and_hello_tokens_must_agree() -> None:
    async with gateway() as gw, raw_stream(gw.address, (("x-smsgw-device-token", TOKENS["phone-a"]),)) as call:
        await call.write(dg.ConnectRequest(hello=dg.DeviceHello(device_id="phone-a", device_token=TOKENS["phone-b"])))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await ended_with(call)
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_silent_phone_is_disconnected_and_its_messages_released() -> None:
    async with gateway(keepalive_timeout=0.6, ack_timeout=30.0) as gw, raw_stream(gw.address) as call:
        await call.write(dg.ConnectRequest(hello=dg.DeviceHello(device_id="phone-a", device_token=TOKENS["phone-a"])))
        assert (await call.read()).WhichOneof("frame") == "welcome"
        submit = asyncio.create_task(gw.client.submit(command()))
        frames = []
        with pytest.raises(grpc.aio.AioRpcError) as ended:  # reads, never answers: no accept, no keepalive
            async with asyncio.timeout(10):
                while (frame := await call.read()) is not grpc.aio.EOF:
                    frames.append(frame.WhichOneof("frame"))
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE and "nothing heard" in ended.value.details()
        assert "send" in frames and "ping" in frames
        with pytest.raises(CarrierUnavailable):
            await asyncio.wait_for(submit, 5)


async def test_closing_the_carrier_ends_streams_and_waiting_submits() -> None:
    async with gateway() as gw:
        a = await gw.phone("phone-a")
        a.send_gate.clear()
        submit = asyncio.create_task(gw.client.submit(command()))
        await eventually(lambda: gw.client.devices["phone-a"].accepted_ids)
        await gw.client.close()
        with pytest.raises(CarrierUnavailable, match="closing"):
            await asyncio.wait_for(submit, 2)
        await eventually(lambda: a.end_status is not None)
        assert a.end_status[0] == grpc.StatusCode.UNAVAILABLE  # the phone reconnects (to another replica)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gw.phone("phone-b")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


# --- the command-line simulator -------------------------------------------------------------


async def _start_cli(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smsgw_dev.simulators.android_device",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def test_cli_prints_one_ready_line_sends_and_stops_on_sigterm() -> None:
    async with gateway() as gw:
        process = await _start_cli(
            "--server",
            gw.address,
            "--token",
            TOKENS["phone-c"],
            "--device-id",
            "phone-c",
            "--result",
            r"^\+1415555066=RESULT_ERROR_SHORT_CODE_NOT_ALLOWED",
        )
        assert process.stdout is not None
        try:
            line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
            assert line.startswith(f"android-device phone-c connected to {gw.address}")
            ok = command()
            assert (await gw.client.submit(ok)).carrier_ids == (f"phone-c:{ok.message_id}:0",)
            refused = await gw.client.submit(command(to="+14155550661"))
            assert refused.failure.carrier_error == "RESULT_ERROR_SHORT_CODE_NOT_ALLOWED"
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 10) == 0
            assert (await process.stdout.read()) == b""  # exactly one line
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_cli_with_a_bad_token_exits_2_with_the_reason() -> None:
    async with gateway() as gw:
        process = await _start_cli("--server", gw.address, "--token", "wrong-token-0123456789", "--device-id", "x")
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
        assert process.returncode == 2
        assert b"UNAUTHENTICATED" in stderr and b"unknown device token" in stderr
