"""ListMessages: filtering and stable page tokens over the read model (pure)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from smsgw.domain import errors as de
from smsgw.domain.message_state import MessageState

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True)
class ListFilter:
    account_id: str
    statuses: frozenset[int] = frozenset()
    to: str = ""
    sender: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None
    tag: str = ""

    def matches(self, state: MessageState) -> bool:
        return (
            state.status != 0
            and state.account_id == self.account_id
            and (not self.statuses or state.status in self.statuses)
            and (not self.to or state.to == self.to)
            and (not self.sender or state.sender == self.sender)
            and (self.created_after is None or state.created_at >= self.created_after)
            and (self.created_before is None or state.created_at < self.created_before)
            and (not self.tag or self.tag in state.tags)
        )

    def digest(self) -> str:
        raw = json.dumps([self.account_id, sorted(self.statuses), self.to, self.sender,
                          str(self.created_after), str(self.created_before), self.tag])
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


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
