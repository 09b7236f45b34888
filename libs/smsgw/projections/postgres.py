"""PostgresMessageStore: the production store, on asyncpg.

The tables live in their own schema (default `smsgw_projections`), so several
projections, or test runs, can share one database. Every write transaction first
takes a lock per partition it writes (a transaction-scoped advisory lock): two
writers of one partition take turns, so the checkpoint check (`expected`) cannot
race, while the members of a partitioned projector, each writing its own
partitions, write side by side. Message ids use the "C" collation so
that the id tie-break orders the same as in Python and SQLite (code points).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable, Mapping, Sequence

import asyncpg

from smsgw.domain import status as st
from smsgw.domain.message_state import MessageState
from smsgw.events.envelope import decode_event
from smsgw.v1 import message_pb2 as mp

from .query import MessageFilter, list_query, page_from_rows
from .schema import (
    LOG_INDEX,
    POSTGRES,
    TABLES,
    schema,
    update_progress,
    upsert_checkpoint,
    upsert_event,
    upsert_message,
)
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

DEFAULT_SCHEMA = "smsgw_projections"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

SCHEMA = schema(POSTGRES)
UPSERT_MESSAGE = upsert_message(POSTGRES)
UPDATE_PROGRESS = update_progress(POSTGRES)
UPSERT_EVENT = upsert_event(POSTGRES)
UPSERT_CHECKPOINT = upsert_checkpoint(POSTGRES)
LOCK_WRITERS = "SELECT 1 FROM projection_meta WHERE key = 'schema_version' FOR UPDATE"
#: The partitions a write covers, in increasing order (two writers never wait on each other in a cycle).
LOCK_PARTITIONS = "SELECT pg_advisory_xact_lock(hashtext($1), p) FROM unnest($2::int[]) AS p"


def _placeholder(n: int) -> str:
    return f"${n}"


def _any_of(column: str, n: int) -> str:
    return f"{column} = ANY(${n}::int[])"


class PostgresMessageStore(MessageStore):
    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        render: Render | None = None,
        min_connections: int = 1,
        max_connections: int = 4,
    ):
        super().__init__(render)
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(
                f"schema {schema!r}: lower-case letters, digits and '_' (max 63), not starting with a digit"
            )
        self.dsn = dsn
        self.schema = schema
        self._min, self._max = min_connections, max_connections
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresMessageStore(schema={self.schema!r})"  # the DSN may hold a password

    async def open(self, *, reset_if_outdated: bool = False) -> None:
        if self._pool is not None:
            return
        # Unqualified table names resolve in our schema (and nowhere else).
        pool = await asyncpg.create_pool(
            self.dsn, min_size=self._min, max_size=self._max, server_settings={"search_path": self.schema}
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                # Two processes opening a new store at once: one creates, the other waits and finds it.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"smsgw.projections/{self.schema}")
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                exists = await conn.fetchval("SELECT to_regclass('projection_meta') IS NOT NULL")
                if not exists:
                    await self._create(conn)
                else:
                    version = await conn.fetchval("SELECT value FROM projection_meta WHERE key = 'schema_version'")
                    if version != SCHEMA_VERSION:
                        if not reset_if_outdated:
                            raise StoreOutdated(
                                f"schema {self.schema}: projection schema {version}, this code needs {SCHEMA_VERSION}; "
                                "rebuild it: smsgw projections rebuild --store postgresql://... --bootstrap HOST:PORT"
                            )
                        await self._drop(conn)
                        await self._create(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError(f"{self!r} is not open")
        return self._pool

    @staticmethod
    async def _create(conn: asyncpg.Connection) -> None:
        await conn.execute(SCHEMA)
        await conn.execute("INSERT INTO projection_meta (key, value) VALUES ('schema_version', $1)", SCHEMA_VERSION)

    @staticmethod
    async def _drop(conn: asyncpg.Connection) -> None:
        for table in TABLES:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")

    # -- writing -------------------------------------------------------------------------
    async def apply(
        self,
        updates: Sequence[MessageUpdate],
        offsets: Mapping[int, int] | None = None,
        *,
        expected: Mapping[int, int | None] | None = None,
    ) -> None:
        rows = self._rows(updates)
        partitions = sorted(set(expected or ()) | set(offsets or ()))
        async with self._p().acquire() as conn, conn.transaction():
            if partitions:
                await conn.execute(LOCK_PARTITIONS, f"smsgw.projections/{self.schema}", partitions)
            if expected:
                stored = await conn.fetch(
                    "SELECT kafka_partition, next_offset FROM projection_checkpoints WHERE kafka_partition = ANY($1::int[])",
                    partitions,
                )
                check_expected({r[0]: r[1] for r in stored}, expected)
            if rows.messages:
                await conn.executemany(UPSERT_MESSAGE, rows.messages)
                await conn.execute(
                    "DELETE FROM message_tags WHERE message_id = ANY($1::text[])", [i for (i,) in rows.ids]
                )
            if rows.progress:
                await conn.executemany(UPDATE_PROGRESS, rows.progress)
            if rows.tags:
                await conn.executemany(
                    "INSERT INTO message_tags (message_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING", rows.tags
                )
            if rows.events:
                await conn.executemany(UPSERT_EVENT, rows.events)
            if offsets:
                await conn.executemany(UPSERT_CHECKPOINT, sorted(offsets.items()))

    async def checkpoint(self) -> dict[int, int]:
        rows = await self._p().fetch("SELECT kafka_partition, next_offset FROM projection_checkpoints")
        return {int(r[0]): int(r[1]) for r in rows}

    async def source(self) -> str | None:
        return await self._p().fetchval("SELECT value FROM projection_meta WHERE key = 'source'")

    async def bind_source(self, topic: str) -> None:
        async with self._p().acquire() as conn, conn.transaction():
            await conn.execute(LOCK_WRITERS)
            current = await conn.fetchval("SELECT value FROM projection_meta WHERE key = 'source'")
            if current is None:
                await conn.execute("INSERT INTO projection_meta (key, value) VALUES ('source', $1)", topic)
            elif current != topic:
                raise SourceMismatch(
                    f"schema {self.schema} projects topic {current!r}, not {topic!r}; "
                    "use another store, or rebuild this one from the new topic"
                )

    async def reset(self) -> None:
        # DDL is transactional here: readers see the old rows until the empty tables commit.
        async with self._p().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"smsgw.projections/{self.schema}")
            await self._drop(conn)
            await self._create(conn)

    # -- reading -------------------------------------------------------------------------
    async def get(self, account_id: str, message_id: str) -> mp.Message | None:
        raw = await self._p().fetchval(
            "SELECT view FROM messages WHERE id = $1 AND account_id = $2 AND status <> 0 AND created_at IS NOT NULL",
            message_id,
            account_id,
        )
        return view_of(raw) if raw is not None else None

    async def list(self, flt: MessageFilter, page_size: int = 0, page_token: str = "") -> tuple[list[mp.Message], str]:
        query = list_query(flt, page_size, page_token, placeholder=_placeholder, any_of=_any_of)
        rows = await self._p().fetch(query.sql, *query.params)
        views, token = page_from_rows([(r[0], r[1], r[2]) for r in rows], flt, query.limit)
        return [view_of(v) for v in views], token

    async def load_states(self, message_ids: Iterable[str]) -> dict[str, MessageState]:
        ids = sorted(set(message_ids))
        if not ids:
            return {}
        rows = await self._p().fetch(
            "SELECT message_id, envelope FROM message_events WHERE message_id = ANY($1::text[]) "
            "ORDER BY message_id, ordinal",
            ids,
        )
        return fold_rows((r[0], r[1]) for r in rows)

    async def history(self, account_id: str, message_id: str) -> builtins.list[StoredEvent]:
        rows = await self._p().fetch(
            "SELECT e.envelope, e.status_after FROM message_events e JOIN messages m ON m.id = e.message_id "
            "WHERE e.message_id = $1 AND m.account_id = $2 ORDER BY e.sequence, e.ordinal",
            message_id,
            account_id,
        )
        return [StoredEvent(decode_event(r[0]), int(r[1])) for r in rows]

    async def _account_event_rows(
        self, account_id: str, partition: int, from_offset: int, limit: int
    ) -> builtins.list[tuple[str, int, int]]:
        rows = await self._p().fetch(
            "SELECT message_id, ordinal, log_offset FROM message_events "
            "WHERE account_id = $1 AND log_partition = $2 AND log_offset >= $3 ORDER BY log_offset LIMIT $4",
            account_id,
            partition,
            from_offset,
            limit,
        )
        return [(r[0], int(r[1]), int(r[2])) for r in rows]

    async def _event_rows(self, message_ids: Iterable[str]) -> builtins.list[tuple[str, int, bytes]]:
        rows = await self._p().fetch(
            "SELECT message_id, ordinal, envelope FROM message_events WHERE message_id = ANY($1::text[])",
            sorted(set(message_ids)),
        )
        return [(r[0], int(r[1]), r[2]) for r in rows]

    async def prepare_following(self) -> None:
        async with self._p().acquire() as conn, conn.transaction():
            # Replicas starting at once: one creates it, the others wait and find it.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"smsgw.projections/{self.schema}")
            await conn.execute(LOG_INDEX)

    async def _log_event_rows(
        self,
        ranges: Mapping[int, tuple[int, int]],
        limit: int,
        only: tuple[builtins.list[str], builtins.list[str]] | None = None,
    ) -> builtins.list[tuple[int, str, int, int, bytes]]:
        partitions = sorted(ranges)
        bounds = [partitions, [ranges[p][0] for p in partitions], [ranges[p][1] for p in partitions], limit]
        rows = await self._p().fetch(
            "SELECT e.log_partition, e.message_id, e.ordinal, e.log_offset, e.envelope "
            "FROM unnest($1::int[], $2::bigint[], $3::bigint[]) AS r(p, lo, hi) "
            "JOIN message_events e ON e.log_partition = r.p AND e.log_offset >= r.lo AND e.log_offset < r.hi "
            + (
                "AND (e.ordinal = 1 OR e.account_id = ANY($5::text[]) OR e.message_id = ANY($6::text[])) "
                if only is not None
                else ""
            )
            + "ORDER BY e.log_partition, e.log_offset LIMIT $4",
            *bounds,
            *(only or ()),
        )
        return [(int(r[0]), r[1], int(r[2]), int(r[3]), r[4]) for r in rows]

    async def queued_messages(self) -> builtins.list[tuple[str, int]]:
        rows = await self._p().fetch(
            "SELECT id, updated_at FROM messages WHERE status = $1 AND updated_at IS NOT NULL", int(st.QUEUED)
        )
        return [(r[0], int(r[1])) for r in rows]

    async def accepted_since(self, since_micros: int) -> builtins.list[tuple[str, int]]:
        rows = await self._p().fetch(
            "SELECT account_id, created_at FROM messages WHERE created_at >= $1 AND status <> 0 ORDER BY created_at",
            since_micros,
        )
        return [(r[0], int(r[1])) for r in rows]
