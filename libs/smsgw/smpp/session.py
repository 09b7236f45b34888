"""One SMPP connection: sequence numbers, request/response matching, the chores.

Both ends of SMPP are symmetrical at this level: each side sends requests and
answers the other's. This class owns what is the same for our ESME client and
our SMSC simulator:

* matching a response (or a generic_nack) to the request with its sequence number;
* answering enquire_link and unbind, and generic_nack for commands we do not
  implement or cannot decode;
* running the owner's handler for every other request as its own task, so a
  slow handler (e.g. the client's on_deliver writing to Kafka) never stops the
  reader from seeing responses to our own requests.

It knows nothing about binding, windows or reconnecting: those are policies of
the owner. A session dies once; the owner makes a new one for a new connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from smsgw.smpp import constants as c
from smsgw.smpp.framing import ConnectionClosed, FramingError, PduStream
from smsgw.smpp.pdu import EnquireLink, GenericNack, Pdu, PduError, Unbind, UnknownPdu, with_sequence

RequestHandler = Callable[["SmppSession", Pdu], Awaitable[None]]

#: Sequence numbers run 0x00000001..0x7FFFFFFF (§5.1.4) and then wrap.
_MAX_SEQUENCE = 0x7FFFFFFF


class SmppSession:
    def __init__(self, stream: PduStream, *, handler: RequestHandler, name: str, logger: logging.Logger):
        self._stream = stream
        self._handler = handler
        self._log = logger
        self.name = name
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        self._sequence = 0
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._close_callbacks: list[Callable[[], None]] = []
        self.close_reason: str | None = None

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read_loop(), name=f"smpp-reader-{self.name}")

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` synchronously the moment the session dies.

        Owners use it to flip their own state in the same step: waiting for a
        task to notice leaves a window where "bound" is claimed on a dead link.
        """
        if self.closed:
            callback()
        else:
            self._close_callbacks.append(callback)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @property
    def outstanding(self) -> int:
        """Our requests still waiting for a response."""
        return len(self._pending)

    def abort(self, reason: str) -> None:
        """Drop the connection now (no unbind): pending requests fail with ConnectionClosed."""
        self._stream.abort()
        self._finish(reason)

    async def close(self, reason: str = "closed") -> None:
        """Close the transport and stop the reader; call after the unbind exchange."""
        self._finish(reason)
        await self._stream.close()
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def drain_handlers(self, timeout: float) -> None:
        """Let running request handlers finish (bounded), then cancel the rest.

        A handler cancelled before it answered means the peer never got a
        response and will resend the PDU, which is the safe outcome for a
        deliver_sm whose processing was cut short.
        """
        tasks = set(self._handler_tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # --- sending --------------------------------------------------------------

    def _next_sequence(self) -> int:
        # Skip numbers still in flight: after a wrap, a slow request could
        # otherwise be answered with another request's response.
        for _ in range(len(self._pending) + 1):
            self._sequence = self._sequence % _MAX_SEQUENCE + 1
            if self._sequence not in self._pending:
                return self._sequence
        raise RuntimeError("no free sequence number")  # unreachable: pending is finite

    async def send(self, pdu: Pdu) -> None:
        """Send a PDU as is (responses keep the request's sequence number)."""
        if self.closed:
            raise ConnectionClosed(self.close_reason or "session closed")
        await self._stream.send(pdu)

    async def request(self, pdu: Pdu, timeout: float) -> Pdu:
        """Send a request with a fresh sequence number; return its response or generic_nack.

        Raises ConnectionClosed if the connection goes before the answer, and
        TimeoutError if none comes in ``timeout`` seconds (the late answer, if
        any, is then dropped).
        """
        if self.closed:
            raise ConnectionClosed(self.close_reason or "session closed")
        pdu = with_sequence(pdu, self._next_sequence())
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self._pending[pdu.sequence_number] = future
        try:
            await self._stream.send(pdu)
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(pdu.sequence_number, None)

    # --- receiving ------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = "connection closed by peer"
        try:
            while True:
                try:
                    pdu = await self._stream.read()
                except FramingError as exc:
                    reason = f"framing error: {exc}"
                    await self._try_send(GenericNack(command_status=exc.status))
                    return
                except PduError as exc:
                    self._on_bad_pdu(exc)
                    continue
                if pdu.is_response:
                    self._on_response(pdu)
                elif isinstance(pdu, UnknownPdu):
                    self._log.info("%s: generic_nack for unsupported command 0x%08X", self.name, pdu.command_id)
                    await self._try_send(
                        GenericNack(command_status=c.ESME_RINVCMDID, sequence_number=pdu.sequence_number)
                    )
                elif isinstance(pdu, EnquireLink):
                    await self._try_send(pdu.response())
                elif isinstance(pdu, Unbind):
                    await self._try_send(pdu.response())
                    reason = "unbound by peer"
                    return
                else:
                    task = asyncio.create_task(self._run_handler(pdu), name=f"smpp-handler-{self.name}")
                    self._handler_tasks.add(task)
                    task.add_done_callback(self._handler_tasks.discard)
        except ConnectionClosed as exc:
            reason = f"connection lost: {exc}"
        finally:
            self._finish(reason)
            await self._stream.close()

    def _on_response(self, pdu: Pdu) -> None:
        future = self._pending.pop(pdu.sequence_number, None)
        if future is not None and not future.done():
            future.set_result(pdu)
        elif pdu.sequence_number:
            # A response after our timeout, or to nothing we sent; harmless.
            self._log.debug("%s: unmatched %s seq=%d", self.name, type(pdu).__name__, pdu.sequence_number)

    def _on_bad_pdu(self, exc: PduError) -> None:
        header = exc.header
        self._log.warning("%s: undecodable PDU: %s", self.name, exc)
        if header is None:
            return
        if c.is_response(header.command_id):
            # Our request was answered but we cannot read the answer: fail it
            # like a nack so the caller sees a status instead of a timeout.
            self._on_response(GenericNack(command_status=exc.status, sequence_number=header.sequence_number))
        else:
            task = asyncio.create_task(
                self._try_send(GenericNack(command_status=exc.status, sequence_number=header.sequence_number))
            )
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_tasks.discard)

    async def _run_handler(self, pdu: Pdu) -> None:
        try:
            await self._handler(self, pdu)
        except ConnectionClosed:
            pass  # the peer will resend what we could not answer
        except Exception:  # noqa: BLE001 - a failed handler is logged; the session goes on
            self._log.exception("%s: handler failed for %s", self.name, type(pdu).__name__)

    async def _try_send(self, pdu: Pdu) -> None:
        try:
            await self.send(pdu)
        except ConnectionClosed:
            pass

    def _finish(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self.close_reason = reason
        self._closed.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionClosed(reason))
        self._pending.clear()
        for callback in self._close_callbacks:
            callback()
        self._close_callbacks.clear()
        self._log.info("%s: session ended (%s)", self.name, reason)
