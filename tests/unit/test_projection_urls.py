"""Store URLs and the CLI's arguments (no database, no broker)."""

from __future__ import annotations

import pytest

from smsgw.projections import open_store
from smsgw.projections.cli import parser
from smsgw.projections.postgres import DEFAULT_SCHEMA, PostgresMessageStore
from smsgw.projections.sqlite import SqliteMessageStore


@pytest.mark.parametrize(
    "url, path",
    [
        ("sqlite:///messages.db", "messages.db"),
        ("sqlite:///.run/state/messages.db", ".run/state/messages.db"),
        ("sqlite:////var/lib/smsgw/messages.db", "/var/lib/smsgw/messages.db"),
        ("sqlite://", ":memory:"),
    ],
)
def test_sqlite_urls_follow_the_usual_three_or_four_slashes(url, path):
    store = open_store(url)
    assert isinstance(store, SqliteMessageStore) and store.path == path


def test_postgres_urls_take_an_optional_schema_and_pass_the_rest_to_the_driver():
    store = open_store("postgresql://u:pw@db:5432/smsgw?schema=proj_a&sslmode=require")
    assert isinstance(store, PostgresMessageStore)
    assert store.schema == "proj_a" and store.dsn == "postgresql://u:pw@db:5432/smsgw?sslmode=require"
    assert "pw" not in repr(store)
    assert open_store("postgres://db/smsgw").schema == DEFAULT_SCHEMA
    with pytest.raises(ValueError, match="schema"):
        open_store("postgresql://db/smsgw?schema=Robert'); DROP TABLE x;--")
    with pytest.raises(ValueError, match="expected sqlite"):
        open_store("mysql://db/smsgw")
    with pytest.raises(ValueError, match="expected sqlite") as refused:
        open_store("postgressql://u:pw@db/smsgw")  # misspelt: the error names the URL, not its password
    assert "pw" not in str(refused.value) and "u:***@db" in str(refused.value)


def test_rebuild_takes_store_bootstrap_and_topic_prefix():
    args = parser().parse_args(["rebuild", "--store", "sqlite:///x.db", "--bootstrap", "h:1", "--topic-prefix", "p."])
    assert (args.command, args.store, args.bootstrap, args.topic_prefix) == ("rebuild", "sqlite:///x.db", "h:1", "p.")
    with pytest.raises(SystemExit):
        parser().parse_args(["rebuild", "--bootstrap", "h:1"])  # --store is required
