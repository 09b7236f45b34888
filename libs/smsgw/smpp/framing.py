"""Reading and writing whole PDUs on an asyncio stream.

SMPP frames by the first four octets (command_length). A length we do not
believe leaves no way to find the next PDU, so it ends the connection
(FramingError); a readable frame whose body is bad is reported per PDU
(PduError with the header) and the stream stays usable.
"""

from __future__ import annotations

import asyncio
import struct

from smsgw.smpp import constants as c
from smsgw.smpp.pdu import HEADER_LENGTH, Pdu, PduError, decode_pdu, encode_pdu

#: Upper bound on one PDU. The largest legitimate one is a submit_sm/deliver_sm
#: with a 64 KiB message_payload; anything bigger is a broken or hostile peer,
#: and believing it would make us buffer gigabytes.
MAX_PDU_LENGTH = 70_000


class ConnectionClosed(Exception):
    """The peer closed the connection (cleanly or not)."""


class FramingError(PduError):
    """The command_length cannot be trusted; the connection must be closed."""


class PduStream:
    """A TCP connection carrying SMPP PDUs. Not thread-safe; one event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer
        # PDUs sent in one turn of the event loop leave in one write: a window of submits (or a
        # burst of receipts and their responses) costs one system call, not one each. A write was
        # ~20 µs of CPU on loopback, several per message.
        self._outbox: list[bytes] = []

    @property
    def peername(self) -> str:
        peer = self._writer.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    async def read(self) -> Pdu:
        """Next PDU. Raises ConnectionClosed, FramingError, or PduError (frame intact, body bad)."""
        try:
            prefix = await self._reader.readexactly(4)
            (length,) = struct.unpack(">I", prefix)
            if not HEADER_LENGTH <= length <= MAX_PDU_LENGTH:
                raise FramingError(f"command_length {length} out of range", c.ESME_RINVCMDLEN)
            rest = await self._reader.readexactly(length - 4)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise ConnectionClosed(str(exc) or type(exc).__name__) from exc
        return decode_pdu(prefix + rest)

    async def send(self, pdu: Pdu) -> None:
        """Queues the PDU for this turn's write, then waits while the peer is not reading
        (the transport's back-pressure). PDUs leave in the order they were sent."""
        data = encode_pdu(pdu)
        if self._writer.is_closing():
            raise ConnectionClosed("connection is closing")
        self._outbox.append(data)
        if len(self._outbox) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        try:
            await self._writer.drain()
        except ConnectionError as exc:
            raise ConnectionClosed(str(exc) or type(exc).__name__) from exc

    def _flush(self) -> None:
        if not self._outbox:
            return
        data = b"".join(self._outbox) if len(self._outbox) > 1 else self._outbox[0]
        self._outbox.clear()
        if not self._writer.is_closing():
            self._writer.write(data)

    def abort(self) -> None:
        """Drop the connection at once, as a network failure would."""
        self._writer.transport.abort()

    async def close(self) -> None:
        self._flush()  # what was sent before the close leaves before it (an unbind_resp, say)
        if not self._writer.is_closing():
            self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass
