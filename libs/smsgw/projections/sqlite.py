"""SqliteMessageStore: the embedded default, on the standard library's sqlite3.

sqlite3 blocks, so each connection lives on its own single thread and the event
loop awaits it there. A file database has two connections in WAL mode: the
projector's writes never block readers, and readers see each commit at once.
An in-memory database (":memory:") has one connection, used by both.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from smsgw.domain import status as st
from smsgw.domain.message_state import MessageState
from smsgw.events.envelope import decode_event
from smsgw.v1 import message_pb2 as mp

from .query import MessageFilter, list_query, page_from_rows
from .schema import LOG_INDEX, SQLITE, TABLES, schema, update_progress, upsert_checkpoint, upsert_event, upsert_message
from .store import (
    SCHEMA_VERSION,
    MessageStore,
    MessageUpdate,
    Render,
    SourceMismatch,
    StoredEvent,
    StoreError,
    StoreOutdated,
    check_expected,
    fold_rows,
    view_of,
)

T = TypeVar("T")

SCHEMA = schema(SQLITE)
UPSERT_MESSAGE = upsert_message(SQLITE)
UPDATE_PROGRESS = update_progress(SQLITE)
UPSERT_EVENT = upsert_event(SQLITE)
UPSERT_CHECKPOINT = upsert_checkpoint(SQLITE)


class _Connection:
    """One sqlite3 connection, used only from its own thread."""

    def __init__(self, path: str, name: str):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> None:
        # isolation_level=None: no implicit transactions; each write says BEGIN IMMEDIATE itself.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        if self._path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
            # A commit lost to a power cut is replayed from the log: the checkpoint goes with it.
            conn.execute("PRAGMA synchronous = NORMAL")
        self._conn = conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._conn is None:
            self._connect()
        assert self._conn is not None  # set by _connect
        return fn(self._conn)

    async def close(self) -> None:
        if self._conn is not None:
            await self.run(lambda conn: conn.close())
            self._conn = None
        self._executor.shutdown(wait=True)


def _write(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Runs `work` in one write transaction (BEGIN IMMEDIATE takes the write lock up front)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _create(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO projection_meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))


def _drop(conn: sqlite3.Connection) -> None:
    for table in TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def _placeholder(_: int) -> str:
    return "?"


def _any_of(column: str, _: int) -> str:
    # A list travels as one JSON parameter, so the statement text does not depend on its length.
    return f"{column} IN (SELECT value FROM json_each(?))"


class SqliteMessageStore(MessageStore):
    def __init__(self, path: str, *, render: Render | None = None):
        super().__init__(render)
        self.path = str(path)
        self._writer: _Connection | None = None
        self._reader: _Connection | None = None

    def __repr__(self) -> str:
        return f"SqliteMessageStore({self.path!r})"

    async def open(self, *, reset_if_outdated: bool = False) -> None:
        if self._writer is not None:
            return
        writer = _Connection(self.path, "smsgw-sqlite-writer")

        def prepare(conn: sqlite3.Connection) -> None:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'projection_meta'"
            ).fetchone()
            if not exists:
                _create(conn)
                return
            row = conn.execute("SELECT value FROM projection_meta WHERE key = 'schema_version'").fetchone()
            if row is None or row[0] != SCHEMA_VERSION:
                if not reset_if_outdated:
                    raise StoreOutdated(
                        f"{self.path}: projection schema {row[0] if row else '?'}, this code needs {SCHEMA_VERSION}; "
                        "rebuild it: smsgw projections rebuild --store sqlite:///PATH --bootstrap HOST:PORT"
                    )
                _drop(conn)
                _create(conn)

        try:
            await writer.run(lambda conn: _write(conn, prepare))
        except BaseException:
            await writer.close()
            raise
        self._writer = writer
        self._reader = writer if self.path == ":memory:" else _Connection(self.path, "smsgw-sqlite-reader")

    async def close(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if reader is not None and reader is not writer:
            await reader.close()
        if writer is not None:
            await writer.close()

    def _w(self) -> _Connection:
        if self._writer is None:
            raise StoreError(f"{self!r} is not open")
        return self._writer

    def _r(self) -> _Connection:
        if self._reader is None:
            raise StoreError(f"{self!r} is not open")
        return self._reader

    # -- writing -------------------------------------------------------------------------
    async def apply(
        self,
        updates: Sequence[MessageUpdate],
        offsets: Mapping[int, int] | None = None,
        *,
        expected: Mapping[int, int | None] | None = None,
    ) -> None:
        rows = self._rows(updates)
        offset_rows = sorted((offsets or {}).items())

        def work(conn: sqlite3.Connection) -> None:
            if expected:
                check_expected(
                    dict(conn.execute("SELECT kafka_partition, next_offset FROM projection_checkpoints")), expected
                )
            conn.executemany(UPSERT_MESSAGE, rows.messages)
            conn.executemany(UPDATE_PROGRESS, rows.progress)
            conn.executemany("DELETE FROM message_tags WHERE message_id = ?", rows.ids)
            conn.executemany("INSERT OR IGNORE INTO message_tags (message_id, tag) VALUES (?, ?)", rows.tags)
            conn.executemany(UPSERT_EVENT, rows.events)
            conn.executemany(UPSERT_CHECKPOINT, offset_rows)

        await self._w().run(lambda conn: _write(conn, work))

    async def checkpoint(self) -> dict[int, int]:
        rows = await self._r().run(
            lambda conn: conn.execute("SELECT kafka_partition, next_offset FROM projection_checkpoints").fetchall()
        )
        return {int(p): int(o) for p, o in rows}

    async def source(self) -> str | None:
        row = await self._r().run(
            lambda conn: conn.execute("SELECT value FROM projection_meta WHERE key = 'source'").fetchone()
        )
        return row[0] if row else None

    async def bind_source(self, topic: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT value FROM projection_meta WHERE key = 'source'").fetchone()
            if row is None:
                conn.execute("INSERT INTO projection_meta (key, value) VALUES ('source', ?)", (topic,))
            elif row[0] != topic:
                raise SourceMismatch(
                    f"{self.path} projects topic {row[0]!r}, not {topic!r}; "
                    "use another store, or rebuild this one from the new topic"
                )

        await self._w().run(lambda conn: _write(conn, work))

    async def reset(self) -> None:
        def work(conn: sqlite3.Connection) -> None:
            _drop(conn)
            _create(conn)

        await self._w().run(lambda conn: _write(conn, work))

    # -- reading -------------------------------------------------------------------------
    async def get(self, account_id: str, message_id: str) -> mp.Message | None:
        row = await self._r().run(
            lambda conn: conn.execute(
                "SELECT view FROM messages WHERE id = ? AND account_id = ? AND status <> 0 AND created_at IS NOT NULL",
                (message_id, account_id),
            ).fetchone()
        )
        return view_of(row[0]) if row else None

    async def list(self, flt: MessageFilter, page_size: int = 0, page_token: str = "") -> tuple[list[mp.Message], str]:
        query = list_query(flt, page_size, page_token, placeholder=_placeholder, any_of=_any_of)
        params = [json.dumps(p) if isinstance(p, list) else p for p in query.params]
        rows = await self._r().run(lambda conn: conn.execute(query.sql, params).fetchall())
        views, token = page_from_rows(rows, flt, query.limit)
        return [view_of(v) for v in views], token

    async def load_states(self, message_ids: Iterable[str]) -> dict[str, MessageState]:
        ids = sorted(set(message_ids))
        if not ids:
            return {}
        rows = await self._r().run(
            lambda conn: conn.execute(
                "SELECT message_id, envelope FROM message_events WHERE message_id IN (SELECT value FROM json_each(?)) "
                "ORDER BY message_id, ordinal",
                (json.dumps(ids),),
            ).fetchall()
        )
        return fold_rows(rows)

    async def history(self, account_id: str, message_id: str) -> builtins.list[StoredEvent]:
        rows = await self._r().run(
            lambda conn: conn.execute(
                "SELECT e.envelope, e.status_after FROM message_events e JOIN messages m ON m.id = e.message_id "
                "WHERE e.message_id = ? AND m.account_id = ? ORDER BY e.sequence, e.ordinal",
                (message_id, account_id),
            ).fetchall()
        )
        return [StoredEvent(decode_event(raw), int(status)) for raw, status in rows]

    async def _account_event_rows(
        self, account_id: str, partition: int, from_offset: int, limit: int
    ) -> builtins.list[tuple[str, int, int]]:
        rows = await self._r().run(
            lambda conn: conn.execute(
                "SELECT message_id, ordinal, log_offset FROM message_events "
                "WHERE account_id = ? AND log_partition = ? AND log_offset >= ? ORDER BY log_offset LIMIT ?",
                (account_id, partition, from_offset, limit),
            ).fetchall()
        )
        return [(m, int(o), int(off)) for m, o, off in rows]

    async def _event_rows(self, message_ids: Iterable[str]) -> builtins.list[tuple[str, int, bytes]]:
        ids = sorted(set(message_ids))
        return await self._r().run(
            lambda conn: conn.execute(
                "SELECT message_id, ordinal, envelope FROM message_events "
                "WHERE message_id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            ).fetchall()
        )

    async def prepare_following(self) -> None:
        await self._w().run(lambda conn: _write(conn, lambda c: c.execute(LOG_INDEX)))

    async def _log_event_rows(
        self,
        ranges: Mapping[int, tuple[int, int]],
        limit: int,
        only: tuple[builtins.list[str], builtins.list[str]] | None = None,
    ) -> builtins.list[tuple[int, str, int, int, bytes]]:
        bounds = json.dumps([[p, lo, hi] for p, (lo, hi) in sorted(ranges.items())])
        sql = (
            "SELECT e.log_partition, e.message_id, e.ordinal, e.log_offset, e.envelope FROM json_each(?) AS r "
            "JOIN message_events e ON e.log_partition = json_extract(r.value, '$[0]') "
            "AND e.log_offset >= json_extract(r.value, '$[1]') AND e.log_offset < json_extract(r.value, '$[2]') "
            + (
                "AND (e.ordinal = 1 OR e.account_id IN (SELECT value FROM json_each(?)) "
                "OR e.message_id IN (SELECT value FROM json_each(?))) "
                if only is not None
                else ""
            )
            + "ORDER BY e.log_partition, e.log_offset LIMIT ?"
        )
        params = (bounds, *(json.dumps(keys) for keys in only or ()), limit)
        rows = await self._r().run(lambda conn: conn.execute(sql, params).fetchall())
        return [(int(p), m, int(o), int(off), raw) for p, m, o, off, raw in rows]

    async def queued_messages(self) -> builtins.list[tuple[str, int]]:
        return await self._r().run(
            lambda conn: conn.execute(
                "SELECT id, updated_at FROM messages WHERE status = ? AND updated_at IS NOT NULL", (int(st.QUEUED),)
            ).fetchall()
        )

    async def accepted_since(self, since_micros: int) -> builtins.list[tuple[str, int]]:
        return await self._r().run(
            lambda conn: conn.execute(
                "SELECT account_id, created_at FROM messages WHERE created_at >= ? AND status <> 0 ORDER BY created_at",
                (since_micros,),
            ).fetchall()
        )
