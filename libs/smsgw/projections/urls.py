"""A message store from its URL: the one place that knows every backend.

Kept apart from `store` (the interface both backends implement), so that no backend module and
the interface import each other.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from smsgw.settings import url_password_masked

from .postgres import DEFAULT_SCHEMA, PostgresMessageStore
from .sqlite import SqliteMessageStore
from .store import MessageStore, Render


def open_store(url: str, *, render: Render | None = None) -> MessageStore:
    """A store from a URL (not yet opened).

    sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite:// (in memory, this process only);
    postgresql://user@host:port/db[?schema=name] (default schema: smsgw_projections). Other query
    parameters are passed to the driver (asyncpg) as usual.
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return SqliteMessageStore(path or ":memory:", render=render)
    if parts.scheme in ("postgresql", "postgres"):
        query = parse_qs(parts.query, keep_blank_values=True)
        schema = query.pop("schema", [DEFAULT_SCHEMA])[-1]
        dsn = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        return PostgresMessageStore(dsn, schema=schema, render=render)
    raise ValueError(f"store URL {url_password_masked(url)!r}: expected sqlite:///path.db or postgresql://...")
