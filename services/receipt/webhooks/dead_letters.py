"""Where webhooks wait: pending (not yet delivered) and dead (given up on).

One row per (url, event id). A webhook is recorded *pending* before anyone
relies on it being sent (before the consumer commits the offset of the event
that caused it), is deleted once the receiver answered 2xx, and turns *dead*
when its retries ran out or its endpoint's queue was full. A letter that found
its endpoint's queue full was never really tried: it is sent again by itself
once the endpoint takes webhooks again (`take_overflow`). The others stay until
an operator redelivers them (`smsgw webhooks redeliver`). Pending rows left by
a crash are sent again at the next start: at least once, never lost.

This state is not in Kafka and cannot be rebuilt from it: the SQLite file must
live on a persistent volume.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from yarl import URL

from .payload import Webhook

PENDING = "pending"
DEAD = "dead"
QUEUE_FULL = "queue full"
#: A "queue full" letter taken to be sent again (`take_overflow`); one that is delivered leaves the
#: store, one that fails is buried with its own error; left by a crash, it is "queue full" again.
RESENDING = "queue full; being sent again"


def _parsed(url: str) -> URL | None:
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return None
    return parsed if parsed.scheme in ("http", "https") and parsed.host else None


def is_http_url(url: str) -> bool:
    return _parsed(url) is not None


def endpoint_of(url: str) -> str:
    """The unit of isolation (queue, worker, circuit breaker): scheme, host and port.

    Not the host alone: two receivers on one host but different ports fail independently."""
    parsed = _parsed(url)
    return str(parsed.origin()) if parsed is not None else url


@dataclass(frozen=True)
class StoredDelivery:
    id: int
    state: str  # PENDING or DEAD
    endpoint: str
    url: str
    account_id: str
    event_id: str
    body: bytes
    attempts: int
    last_error: str
    created_at: float  # unix seconds
    updated_at: float  # when it was last recorded: for a dead letter, when it died

    @property
    def webhook(self) -> Webhook:
        return Webhook(url=self.url, account_id=self.account_id, event_id=self.event_id, body=self.body)


class DeadLetterStore(Protocol):
    def add_pending(self, webhook: Webhook) -> StoredDelivery:
        """Records a webhook to send; if (url, event id) is already stored, returns that row unchanged."""

    def mark_delivered(self, delivery_id: int) -> None:
        """The receiver took it: forget it."""

    def mark_dead(self, webhook: Webhook, *, attempts: int, error: str) -> StoredDelivery:
        """Gives up on it (inserting the row if it was never pending)."""

    def reopen(self, ids: Iterable[int] | None = None) -> list[StoredDelivery]:
        """Dead letters back to pending (all of them when `ids` is None), for redelivery."""

    def pending(self) -> list[StoredDelivery]: ...

    def take_overflow(self, endpoint: str, limit: int, *, reopen: bool) -> list[StoredDelivery]:
        """Up to `limit` of the endpoint's letters that found its queue full, oldest first, marked
        as being sent again (pending with `reopen`, else still dead, RESENDING) so none is taken twice."""

    def release_resending(self) -> int:
        """Letters a previous run was sending again when it stopped are "queue full" again; returns how many."""

    def dead_letters(self, ids: Iterable[int] | None = None, limit: int | None = None) -> list[StoredDelivery]:
        """Oldest first."""

    def close(self) -> None: ...


class MemoryDeadLetterStore:
    """For tests and for running without durability; lost with the process."""

    def __init__(self, clock=time.time) -> None:
        self._rows: dict[int, StoredDelivery] = {}
        self._ids = itertools.count(1)
        self._clock = clock

    def _find(self, url: str, event_id: str) -> StoredDelivery | None:
        return next((r for r in self._rows.values() if r.url == url and r.event_id == event_id), None)

    def add_pending(self, webhook: Webhook) -> StoredDelivery:
        existing = self._find(webhook.url, webhook.event_id)
        if existing is not None:
            return existing
        now = self._clock()
        row = StoredDelivery(
            id=next(self._ids),
            state=PENDING,
            endpoint=endpoint_of(webhook.url),
            url=webhook.url,
            account_id=webhook.account_id,
            event_id=webhook.event_id,
            body=webhook.body,
            attempts=0,
            last_error="",
            created_at=now,
            updated_at=now,
        )
        self._rows[row.id] = row
        return row

    def mark_delivered(self, delivery_id: int) -> None:
        self._rows.pop(delivery_id, None)

    def mark_dead(self, webhook: Webhook, *, attempts: int, error: str) -> StoredDelivery:
        row = self._find(webhook.url, webhook.event_id) or self.add_pending(webhook)
        row = replace(row, state=DEAD, attempts=attempts, last_error=error, updated_at=self._clock())
        self._rows[row.id] = row
        return row

    def reopen(self, ids: Iterable[int] | None = None) -> list[StoredDelivery]:
        reopened = [replace(r, state=PENDING) for r in self.dead_letters(ids)]
        self._rows.update((r.id, r) for r in reopened)
        return reopened

    def pending(self) -> list[StoredDelivery]:
        return sorted((r for r in self._rows.values() if r.state == PENDING), key=lambda r: r.id)

    def take_overflow(self, endpoint: str, limit: int, *, reopen: bool) -> list[StoredDelivery]:
        overflow = sorted(
            (
                r
                for r in self._rows.values()
                if r.state == DEAD and r.endpoint == endpoint and r.last_error == QUEUE_FULL
            ),
            key=lambda r: r.id,
        )[: max(0, limit)]
        taken = [replace(r, state=PENDING) if reopen else replace(r, last_error=RESENDING) for r in overflow]
        self._rows.update((r.id, r) for r in taken)
        return taken

    def release_resending(self) -> int:
        resending = [r for r in self._rows.values() if r.state == DEAD and r.last_error == RESENDING]
        self._rows.update((r.id, replace(r, last_error=QUEUE_FULL)) for r in resending)
        return len(resending)

    def dead_letters(self, ids: Iterable[int] | None = None, limit: int | None = None) -> list[StoredDelivery]:
        wanted = None if ids is None else set(ids)
        rows = sorted(
            (r for r in self._rows.values() if r.state == DEAD and (wanted is None or r.id in wanted)),
            key=lambda r: (r.updated_at, r.id),
        )
        return rows[:limit] if limit is not None else rows

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'dead')),
    endpoint    TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    account_id  TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    body        BLOB    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT    NOT NULL DEFAULT '',
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL,
    UNIQUE (url, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_state ON webhook_deliveries (state, updated_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_overflow ON webhook_deliveries (endpoint, last_error, id)
    WHERE state = 'dead';
"""
_COLUMNS = "id, state, endpoint, url, account_id, event_id, body, attempts, last_error, created_at, updated_at"


class SqliteDeadLetterStore:
    """stdlib sqlite3, WAL: the service and the CLI may open the same file at once.

    Calls are synchronous and short (one indexed statement); they run on the
    event loop's thread. `synchronous="NORMAL"` survives a killed process;
    "FULL" also survives a power cut, at one fsync per write.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL", clock=time.time) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(_SCHEMA)

    def _rows(self, sql: str, params: Iterable = ()) -> list[StoredDelivery]:
        return [StoredDelivery(*row) for row in self._db.execute(sql, tuple(params))]

    def add_pending(self, webhook: Webhook) -> StoredDelivery:
        now = self._clock()
        self._db.execute(
            f"INSERT INTO webhook_deliveries ({_COLUMNS}) VALUES (NULL, 'pending', ?, ?, ?, ?, ?, 0, '', ?, ?)"
            " ON CONFLICT (url, event_id) DO NOTHING",
            (endpoint_of(webhook.url), webhook.url, webhook.account_id, webhook.event_id, webhook.body, now, now),
        )
        return self._by_key(webhook)

    def _by_key(self, webhook: Webhook) -> StoredDelivery:
        return self._rows(
            f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE url = ? AND event_id = ?", (webhook.url, webhook.event_id)
        )[0]

    def mark_delivered(self, delivery_id: int) -> None:
        self._db.execute("DELETE FROM webhook_deliveries WHERE id = ?", (delivery_id,))

    def mark_dead(self, webhook: Webhook, *, attempts: int, error: str) -> StoredDelivery:
        now = self._clock()
        self._db.execute(
            f"INSERT INTO webhook_deliveries ({_COLUMNS}) VALUES (NULL, 'dead', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (url, event_id) DO UPDATE SET state = 'dead', attempts = excluded.attempts,"
            " last_error = excluded.last_error, updated_at = excluded.updated_at",
            (
                endpoint_of(webhook.url),
                webhook.url,
                webhook.account_id,
                webhook.event_id,
                webhook.body,
                attempts,
                error,
                now,
                now,
            ),
        )
        return self._by_key(webhook)

    def reopen(self, ids: Iterable[int] | None = None) -> list[StoredDelivery]:
        letters = self.dead_letters(ids)
        if letters:
            marks = ",".join("?" * len(letters))
            self._db.execute(
                f"UPDATE webhook_deliveries SET state = 'pending' WHERE id IN ({marks})", [r.id for r in letters]
            )
        return [replace(r, state=PENDING) for r in letters]

    def pending(self) -> list[StoredDelivery]:
        return self._rows(f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE state = 'pending' ORDER BY id")

    def take_overflow(self, endpoint: str, limit: int, *, reopen: bool) -> list[StoredDelivery]:
        letters = self._rows(
            f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE state = 'dead' AND endpoint = ? AND last_error = ?"
            " ORDER BY id LIMIT ?",
            (endpoint, QUEUE_FULL, max(0, int(limit))),
        )
        if letters:
            marks = ",".join("?" * len(letters))
            change = "state = 'pending'" if reopen else "last_error = ?"
            params = ([] if reopen else [RESENDING]) + [r.id for r in letters]
            self._db.execute(f"UPDATE webhook_deliveries SET {change} WHERE id IN ({marks})", params)
        return [replace(r, state=PENDING) if reopen else replace(r, last_error=RESENDING) for r in letters]

    def release_resending(self) -> int:
        cursor = self._db.execute(
            "UPDATE webhook_deliveries SET last_error = ? WHERE state = 'dead' AND last_error = ?",
            (QUEUE_FULL, RESENDING),
        )
        return cursor.rowcount

    def dead_letters(self, ids: Iterable[int] | None = None, limit: int | None = None) -> list[StoredDelivery]:
        sql = f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE state = 'dead'"
        params: list = []
        if ids is not None:
            params = [int(i) for i in ids]
            if not params:
                return []
            sql += f" AND id IN ({','.join('?' * len(params))})"
        sql += " ORDER BY updated_at, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return self._rows(sql, params)

    def close(self) -> None:
        self._db.close()
