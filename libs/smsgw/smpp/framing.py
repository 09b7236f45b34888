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
        # drain() from several tasks at once is legal on 3.11, but serialising
        # writes keeps a slow peer's back-pressure from interleaving with
        # half-written frames if a write path ever becomes multi-step.
        self._write_lock = asyncio.Lock()

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
        data = encode_pdu(pdu)
        async with self._write_lock:
            if self._writer.is_closing():
                raise ConnectionClosed("connection is closing")
            try:
                self._writer.write(data)
                await self._writer.drain()
            except ConnectionError as exc:
                raise ConnectionClosed(str(exc) or type(exc).__name__) from exc

    def abort(self) -> None:
        """Drop the connection at once, as a network failure would."""
        self._writer.transport.abort()

    async def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass
