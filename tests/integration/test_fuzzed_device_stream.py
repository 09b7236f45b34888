"""The Android gateway stream, fuzzed (hypothesis) over real gRPC on loopback: a phone that
authenticated and then sends hostile frames (unknown ids, negative and huge indices and counts,
unknown enum values, hostile text, timestamps out of range, a second hello) is answered, ignored
or disconnected with a client error, never INTERNAL or UNKNOWN; the server goes on serving, and a
well-behaved phone then sends a message. What the phone reports goes through the real Dispatcher's
encoding (its broker replaced by a list: the property is about the stream, not Kafka)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as s

from smsgw.v1 import device_gateway_pb2 as dg
from smsgw.v1 import device_gateway_pb2_grpc as dg_grpc
from smsgw_dev.simulators.android_device import TOKEN_METADATA
from tests.integration.test_device_gateway import TOKENS, command, gateway
from tests.integration.test_fuzzed_callbacks import recording_dispatcher

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
DEVICE = "phone-a"

text = s.one_of(s.text(max_size=40), s.sampled_from(["", "\x00", "\u202e", "+" + "9" * 40, "x" * 5000]))
ints = s.integers(min_value=-(2**31), max_value=2**31 - 1)
stamps = s.builds(
    lambda sec, nanos: timestamp_pb2.Timestamp(seconds=sec, nanos=nanos),
    s.integers(-(2**40), 2**40),
    s.integers(-(2**31), 2**31 - 1),
)


@s.composite
def frames(draw) -> dg.ConnectRequest:
    kind = draw(s.sampled_from(["hello", "keepalive", "accepted", "rejected", "sent", "delivery", "received"]))
    frame = dg.ConnectRequest()
    if kind == "hello":
        frame.hello.CopyFrom(
            dg.DeviceHello(
                device_token=draw(text),
                device_id=draw(text),
                app_version=draw(text),
                pending_message_ids=draw(s.lists(text, max_size=5)),
            )
        )
    elif kind == "keepalive":
        frame.keepalive.ping_id = draw(s.integers(0, 2**64 - 1))
        if draw(s.booleans()):
            frame.keepalive.sent_at.CopyFrom(draw(stamps))
    elif kind == "accepted":
        frame.accepted.CopyFrom(dg.SendAccepted(attempt_id=draw(text), message_id=draw(text)))
    elif kind == "rejected":
        frame.rejected.CopyFrom(
            dg.SendRejected(attempt_id=draw(text), message_id=draw(text), reason=draw(ints), detail=draw(text))
        )
    elif kind == "sent":
        frame.sent.CopyFrom(
            dg.SendResult(
                report_id=draw(text),
                attempt_id=draw(text),
                message_id=draw(text),
                part_index=draw(ints),
                part_count=draw(ints),
                result=draw(ints),
                error_code=draw(ints),
                sim_slot=draw(ints),
            )
        )
    elif kind == "delivery":
        frame.delivery.CopyFrom(
            dg.DeliveryReport(
                report_id=draw(text),
                attempt_id=draw(text),
                message_id=draw(text),
                part_index=draw(ints),
                format=draw(text),
                status=draw(ints),
                pdu=draw(s.binary(max_size=200)),
            )
        )
    else:
        received = dg.ReceivedSms(
            report_id=draw(text), to=draw(text), body=draw(text), sim_slot=draw(ints), parts=draw(ints)
        )
        setattr(received, "from", draw(text))
        if draw(s.booleans()):
            received.received_at.CopyFrom(draw(stamps))
        frame.received.CopyFrom(received)
    return frame


async def test_hostile_frames_from_an_authenticated_phone_never_fault_the_server():
    reports, producer = recording_dispatcher()
    async with gateway(reports=reports) as gw:
        loop = asyncio.get_running_loop()
        endings: dict[str, int] = {}

        async def storm(sequence: list[dg.ConnectRequest]) -> None:
            async with grpc.aio.insecure_channel(gw.address) as channel:
                call = dg_grpc.DeviceGatewayServiceStub(channel).Connect(metadata=((TOKEN_METADATA, TOKENS[DEVICE]),))
                try:
                    hello = dg.DeviceHello(device_token=TOKENS[DEVICE], device_id=DEVICE, app_version="fuzz")
                    hello.sim_slots.add(slot_index=0, subscription_id=1, phone_number="+14155550123")
                    await call.write(dg.ConnectRequest(hello=hello))
                    async with asyncio.timeout(10):
                        welcome = await call.read()
                    assert welcome.WhichOneof("frame") == "welcome"
                    for frame in sequence:
                        await call.write(frame)
                    await call.done_writing()
                    # Read (never iterate: grpc forbids mixing the two styles) until the server ends the
                    # stream or goes quiet, answering its pings as a phone would not bother to.
                    try:
                        async with asyncio.timeout(1.5):
                            while await call.read() is not grpc.aio.EOF:
                                pass
                        endings["ended by the server"] = endings.get("ended by the server", 0) + 1
                    except TimeoutError:
                        endings["kept open"] = endings.get("kept open", 0) + 1
                except grpc.aio.AioRpcError as error:
                    assert error.code() not in SERVER_FAULTS, f"{error.code()}: {error.details()}"
                    endings[error.code().name] = endings.get(error.code().name, 0) + 1
                finally:
                    call.cancel()

        @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(s.lists(frames(), min_size=1, max_size=8))
        def stream_holds(sequence):
            asyncio.run_coroutine_threadsafe(storm(sequence), loop).result(60)

        await asyncio.to_thread(stream_holds)
        assert endings, endings
        # Still serving: a well-behaved phone connects and sends a message.
        phone = await gw.phone(DEVICE, delivery_delay=0.01)
        result = await gw.client.submit(command(text="after the storm"))
        assert result.accepted and phone.sent
