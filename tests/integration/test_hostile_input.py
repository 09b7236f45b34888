"""Hostile and malformed input to a running intake (property-based, hypothesis): every request gets
an answer or a client error, never INTERNAL or UNKNOWN, the server stays up, and messages accepted
before are still delivered.

Requests are well-formed protobuf carrying hostile values: control characters, lone surrogates'
replacements, RTL marks, 10 k-character fields, out-of-range times and durations, huge maps and
lists, unknown fields, forged and absurd cursors; and bytes that are not protobuf at all, which
grpc's decoder alone would answer INTERNAL (smsgw.grpcx.malformed makes them INVALID_ARGUMENT /
MALFORMED_REQUEST). Real gRPC over loopback, the shared platform.
"""

from __future__ import annotations

import asyncio
import base64

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as s

from smsgw.domain import status as st
from smsgw.grpcx.errors import error_info_of
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.integration.helpers import ACCOUNT, send_request, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SERVER_FAULTS = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DATA_LOSS,
}
EXAMPLES = 60  # per property: bounded, about 10-20 s each against the shared platform

hostile_text = s.one_of(
    s.text(max_size=40),
    s.text(alphabet=s.characters(codec="utf-8", categories=("Cc", "Cf", "Zs", "Mn", "So")), max_size=40),
    s.sampled_from(
        [
            "",
            " ",
            "+",
            "++1",
            "+" + "9" * 40,
            "\u202e+14155550100",
            "+1\u00a0415\u00a0555\u00a00100",
            "+1415555010０",
            "null",
            "'; DROP TABLE messages; --",
            "%s%s%n",
            "\x00",
            "A" * 12,
            "https://",
        ]
    ),
    s.text(min_size=1000, max_size=10_000),
)
seconds = s.integers(min_value=-(2**40), max_value=2**40)
nanos = s.integers(min_value=-(2**31), max_value=2**31 - 1)


@s.composite
def hostile_requests(draw) -> api.SendMessageRequest:
    request = api.SendMessageRequest(
        to=draw(s.one_of(s.just("+14155550100"), hostile_text)),
        body=draw(s.one_of(s.just("hi"), hostile_text)),
        idempotency_key=draw(s.one_of(s.just(""), hostile_text)),
        status_callback_url=draw(s.one_of(s.just(""), hostile_text, s.just("https://169.254.169.254/"))),
    )
    setattr(request, "from", draw(s.one_of(s.just(""), hostile_text)))
    request.metadata.update(draw(s.dictionaries(hostile_text, hostile_text, max_size=30)))
    request.media_urls.extend(draw(s.lists(hostile_text, max_size=12)))
    request.tags.extend(draw(s.lists(hostile_text, max_size=12)))
    if draw(s.booleans()):
        request.send_at.CopyFrom(timestamp_pb2.Timestamp(seconds=draw(seconds), nanos=draw(nanos)))
    if draw(s.booleans()):
        request.validity_period.CopyFrom(duration_pb2.Duration(seconds=draw(seconds), nanos=draw(nanos)))
    return request


def _check(error: grpc.aio.AioRpcError) -> None:
    assert error.code() not in SERVER_FAULTS, f"{error.code()}: {error.details()}"


async def test_hostile_messages_get_an_answer_or_a_client_error(platform):
    async with grpc.aio.insecure_channel(platform.intake_address) as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        before = (await stub.SendMessage(send_request(body="accepted before the storm"), metadata=ACCOUNT)).message.id
        outcomes: dict[str, int] = {}

        async def one(request: api.SendMessageRequest) -> None:
            try:
                await stub.SendMessage(request, metadata=ACCOUNT, timeout=10)
                outcomes["OK"] = outcomes.get("OK", 0) + 1
            except grpc.aio.AioRpcError as error:
                _check(error)
                outcomes[error.code().name] = outcomes.get(error.code().name, 0) + 1

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(hostile_requests())
        def property_holds(request: api.SendMessageRequest) -> None:
            asyncio.run_coroutine_threadsafe(one(request), loop).result(30)

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(property_holds)
        # The same values as one batch each: refused per item, never the whole call with a fault.
        batch = api.SendBatchRequest(messages=[send_request(body=f"b{i}", to="+1" + "9" * i) for i in range(40)])
        reply = await stub.SendBatch(batch, metadata=ACCOUNT)
        assert {r.WhichOneof("outcome") for r in reply.results} <= {"accepted", "error"}
        assert all(r.error.grpc_code not in {c.value[0] for c in SERVER_FAULTS} for r in reply.results)
        assert outcomes.get("INVALID_ARGUMENT", 0) > 0, outcomes  # the strategies did reach validation
        await wait_for_status(stub, before, {st.DELIVERED})


async def test_forged_cursors_and_absurd_ids_are_client_errors(platform):
    async with grpc.aio.insecure_channel(platform.intake_address) as channel:
        stub = api_grpc.MessagingServiceStub(channel)

        async def watch(cursor: str) -> None:
            call = stub.WatchMessages(api.WatchMessagesRequest(cursor=cursor), metadata=ACCOUNT)
            try:
                async with asyncio.timeout(5):
                    await call.read()
            except grpc.aio.AioRpcError as error:
                _check(error)
            except TimeoutError:
                pass
            finally:
                call.cancel()

        async def lookups(message_id: str) -> None:
            for rpc, request in (
                (stub.GetMessage, api.GetMessageRequest(id=message_id)),
                (stub.GetMessageHistory, api.GetMessageHistoryRequest(id=message_id)),
                (stub.CancelMessage, api.CancelMessageRequest(id=message_id)),
            ):
                try:
                    await rpc(request, metadata=ACCOUNT, timeout=10)
                except grpc.aio.AioRpcError as error:
                    _check(error)

        def b64(raw: bytes) -> str:
            return base64.urlsafe_b64encode(raw).decode().rstrip("=")

        cursors = s.one_of(
            hostile_text,
            s.binary(max_size=200).map(b64),
            s.sampled_from(
                [
                    b64(b"[" * 2000 + b"]" * 2000),
                    b64(b"[" * 100_000),
                    b64(b'{"0": -1}'),
                    b64(b'{"x": 1}'),
                    b64(b'{"0": 1e400}'),
                    b64(b'{"99999999999999999999": 0}'),
                    b64(b"[]"),
                    b64(b"null"),
                    b64(b'{"0": "NaN"}'),
                    b64(("{" + '"1": 1,' * 300 + '"2": 2}').encode()),
                ]
            ),
        )

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(cursors)
        def cursors_hold(cursor: str) -> None:
            asyncio.run_coroutine_threadsafe(watch(cursor), loop).result(30)

        # An unknown id waits up to the read-your-writes bound (3 s) before NOT_FOUND: few examples.
        @settings(
            max_examples=4,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(hostile_text)
        def ids_hold(message_id: str) -> None:
            asyncio.run_coroutine_threadsafe(lookups(message_id), loop).result(60)

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(cursors_hold)
        await asyncio.to_thread(ids_hold)
        # Still serving.
        reply = await stub.SendMessage(send_request(body="after the forged cursors"), metadata=ACCOUNT)
        await wait_for_status(stub, reply.message.id, {st.DELIVERED})


@s.composite
def hostile_list_requests(draw) -> api.ListMessagesRequest:
    request = api.ListMessagesRequest(
        statuses=draw(s.lists(s.integers(min_value=-(2**31), max_value=2**31 - 1), max_size=20)),
        to=draw(s.one_of(s.just(""), hostile_text)),
        tag=draw(s.one_of(s.just(""), hostile_text)),
        page_size=draw(s.integers(min_value=-(2**31), max_value=2**31 - 1)),
        page_token=draw(
            s.one_of(
                s.just(""), hostile_text, s.binary(max_size=300).map(lambda raw: base64.urlsafe_b64encode(raw).decode())
            )
        ),
    )
    setattr(request, "from", draw(s.one_of(s.just(""), hostile_text)))
    for name in ("created_after", "created_before"):
        if draw(s.booleans()):
            getattr(request, name).CopyFrom(timestamp_pb2.Timestamp(seconds=draw(seconds), nanos=draw(nanos)))
    return request


async def test_hostile_lists_streams_and_inbound_cursors_are_client_errors(platform):
    """The RPCs the first two properties leave out: ListMessages filters (unknown enum values,
    negative and huge page sizes, forged page tokens, out-of-range times), SendStream items and
    WatchInbound cursors."""
    async with grpc.aio.insecure_channel(platform.intake_address) as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        outcomes: dict[str, int] = {}

        def count(name: str) -> None:
            outcomes[name] = outcomes.get(name, 0) + 1

        async def listing(request: api.ListMessagesRequest) -> None:
            try:
                await stub.ListMessages(request, metadata=ACCOUNT, timeout=10)
                count("list OK")
            except grpc.aio.AioRpcError as error:
                _check(error)
                count(f"list {error.code().name}")

        async def streamed(requests: list[api.SendMessageRequest]) -> None:
            call = stub.SendStream(metadata=ACCOUNT, timeout=30)
            try:
                for n, request in enumerate(requests):
                    await call.write(api.SendStreamRequest(message=request, client_ref=f"r{n}"))
                await call.done_writing()
                answers = [answer async for answer in call]
                # One answer per item, in order, each accepted or a client error: the stream goes on.
                assert [a.client_ref for a in answers] == [f"r{n}" for n in range(len(requests))]
                for answer in answers:
                    assert answer.WhichOneof("outcome") in ("accepted", "error")
                    assert answer.error.grpc_code not in {c.value[0] for c in SERVER_FAULTS}
                    count(f"stream item {answer.WhichOneof('outcome')}")
            except grpc.aio.AioRpcError as error:
                _check(error)
                count(f"stream {error.code().name}")

        async def inbound(cursor: str) -> None:
            call = stub.WatchInbound(api.WatchInboundRequest(cursor=cursor), metadata=ACCOUNT)
            try:
                async with asyncio.timeout(5):
                    await call.read()
                count("inbound OK")
            except grpc.aio.AioRpcError as error:
                _check(error)
                count(f"inbound {error.code().name}")
            except TimeoutError:
                pass
            finally:
                call.cancel()

        bounded = settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )

        @bounded
        @given(hostile_list_requests())
        def lists_hold(request):
            asyncio.run_coroutine_threadsafe(listing(request), loop).result(30)

        @settings(
            max_examples=15,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(s.lists(hostile_requests(), min_size=1, max_size=6))
        def streams_hold(requests):
            asyncio.run_coroutine_threadsafe(streamed(requests), loop).result(60)

        @bounded
        @given(s.one_of(hostile_text, s.binary(max_size=200).map(lambda raw: base64.urlsafe_b64encode(raw).decode())))
        def inbound_cursors_hold(cursor):
            asyncio.run_coroutine_threadsafe(inbound(cursor), loop).result(30)

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(lists_hold)
        await asyncio.to_thread(streams_hold)
        await asyncio.to_thread(inbound_cursors_hold)
        # The strategies reached both sides of each check.
        assert outcomes.get("list INVALID_ARGUMENT", 0) and outcomes.get("list OK", 0), outcomes
        assert outcomes.get("stream item error", 0) and outcomes.get("inbound INVALID_ARGUMENT", 0), outcomes
        reply = await stub.SendMessage(send_request(body="after the hostile lists"), metadata=ACCOUNT)
        await wait_for_status(stub, reply.message.id, {st.DELIVERED})


# Bytes that are no protocol buffers message: field 1 with wire type 7, which does not exist.
NOT_PROTOBUF = b"\x0f\xff\xff"


async def test_bytes_that_are_not_the_request_message_are_a_client_error_on_every_kind_of_method(platform):
    raw = {"request_serializer": None, "response_deserializer": None}  # bytes as they are
    async with grpc.aio.insecure_channel(platform.intake_address) as channel:
        calls = {
            "/smsgw.v1.MessagingService/SendMessage": channel.unary_unary(
                "/smsgw.v1.MessagingService/SendMessage", **raw
            )(NOT_PROTOBUF, metadata=ACCOUNT, timeout=10),
            "/smsgw.v1.MessagingService/WatchMessages": channel.unary_stream(
                "/smsgw.v1.MessagingService/WatchMessages", **raw
            )(NOT_PROTOBUF, metadata=ACCOUNT, timeout=10).read(),
            "/smsgw.v1.MessagingService/SendStream": channel.stream_stream(
                "/smsgw.v1.MessagingService/SendStream", **raw
            )(iter([NOT_PROTOBUF]), metadata=ACCOUNT, timeout=10).read(),
        }
        for method, call in calls.items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert error_info_of(refused.value).reason == "MALFORMED_REQUEST", method
            assert method in refused.value.details()
        # ...and the service goes on: a good request right after is accepted.
        reply = await api_grpc.MessagingServiceStub(channel).SendMessage(send_request(), metadata=ACCOUNT)
        assert reply.message.id
    # The Android phones' stream reads its frames itself: the same answer there.
    async with grpc.aio.insecure_channel(platform.address("carrier-adapter")) as channel:
        connect = channel.stream_stream("/smsgw.v1.DeviceGatewayService/Connect", **raw)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await connect(iter([NOT_PROTOBUF]), timeout=10).read()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info_of(refused.value).reason == "MALFORMED_REQUEST"
