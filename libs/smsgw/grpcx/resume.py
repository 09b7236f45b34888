"""Client side: a Watch stream that goes on where it was when the server ends it for falling
behind.

intake keeps at most `SMSGW_WATCH_QUEUE_SIZE` updates waiting for a stream's client; a client
that reads slower than they come has its WatchMessages, WatchMessageBatches or WatchInbound
ended with RESOURCE_EXHAUSTED, reason WATCH_FELL_BEHIND and `metadata.cursor`, the position
after the last update (or batch) it was sent. Opened again from that cursor, the stream reads what it missed from the
store or the log: nothing is lost, nothing is sent twice (docs/errors.md). Every other error
ends the iteration, for the caller to decide (e.g. resume from the last cursor it kept after a
restart of the server).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

import grpc

from smsgw.domain import errors as de

from .errors import error_info_of


def fell_behind_cursor(error: grpc.RpcError) -> str | None:
    """The cursor to resume from when `error` ended a stream that fell behind; None otherwise."""
    info = error_info_of(error)
    if info is None or info.reason != de.WatchFellBehind.reason:
        return None
    return info.metadata.get("cursor") or None


async def resuming(
    open_stream: Callable[[str], Any],
    cursor: str = "",
    *,
    on_fell_behind: Callable[[str], None] | None = None,
) -> AsyncGenerator[Any, None]:
    """The updates of `open_stream(cursor)` (e.g. `lambda c: stub.WatchMessages(
    WatchMessagesRequest(cursor=c), metadata=...)`), opened again from the server's cursor
    each time it ends the stream for falling behind (`on_fell_behind` is told that cursor).

    Closing this iteration (`aclose()`, or leaving an `async with aclosing(...)`) cancels the
    stream at once: otherwise the server would go on sending to a call nobody reads until the
    garbage collector found it, and, its queue full, end it for falling behind meanwhile."""
    while True:
        call = open_stream(cursor)
        try:
            async for update in call:
                yield update
            return
        except grpc.aio.AioRpcError as error:
            resume_from = fell_behind_cursor(error)
            if resume_from is None:
                raise
            cursor = resume_from
            if on_fell_behind is not None:
                on_fell_behind(cursor)
        finally:
            call.cancel()  # a no-op for a call that has ended
