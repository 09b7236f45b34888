"""Bytes that are not the method's request message: a client error, not grpc's INTERNAL.

grpc decodes a request before any servicer code runs, and answers a message that does not parse
with INTERNAL ("Exception deserializing request!"), which says "our fault, retry" to a client
whose request can never succeed. This interceptor gives every method a decoder that keeps the
failure instead of raising it, and answers INVALID_ARGUMENT / MALFORMED_REQUEST naming the
message type, for unary requests and for each message of a request stream alike.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
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


class RefuseMalformedRequests(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        decode = handler.request_deserializer
        method = handler_call_details.method

        def tolerant(data: bytes) -> Any:
            try:
                return decode(data)
            except Exception as error:  # noqa: BLE001 - whatever the decoder raises, the bytes were not the message
                return _Undecodable(error)

        if handler.unary_unary is not None or handler.unary_stream is not None:
            return _replace(handler, tolerant, _checked_unary(handler, method))
        return _replace(handler, tolerant, _checked_stream(handler, method))


def _replace(handler: grpc.RpcMethodHandler, decode: Callable[[bytes], Any], behaviours: dict) -> grpc.RpcMethodHandler:
    # RpcMethodHandler is a namedtuple in grpc; _replace is its public way to change a field.
    return handler._replace(request_deserializer=decode, **behaviours)


def _checked_unary(handler: grpc.RpcMethodHandler, method: str) -> dict:
    kind = "unary_unary" if handler.unary_unary is not None else "unary_stream"
    behaviour = getattr(handler, kind)

    async def refuse(request, context) -> None:
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


def _checked_stream(handler: grpc.RpcMethodHandler, method: str) -> dict:
    kind = "stream_unary" if handler.stream_unary is not None else "stream_stream"
    behaviour = getattr(handler, kind)

    async def checked(requests: AsyncIterator[Any], context) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, _Undecodable):
                await abort_with(context, _malformed(method))
            yield request

    if inspect.isasyncgenfunction(behaviour):

        async def replies(requests, context):
            async for reply in behaviour(checked(requests, context), context):
                yield reply

        return {kind: replies}

    async def reply(requests, context):
        return await behaviour(checked(requests, context), context)

    return {kind: reply}


async def refuse_if_malformed(request: Any, context: grpc.aio.ServicerContext, method: str) -> None:
    """For a servicer that reads its request stream with context.read(), which no interceptor
    sees: ends the call INVALID_ARGUMENT / MALFORMED_REQUEST if `request` did not decode."""
    if isinstance(request, _Undecodable):
        await abort_with(context, _malformed(method))
