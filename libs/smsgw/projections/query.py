"""ListMessages over a store: the filter, keyset page tokens and the SQL they become (pure).

Newest first (the rule `MessageFilter.matches` states in Python, which the store contract
tests hold the SQL to), the message id breaking ties (ascending), `created_after` inclusive, `created_before`
exclusive, messages without a MessageQueued (status UNSPECIFIED) never listed.
`tag` lists the messages carrying that tag.

A page token is the keyset position of the last message of the page
(created_at in microseconds, id) plus a digest of the filters. Keyset, not
offset: messages inserted or changed while a client pages never shift what the
next page starts from, so no message is listed twice and none that existed
before the first page is skipped.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from smsgw.domain import errors as de
from smsgw.domain.message_state import MessageState

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_INT64_MAX = 2**63 - 1


def tags_of(state: MessageState) -> tuple[str, ...]:
    """The tags a message is listed under: `state.tags` (from MessageQueued.tags), each once.

    The same rule as `MessageFilter.matches` (`tag in state.tags`); the one place to change
    if tags ever come from elsewhere (then bump store.SCHEMA_VERSION so stores are rebuilt).
    """
    return tuple(dict.fromkeys(tag for tag in state.tags if tag))


def to_micros(at: datetime | None) -> int | None:
    """Exact integer microseconds since the epoch (a float would round at this magnitude)."""
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - _EPOCH) // _MICROSECOND


@dataclass(frozen=True)
class MessageFilter:
    """What ListMessages asks for."""

    account_id: str
    statuses: frozenset[int] = frozenset()
    to: str = ""
    sender: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None
    tag: str = ""

    def matches(self, state: MessageState) -> bool:
        """The filter as a predicate (the reference the SQL must agree with)."""
        return (
            state.status != 0
            and state.created_at is not None
            and state.account_id == self.account_id
            and (not self.statuses or state.status in self.statuses)
            and (not self.to or state.to == self.to)
            and (not self.sender or state.sender == self.sender)
            and (self.created_after is None or state.created_at >= self.created_after)
            and (self.created_before is None or state.created_at < self.created_before)
            and (not self.tag or self.tag in tags_of(state))
        )

    def digest(self) -> str:
        raw = json.dumps(
            [
                self.account_id,
                sorted(self.statuses),
                self.to,
                self.sender,
                to_micros(self.created_after),
                to_micros(self.created_before),
                self.tag,
            ]
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


Position = tuple[int, str]  # (created_at in microseconds, message id)


def page_size_of(page_size: int) -> int:
    if page_size < 0:
        raise de.InvalidArgument("page_size: must be 0 (default) to 1000", field="page_size")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(position: Position, flt: MessageFilter) -> str:
    raw = json.dumps({"c": position[0], "i": position[1], "f": flt.digest()}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_token(token: str, flt: MessageFilter) -> Position:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        created, message_id, digest = data["c"], data["i"], data["f"]
        if type(created) is not int or not isinstance(message_id, str) or not -_INT64_MAX <= created <= _INT64_MAX:
            raise ValueError(token)
    except (ValueError, KeyError, TypeError):
        raise de.InvalidPageToken(
            "page_token: not a token this API issued; pass next_page_token unchanged", field="page_token"
        ) from None
    if digest != flt.digest():
        raise de.InvalidPageToken(
            "page_token: was issued for other filters; keep the filters the same across pages", field="page_token"
        )
    return created, message_id


@dataclass(frozen=True)
class ListQuery:
    sql: str
    params: list
    limit: int  # rows asked for: page size + 1, the extra one only says "there is a next page"


def list_query(
    flt: MessageFilter,
    page_size: int,
    page_token: str,
    *,
    placeholder: Callable[[int], str],
    any_of: Callable[[str, int], str],
) -> ListQuery:
    """The SELECT behind one page, in the dialect given by `placeholder` (1-based) and `any_of`.

    `any_of(column, n)` renders "column is one of the n-th parameter (a list)"; SQLite
    expands it to IN (?, ...), PostgreSQL to = ANY($n).
    """
    size = page_size_of(page_size)
    after = decode_token(page_token, flt) if page_token else None
    params: list = []

    def p(value) -> str:
        params.append(value)
        return placeholder(len(params))

    where = ["m.account_id = " + p(flt.account_id), "m.status <> 0", "m.created_at IS NOT NULL"]
    if flt.statuses:
        params.append(sorted(flt.statuses))
        where.append(any_of("m.status", len(params)))
    if flt.to:
        where.append("m.to_addr = " + p(flt.to))
    if flt.sender:
        where.append("m.from_addr = " + p(flt.sender))
    if flt.created_after is not None:
        where.append("m.created_at >= " + p(to_micros(flt.created_after)))
    if flt.created_before is not None:
        where.append("m.created_at < " + p(to_micros(flt.created_before)))
    if flt.tag:
        where.append("EXISTS (SELECT 1 FROM message_tags t WHERE t.message_id = m.id AND t.tag = " + p(flt.tag) + ")")
    if after is not None:
        # Newest first, id ascending on ties: the rows strictly after `after` in that order.
        # The first conjunct is a plain range bound an index on created_at can use.
        created, message_id = after
        c1, c2, i = p(created), p(created), p(message_id)
        where.append(f"m.created_at <= {c1} AND (m.created_at < {c2} OR m.id > {i})")
    sql = (
        "SELECT m.view, m.created_at, m.id FROM messages m WHERE "
        + " AND ".join(where)
        + " ORDER BY m.created_at DESC, m.id ASC LIMIT "
        + p(size + 1)
    )
    return ListQuery(sql=sql, params=params, limit=size + 1)


def page_from_rows(rows: list[tuple[bytes, int, str]], flt: MessageFilter, limit: int) -> tuple[list[bytes], str]:
    """Splits the fetched rows into this page's views and the next page's token."""
    page = rows[: limit - 1]
    token = encode_token((page[-1][1], page[-1][2]), flt) if len(rows) >= limit and page else ""
    return [row[0] for row in page], token
