"""Watch stream cursors: a position in the log, per partition, signed for one account (pure).

A cursor is the next offset to deliver for every partition the stream has
covered. Resuming delivers exactly the records at or after it: no gap, no
duplicate, on any intake replica (offsets are the log's, not a replica's).

Each cursor carries an HMAC of its positions and of the account it was issued to, under a
secret every intake replica shares (SMSGW_CURSOR_SECRET_FILE). A cursor somebody wrote or
changed (say, every offset 0, to make the server read a whole partition from the store) or
one issued to another account is refused before anything is read: a cursor is a position the
server handed out, never a query the client composes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from smsgw.domain import errors as de

#: Signs cursors when no secret is configured: development only (intake refuses to start in
#: production without SMSGW_CURSOR_SECRET_FILE). Public, so anybody can forge with it.
DEVELOPMENT_SECRET = b"smsgw development cursor secret: not for production"
_MAC_BYTES = 16  # 128 bits: a forgery is a 2^-128 guess per try
_DOMAIN = b"smsgw-watch-cursor-v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode())


class CursorCodec:
    """Turns positions into the cursors of one account's streams and back, refusing any cursor
    this secret did not sign for that account."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the cursor secret must be at least 16 bytes (e.g. `openssl rand -hex 32`)")
        # Keyed once per codec rather than per cursor (a stream signs one with every update).
        self._keyed = hmac.new(secret, _DOMAIN + b"\0", hashlib.sha256)

    def _mac(self, account_id: str, payload: str) -> bytes:
        mac = self._keyed.copy()
        mac.update(b"%s\0%s" % (account_id.encode(), payload.encode()))
        return mac.digest()[:_MAC_BYTES]

    def encode(self, account_id: str, positions: dict[int, int]) -> str:
        payload = encode_cursor(positions)
        return f"{payload}.{_b64(self._mac(account_id, payload))}"

    def decode(self, account_id: str, cursor: str) -> dict[int, int]:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise _not_ours(f"{len(cursor)} characters")
        payload, dot, mac = cursor.partition(".")
        try:
            given = _unb64(mac) if dot else b""
        except (ValueError, binascii.Error):
            given = b""
        if not hmac.compare_digest(given, self._mac(account_id, payload)):
            # One answer for a forged, altered, unsigned or another account's cursor: which of
            # them it was would only help whoever is guessing.
            raise _not_ours("its signature does not match")
        return decode_cursor(payload)


def _not_ours(why: str) -> de.InvalidArgument:
    return de.InvalidArgument(
        f"cursor: not a cursor this API issued to this account ({why}); pass the last "
        "cursor the stream sent you unchanged, or none to start from now",
        field="cursor",
    )


def encode_cursor(positions: dict[int, int]) -> str:
    """The unsigned positions (CursorCodec signs them)."""
    # The JSON `json.dumps({"0": 12, ...}, separators=(",", ":"))` writes, formatted directly at
    # half its cost: a stream encodes a cursor with every update it sends.
    raw = "{" + ",".join([f'"{p}":{o}' for p, o in sorted(positions.items())]) + "}"
    return _b64(raw.encode())


#: A cursor names at most one offset per partition: a few hundred characters. Anything much
#: longer is not one of ours, and is refused before it is decoded.
MAX_CURSOR_CHARS = 4096


def decode_cursor(cursor: str) -> dict[int, int]:
    """Unsigned positions back (CursorCodec checks the signature first)."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise de.InvalidArgument(
            f"cursor: {len(cursor)} characters; not a cursor this API issued, pass the last "
            "MessageUpdate.cursor unchanged",
            field="cursor",
        )
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        positions = {int(p): int(o) for p, o in data.items()}
    except (ValueError, AttributeError, TypeError, RecursionError, OverflowError):
        raise de.InvalidArgument(
            "cursor: not a cursor this API issued; pass the last MessageUpdate.cursor unchanged", field="cursor"
        ) from None
    if any(o < 0 or p < 0 for p, o in positions.items()):
        raise de.InvalidArgument("cursor: malformed", field="cursor")
    return positions


def is_after(positions: dict[int, int], partition: int, offset: int) -> bool:
    """True when the record at (partition, offset) has not been delivered under `positions`."""
    return offset >= positions.get(partition, 0)
