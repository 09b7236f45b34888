"""Bytes that are not the method's request message: a client error, not grpc's INTERNAL.

grpc decodes a request before any servicer code runs, and answers a message that does not parse
with INTERNAL ("Exception deserializing request!"), which says "our fault, retry" to a client
whose request can never succeed. `refusing_malformed` gives every method a decoder that keeps the
failure instead of raising it, and answers INVALID_ARGUMENT / MALFORMED_REQUEST naming the
message type, for unary requests and for each message of a request stream alike.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from smsgw.domain import errors as de

from .errors import abort_with


class _Undecodable:
    """What a request decodes to when it is not a message of the method's type."""

    def __init__(self, error: Exception):
        self.error = error


def _malformed(method: str) -> de.MalformedRequest:
    return de.MalformedRequest(
        f"request: the bytes sent to {method} are not its request message (protocol buffers); "
        "send the message the service definition names (protos/smsgw/v1/), encoded by a gRPC client",
        metadata={"method": method},
    )


def refusing_malformed(
    method: str, handler: grpc.RpcMethodHandler, on_call: Callable[[], None] | None = None
) -> grpc.RpcMethodHandler:
    """`handler` (of `method`, e.g. "/smsgw.v1.MessagingService/SendMessage") with a decoder that
    keeps a failure instead of raising it, and behaviours that answer such a request
    INVALID_ARGUMENT / MALFORMED_REQUEST; `on_call` is called once at the start of every call.
    Made once per method when the server registers it (smsgw.grpcx.server), not per call."""
    if handler.request_deserializer is None:
        return handler
    decode = handler.request_deserializer

    def tolerant(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as error:  # noqa: BLE001 - whatever the decoder raises, the bytes were not the message
            return _Undecodable(error)

    if handler.unary_unary is not None or handler.unary_stream is not None:
        return _replace(handler, tolerant, _checked_unary(handler, method, on_call))
    return _replace(handler, tolerant, _checked_stream(handler, method, on_call))


def _replace(handler: grpc.RpcMethodHandler, decode: Callable[[bytes], Any], behaviours: dict) -> grpc.RpcMethodHandler:
    # RpcMethodHandler is a namedtuple in grpc; _replace is its public way to change a field.
    return handler._replace(request_deserializer=decode, **behaviours)


def _checked_unary(handler: grpc.RpcMethodHandler, method: str, on_call: Callable[[], None] | None) -> dict:
    kind = "unary_unary" if handler.unary_unary is not None else "unary_stream"
    behaviour = getattr(handler, kind)

    async def refuse(request, context) -> None:
        if on_call is not None:
            on_call()
        if isinstance(request, _Undecodable):
            await abort_with(context, _malformed(method))

    if inspect.isasyncgenfunction(behaviour):

        async def replies(request, context):
            await refuse(request, context)
            async for reply in behaviour(request, context):
                yield reply

        return {kind: replies}

    async def reply(request, context):
        await refuse(request, context)
        return await behaviour(request, context)

    return {kind: reply}


def _checked_stream(handler: grpc.RpcMethodHandler, method: str, on_call: Callable[[], None] | None) -> dict:
    kind = "stream_unary" if handler.stream_unary is not None else "stream_stream"
    behaviour = getattr(handler, kind)

    async def checked(requests: AsyncIterator[Any], context) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, _Undecodable):
                await abort_with(context, _malformed(method))
            yield request

    if inspect.isasyncgenfunction(behaviour):

        async def replies(requests, context):
            if on_call is not None:
                on_call()
            async for reply in behaviour(checked(requests, context), context):
                yield reply

        return {kind: replies}

    async def reply(requests, context):
        if on_call is not None:
            on_call()
        return await behaviour(checked(requests, context), context)

    return {kind: reply}


async def refuse_if_malformed(request: Any, context: grpc.aio.ServicerContext, method: str) -> None:
    """For a servicer that reads its request stream with context.read(), which the wrapped
    behaviour does not see: ends the call INVALID_ARGUMENT / MALFORMED_REQUEST if `request` did not decode."""
    if isinstance(request, _Undecodable):
        await abort_with(context, _malformed(method))
