"""WatchMessages cursors: a position in the log, per partition (pure).

A cursor is the next offset to deliver for every partition the stream has
covered. Resuming delivers exactly the records at or after it: no gap, no
duplicate, on any intake replica (offsets are the log's, not a replica's).
"""

from __future__ import annotations

import base64
import json

from smsgw.domain import errors as de


def encode_cursor(positions: dict[int, int]) -> str:
    raw = json.dumps({str(p): o for p, o in sorted(positions.items())}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


#: A cursor names at most one offset per partition: a few hundred characters. Anything much
#: longer is not one of ours, and is refused before it is decoded.
MAX_CURSOR_CHARS = 4096


def decode_cursor(cursor: str) -> dict[int, int]:
    if len(cursor) > MAX_CURSOR_CHARS:
        raise de.InvalidArgument(f"cursor: {len(cursor)} characters; not a cursor this API issued, pass the last "
                                 "MessageUpdate.cursor unchanged", field="cursor")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        positions = {int(p): int(o) for p, o in data.items()}
    except (ValueError, AttributeError, TypeError, RecursionError, OverflowError):
        raise de.InvalidArgument("cursor: not a cursor this API issued; pass the last MessageUpdate.cursor unchanged",
                                 field="cursor") from None
    if any(o < 0 or p < 0 for p, o in positions.items()):
        raise de.InvalidArgument("cursor: malformed", field="cursor")
    return positions


def is_after(positions: dict[int, int], partition: int, offset: int) -> bool:
    """True when the record at (partition, offset) has not been delivered under `positions`."""
    return offset >= positions.get(partition, 0)
