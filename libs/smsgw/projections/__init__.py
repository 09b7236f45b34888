"""Read models of the event log in a database: SQLite embedded, PostgreSQL in production.

    store = open_store("sqlite:///.run/state/messages.db")     # or postgresql://...
    projector = Projector(store, make_consumer(kafka), topic, kafka=kafka)   # kafka: KafkaConnection or "host:port"
    await projector.start(); projector.spawn(); await projector.caught_up.wait()
    page, token = await store.list(MessageFilter(account_id="acct", tag="promo"), 50, "")

See docs/projections.md.
"""

from .projector import Projector, ProjectorStats, make_consumer
from .query import MessageFilter, tags_of
from .store import (
    CheckpointConflict,
    MessageStore,
    MessageUpdate,
    SourceMismatch,
    StoredEvent,
    StoreError,
    StoreOutdated,
)
from .urls import open_store

__all__ = [
    "CheckpointConflict",
    "MessageFilter",
    "MessageStore",
    "MessageUpdate",
    "Projector",
    "ProjectorStats",
    "SourceMismatch",
    "StoreError",
    "StoreOutdated",
    "StoredEvent",
    "make_consumer",
    "open_store",
    "tags_of",
]
