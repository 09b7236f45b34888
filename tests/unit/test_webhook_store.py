"""The pending / dead-letter store: one contract, run against each backend."""

from __future__ import annotations

import pytest

from smsgw_receipt.webhooks.dead_letters import (
    DEAD,
    PENDING,
    QUEUE_FULL,
    RESENDING,
    MemoryDeadLetterStore,
    SqliteDeadLetterStore,
    endpoint_of,
    is_http_url,
)
from smsgw_receipt.webhooks.payload import Webhook


def hook(n: int, url: str = "https://a.example:8443/hooks") -> Webhook:
    return Webhook(url=url, account_id="acct", event_id=f"e{n}", body=b'{"n":%d}' % n)


class StoreContract:
    """Subclasses provide `store`."""

    def test_pending_then_delivered_leaves_nothing(self, store):
        row = store.add_pending(hook(1))
        assert row.state == PENDING and row.endpoint == "https://a.example:8443" and row.body == b'{"n":1}'
        assert [r.id for r in store.pending()] == [row.id]
        store.mark_delivered(row.id)
        assert store.pending() == [] and store.dead_letters() == []

    def test_adding_the_same_webhook_twice_keeps_one_row(self, store):
        first = store.add_pending(hook(1))
        assert store.add_pending(hook(1)).id == first.id
        assert store.add_pending(hook(1, url="https://b.example/")).id != first.id
        assert len(store.pending()) == 2

    def test_a_dead_pending_row_is_the_same_row_with_its_error(self, store):
        row = store.add_pending(hook(1))
        dead = store.mark_dead(hook(1), attempts=4, error="HTTP 500: boom")
        assert (dead.id, dead.state, dead.attempts, dead.last_error) == (row.id, DEAD, 4, "HTTP 500: boom")
        assert store.pending() == [] and [d.id for d in store.dead_letters()] == [row.id]
        assert store.add_pending(hook(1)).state == DEAD  # a later enqueue does not revive it

    def test_a_webhook_can_die_without_ever_being_pending(self, store):
        dead = store.mark_dead(hook(2), attempts=0, error="queue full")
        assert dead.state == DEAD and dead.webhook == hook(2)

    def test_reopen_returns_chosen_dead_letters_to_pending(self, store):
        ids = [store.mark_dead(hook(n), attempts=1, error="x").id for n in range(3)]
        reopened = store.reopen([ids[0], ids[2], 999])
        assert [r.id for r in reopened] == [ids[0], ids[2]] and all(r.state == PENDING for r in reopened)
        assert [r.id for r in store.pending()] == [ids[0], ids[2]]
        assert [r.id for r in store.dead_letters()] == [ids[1]]
        assert [r.id for r in store.reopen()] == [ids[1]]
        assert store.dead_letters() == []

    def test_overflow_is_taken_once_per_endpoint_oldest_first(self, store):
        other = "https://b.example/hooks"
        full = [store.mark_dead(hook(n), attempts=0, error=QUEUE_FULL).id for n in range(4)]
        spent = store.mark_dead(hook(9), attempts=12, error="HTTP 500").id  # retries ran out: the operator's
        elsewhere = store.mark_dead(hook(5, url=other), attempts=0, error=QUEUE_FULL).id
        taken = store.take_overflow("https://a.example:8443", 3, reopen=False)
        assert [r.id for r in taken] == full[:3] and {(r.state, r.last_error) for r in taken} == {(DEAD, RESENDING)}
        assert [r.id for r in store.take_overflow("https://a.example:8443", 3, reopen=False)] == [full[3]]
        assert store.take_overflow("https://a.example:8443", 3, reopen=False) == []
        assert {r.id for r in store.dead_letters()} == {*full, spent, elsewhere}  # dead until delivered
        # A run that stopped while sending them again leaves them to the next one.
        assert store.release_resending() == 4
        assert [r.id for r in store.take_overflow("https://a.example:8443", 10, reopen=True)] == full
        assert [r.id for r in store.pending()] == full
        assert [r.id for r in store.take_overflow(endpoint_of(other), 10, reopen=False)] == [elsewhere]

    def test_dead_letters_by_id_and_limit(self, store):
        ids = [store.mark_dead(hook(n), attempts=1, error="x").id for n in range(5)]
        assert [r.id for r in store.dead_letters(limit=2)] == ids[:2]
        assert [r.id for r in store.dead_letters(ids=[ids[3]])] == [ids[3]]
        assert store.dead_letters(ids=[]) == []


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self):
        return MemoryDeadLetterStore()


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        store = SqliteDeadLetterStore(tmp_path / "sub" / "webhooks.sqlite3")
        yield store
        store.close()

    def test_rows_survive_reopening_the_file(self, tmp_path):
        path = tmp_path / "webhooks.sqlite3"
        first = SqliteDeadLetterStore(path)
        first.add_pending(hook(1))
        first.mark_dead(hook(2), attempts=3, error="timeout")
        first.close()
        second = SqliteDeadLetterStore(path)
        try:
            assert [r.webhook for r in second.pending()] == [hook(1)]
            assert [(r.webhook, r.attempts) for r in second.dead_letters()] == [(hook(2), 3)]
        finally:
            second.close()


@pytest.mark.parametrize(
    "url, endpoint",
    [
        ("https://a.example/x?y=1", "https://a.example"),
        ("http://127.0.0.1:8080/a", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8081/a", "http://127.0.0.1:8081"),
        ("HTTPS://A.example:443/", "https://a.example"),
    ],
)
def test_an_endpoint_is_scheme_host_and_port(url, endpoint):
    assert endpoint_of(url) == endpoint and is_http_url(url)


@pytest.mark.parametrize("url", ["ftp://a.example/", "a.example/hooks", "", "http://"])
def test_non_http_urls_are_recognised(url):
    assert not is_http_url(url)
