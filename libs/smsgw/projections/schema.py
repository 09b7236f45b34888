"""The message store's tables and upserts, written once for both stores.

SQLite (a replica's local store) and PostgreSQL (the shared one) differ only in a few column types
and in how a statement names its parameters; everything else, including every index a query
relies on, is this one definition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

TABLES = ("projection_meta", "projection_checkpoints", "messages", "message_tags", "message_events")


@dataclass(frozen=True)
class Dialect:
    key: str  # a message id column: byte order in PostgreSQL, as SQLite compares text
    bigint: str
    blob: str
    parameter: Callable[[int], str]


SQLITE = Dialect(key="TEXT", bigint="INTEGER", blob="BLOB", parameter=lambda n: "?")
POSTGRES = Dialect(key='TEXT COLLATE "C"', bigint="BIGINT", blob="BYTEA", parameter=lambda n: f"${n}")


def schema(d: Dialect) -> str:
    return f"""
CREATE TABLE projection_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE projection_checkpoints (kafka_partition INTEGER PRIMARY KEY, next_offset {d.bigint} NOT NULL);
CREATE TABLE messages (
  id {d.key} PRIMARY KEY,
  account_id TEXT NOT NULL,
  to_addr TEXT NOT NULL,
  from_addr TEXT NOT NULL,
  status INTEGER NOT NULL,
  created_at {d.bigint},
  updated_at {d.bigint},
  version INTEGER NOT NULL,
  view {d.blob} NOT NULL
);
CREATE INDEX messages_by_account ON messages (account_id, created_at DESC, id);
CREATE INDEX messages_by_status ON messages (account_id, status, created_at DESC, id);
CREATE INDEX messages_by_to ON messages (account_id, to_addr, created_at DESC, id);
CREATE INDEX messages_by_from ON messages (account_id, from_addr, created_at DESC, id);
CREATE TABLE message_tags (message_id {d.key} NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (message_id, tag));
CREATE INDEX message_tags_by_tag ON message_tags (tag, message_id);
CREATE TABLE message_events (
  message_id {d.key} NOT NULL,
  ordinal INTEGER NOT NULL,
  event_id TEXT NOT NULL,
  sequence {d.bigint} NOT NULL,
  status_after INTEGER NOT NULL,
  envelope {d.blob} NOT NULL,
  account_id TEXT NOT NULL,
  log_partition INTEGER,
  log_offset {d.bigint},
  PRIMARY KEY (message_id, ordinal)
);
CREATE INDEX message_events_by_account ON message_events (account_id, log_partition, log_offset);
"""


#: What the store follower reads by (MessageStore.log_events): a partition's events in log order.
#: Only a followed store (one shared store written by a partitioned projector) has it; created when
#: missing, it changes no table, so it needs no new SCHEMA_VERSION.
LOG_INDEX = "CREATE INDEX IF NOT EXISTS message_events_by_log ON message_events (log_partition, log_offset)"


def _values(d: Dialect, count: int) -> str:
    return ", ".join(d.parameter(n) for n in range(1, count + 1))


def upsert_message(d: Dialect) -> str:
    return f"""
INSERT INTO messages (id, account_id, to_addr, from_addr, status, created_at, updated_at, version, view)
VALUES ({_values(d, 9)})
ON CONFLICT (id) DO UPDATE SET account_id = excluded.account_id, to_addr = excluded.to_addr,
  from_addr = excluded.from_addr, status = excluded.status, created_at = excluded.created_at,
  updated_at = excluded.updated_at, version = excluded.version, view = excluded.view
"""


def update_progress(d: Dialect) -> str:
    """A known message's later events change only these columns: the others (and the tags) come from
    its MessageQueued. Setting no indexed column but status leaves three of the four indexes alone."""
    p = d.parameter
    return (
        f"UPDATE messages SET status = {p(1)}, updated_at = {p(2)}, version = {p(3)}, view = {p(4)} WHERE id = {p(5)}"
    )


def upsert_event(d: Dialect) -> str:
    return f"""
INSERT INTO message_events (message_id, ordinal, event_id, sequence, status_after, envelope, account_id,
  log_partition, log_offset)
VALUES ({_values(d, 9)})
ON CONFLICT (message_id, ordinal) DO UPDATE SET event_id = excluded.event_id, sequence = excluded.sequence,
  status_after = excluded.status_after, envelope = excluded.envelope, account_id = excluded.account_id,
  log_partition = excluded.log_partition, log_offset = excluded.log_offset
"""


def upsert_checkpoint(d: Dialect) -> str:
    return f"""
INSERT INTO projection_checkpoints (kafka_partition, next_offset) VALUES ({_values(d, 2)})
ON CONFLICT (kafka_partition) DO UPDATE SET next_offset = excluded.next_offset
"""
