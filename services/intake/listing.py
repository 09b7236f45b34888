"""ListMessages: filtering and stable page tokens over the read model (pure)."""

from __future__ import annotations

import base64
import json

from smsgw.domain import errors as de
from smsgw.domain.message_state import MessageState
from smsgw.projections.query import MessageFilter

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


# One filter for every backend: the in-memory fallback and the SQL stores must agree on it.
ListFilter = MessageFilter


def _sort_key(state: MessageState) -> tuple[float, str]:
    # Newest first; the id breaks ties so the order is total and pages never overlap.
    return (-state.created_at.timestamp(), state.message_id)


def list_page(states: list[MessageState], flt: ListFilter, page_size: int, page_token: str
              ) -> tuple[list[MessageState], str]:
    if page_size < 0:
        raise de.InvalidArgument("page_size: must be 0 (default) to 1000", field="page_size")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    after = decode_token(page_token, flt) if page_token else None
    ordered = sorted((s for s in states if flt.matches(s)), key=_sort_key)
    if after is not None:
        ordered = [s for s in ordered if _sort_key(s) > after]
    page = ordered[:size]
    next_token = encode_token(_sort_key(page[-1]), flt) if len(ordered) > size else ""
    return page, next_token


def encode_token(position: tuple[float, str], flt: ListFilter) -> str:
    raw = json.dumps({"t": position[0], "i": position[1], "f": flt.digest()})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_token(token: str, flt: ListFilter) -> tuple[float, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        position = (float(data["t"]), str(data["i"]))
        digest = data["f"]
    except (ValueError, KeyError, TypeError):
        raise de.InvalidPageToken("page_token: not a token this API issued; pass next_page_token unchanged",
                                  field="page_token") from None
    if digest != flt.digest():
        raise de.InvalidPageToken("page_token: was issued for other filters; keep the filters the same across pages",
                                  field="page_token")
    return position
