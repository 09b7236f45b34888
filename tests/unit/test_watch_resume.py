"""The client side of WATCH_FELL_BEHIND: `resuming` opens a stream again from the cursor the
server ended it with, and lets every other error through. Over real gRPC (loopback), against
a server that ends streams the way intake does (the statuses built by smsgw.grpcx.errors)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import grpc
import pytest

from smsgw.domain import errors as de
from smsgw.grpcx.errors import abort_with
from smsgw.grpcx.resume import fell_behind_cursor, resuming
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc


class EndsStreams(api_grpc.MessagingServiceServicer):
    """Each WatchMessages call sends the update after its cursor; calls from cursors "" and "1"
    are then ended for falling behind (cursor "1", "2"), the one from "2" with PERMISSION_DENIED."""

    def __init__(self) -> None:
        self.opened_from: list[str] = []

    async def WatchMessages(self, request, context):
        self.opened_from.append(request.cursor)
        after = int(request.cursor or 0) + 1
        yield api.MessageUpdate(event_id=f"e{after}", cursor=str(after))
        if after < 3:
            await abort_with(context, de.WatchFellBehind("fell behind", metadata={"cursor": str(after)}))
        await abort_with(context, de.PermissionDenied("not for you"))


@asynccontextmanager
async def serving(servicer: api_grpc.MessagingServiceServicer):
    """A stub of `servicer`, served on a loopback port for the block."""
    server = grpc.aio.server()
    api_grpc.add_MessagingServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield api_grpc.MessagingServiceStub(channel)
    finally:
        await server.stop(None)


async def test_resuming_opens_the_stream_again_from_the_servers_cursor_and_raises_other_errors():
    servicer = EndsStreams()
    async with serving(servicer) as stub:
        ends: list[str] = []
        seen: list[str] = []
        with pytest.raises(grpc.aio.AioRpcError) as other:
            async for update in resuming(
                lambda cursor: stub.WatchMessages(api.WatchMessagesRequest(cursor=cursor)),
                on_fell_behind=ends.append,
            ):
                seen.append(update.event_id)
        assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert fell_behind_cursor(other.value) is None  # not a stream to resume
        assert seen == ["e1", "e2", "e3"]
        assert ends == ["1", "2"] and servicer.opened_from == ["", "1", "2"]


class SendsThenWaits(api_grpc.MessagingServiceServicer):
    """Each WatchMessages call sends one update, then waits; `ended` is set when the call ends."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    async def WatchMessages(self, request, context):
        try:
            yield api.MessageUpdate(event_id="e1", cursor="1")
            await asyncio.sleep(60)
        finally:
            self.ended.set()


async def test_closing_the_iteration_cancels_the_stream_at_once():
    # A client that stops reading (e.g. a test that has what it waited for) must not leave the
    # server sending to a call nobody reads until the garbage collector finds it.
    servicer = SendsThenWaits()
    async with serving(servicer) as stub:
        kept_calls: list = []

        def open_stream(cursor: str):
            call = stub.WatchMessages(api.WatchMessagesRequest(cursor=cursor))
            kept_calls.append(call)  # as a caller's own bookkeeping might: no help from the GC
            return call

        updates = resuming(open_stream)
        assert (await anext(updates)).event_id == "e1"
        await updates.aclose()
        await asyncio.wait_for(servicer.ended.wait(), 5)
        assert kept_calls[0].cancelled()
