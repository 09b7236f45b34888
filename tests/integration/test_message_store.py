"""MessageStore contract: written once, run against every backend (SQLite file, PostgreSQL).

A backend is a subclass of MessageStoreContract that provides `make_store` (a factory of
unopened stores on the same database, so a test can close and reopen it) and
`write_schema_version`. The reference for ListMessages is MessageFilter.matches over the
folded states, newest first with the id breaking ties: the SQL must give the same pages.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from smsgw.domain import errors as de
from smsgw.domain import status as st
from smsgw.domain.message_state import MessageState, apply
from smsgw.events.envelope import new_event
from smsgw.projections import (
    CheckpointConflict,
    MessageFilter,
    MessageStore,
    MessageUpdate,
    SourceMismatch,
    StoredEvent,
    StoreOutdated,
    tags_of,
)
from smsgw.projections.postgres import PostgresMessageStore
from smsgw.projections.query import to_micros
from smsgw.projections.sqlite import SqliteMessageStore
from smsgw.v1 import events_pb2 as ev
from smsgw.views import message_view
from tests.integration.postgres import postgres  # noqa: F401  (session fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DS = ev.DeliveryState
OWNER = {
    "MessageQueued": "intake",
    "CancellationRequested": "intake",
    "MessageCanceled": "routing",
    "CancellationRejected": "routing",
    "MessageRouted": "routing",
    "RoutingFailed": "routing",
    "MessageExpired": "routing",
    "MessageSubmitted": "carrier-adapter",
    "CarrierAccepted": "carrier-adapter",
    "MessageFailed": "carrier-adapter",
    "DeliveryReported": "receipt",
}


# -- building events and updates ---------------------------------------------------------


def event(payload, message_id: str, seq: int, *, at: datetime, account: str = "acct", event_id: str | None = None):
    return new_event(
        payload,
        service=OWNER[payload.DESCRIPTOR.name],
        producer="test",
        message_id=message_id,
        account_id=account,
        sequence=seq,
        event_id=event_id,
        occurred_at=at,
    )


def queued(
    message_id: str,
    *,
    at: datetime,
    account: str = "acct",
    to: str = "+14155550100",
    sender: str = "+14155550000",
    tags: tuple[str, ...] = (),
    body: str = "hi",
    send_at: datetime | None = None,
):
    payload = ev.MessageQueued(
        to=to,
        content=ev.MessageContent(text=body),
        segments=1,
        tags=list(tags),
        metadata={"campaign": "x"} if tags else {},
    )
    setattr(payload, "from", sender)
    if send_at is not None:
        payload.send_at.FromDatetime(send_at)
    return event(payload, message_id, 1, at=at, account=account)


def lifecycle(message_id: str, outcome: str, *, at: datetime, account: str = "acct", **kw) -> list:
    """The events of one message that ends in `outcome` (a status name, or QUEUED/SCHEDULED to stop early)."""
    events = [
        queued(
            message_id,
            at=at,
            account=account,
            send_at=at + timedelta(hours=1) if outcome in ("SCHEDULED", "CANCELED") else None,
            **kw,
        )
    ]
    step = lambda n: at + timedelta(milliseconds=10 * n)  # noqa: E731
    if outcome in ("QUEUED", "SCHEDULED"):
        return events
    if outcome == "CANCELED":
        return events + [
            event(ev.CancellationRequested(reason="x"), message_id, 2, at=step(1), account=account),
            event(ev.MessageCanceled(reason="x"), message_id, 3, at=step(2), account=account),
        ]
    events.append(event(ev.MessageRouted(carrier="sim", route="*"), message_id, 2, at=step(1), account=account))
    if outcome == "SENDING":
        return events
    if outcome == "FAILED":
        return events + [
            event(
                ev.MessageFailed(
                    carrier="sim", error_code=500, reason="CARRIER_REJECTED", message="no", carrier_error="0x0B"
                ),
                message_id,
                3,
                at=step(2),
                account=account,
            )
        ]
    events.append(
        event(ev.MessageSubmitted(carrier="sim", attempt=1, segments=1), message_id, 3, at=step(2), account=account)
    )
    events.append(
        event(
            ev.CarrierAccepted(carrier="sim", carrier_message_ids=[f"c-{message_id}"], segments=1),
            message_id,
            4,
            at=step(3),
            account=account,
        )
    )
    if outcome == "SENT":
        return events
    state = {"DELIVERED": DS.DELIVERY_STATE_DELIVERED, "UNDELIVERED": DS.DELIVERY_STATE_UNDELIVERABLE}[outcome]
    return events + [
        event(
            ev.DeliveryReported(
                carrier="sim", carrier_message_id=f"c-{message_id}", part_index=0, total_parts=1, state=state
            ),
            message_id,
            5,
            at=step(4),
            account=account,
        )
    ]


class Folder:
    """Folds events like the projector does, and hands out the MessageUpdates to write."""

    def __init__(self) -> None:
        self.states: dict[str, MessageState] = {}

    def updates(self, events) -> list[MessageUpdate]:
        new: dict[str, list[StoredEvent]] = {}
        for envelope in events:
            before = self.states.get(envelope.message_id)
            after = apply(before, envelope)
            if before is not None and after.version == before.version:
                continue
            self.states[envelope.message_id] = after
            new.setdefault(envelope.message_id, []).append(StoredEvent(envelope, after.status))
        return [MessageUpdate(self.states[mid], tuple(stored)) for mid, stored in new.items()]


OUTCOMES = ["QUEUED", "SCHEDULED", "SENDING", "SENT", "DELIVERED", "UNDELIVERED", "FAILED", "CANCELED"]
TAGS = [(), ("promo",), ("otp",), ("promo", "otp"), ("promo", "vip", "promo")]


def dataset(n: int = 150, seed: int = 7) -> list:
    """n messages over 3 accounts; created_at collides often, so the id tie-break matters."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        at = T0 + timedelta(seconds=rng.randrange(40), microseconds=rng.choice([0, 0, 1, 999_999]))
        events += lifecycle(
            f"m-{rng.randrange(10**6):06d}-{i:03d}",
            rng.choice(OUTCOMES),
            at=at,
            account=rng.choice(["acct", "acct", "other", "third"]),
            to=rng.choice(["+14155550100", "+14155550101", "+447700900123"]),
            sender=rng.choice(["+14155550000", "ACME"]),
            tags=rng.choice(TAGS),
        )
    return events


async def pages(store: MessageStore, flt: MessageFilter, size: int) -> list[list[str]]:
    out, token = [], ""
    while True:
        page, token = await store.list(flt, size, token)
        out.append([m.id for m in page])
        if not token:
            return out
        assert len(out) < 1000, "pagination does not end"


def memory_pages(states, flt: MessageFilter, size: int) -> list[list[str]]:
    """The pages the same query must give: the reference order, cut every `size`."""
    ordered = reference(states, flt)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)] or [[]]


def reference(states, flt: MessageFilter) -> list[str]:
    matching = [s for s in states if flt.matches(s)]
    return [s.message_id for s in sorted(matching, key=lambda s: (-(to_micros(s.created_at) or 0), s.message_id))]


# -- the contract ------------------------------------------------------------------------


class MessageStoreContract:
    """Every MessageStore backend passes these. Subclasses provide the two hooks below."""

    @pytest.fixture
    def make_store(self) -> Callable[[], MessageStore]:
        raise NotImplementedError

    async def write_schema_version(self, store: MessageStore, value: str) -> None:
        raise NotImplementedError

    @pytest.fixture
    async def store(self, make_store):
        store = make_store()
        await store.open()
        yield store
        await store.close()

    async def test_a_new_store_is_empty(self, store):
        assert await store.checkpoint() == {}
        assert await store.source() is None
        assert await store.get("acct", "nope") is None
        assert await store.list(MessageFilter(account_id="acct")) == ([], "")
        assert await store.load_states(["nope"]) == {}
        assert await store.history("acct", "nope") == []

    async def test_get_answers_the_public_view_of_the_accounts_message_only(self, store):
        folder = Folder()
        await store.apply(folder.updates(lifecycle("m1", "DELIVERED", at=T0, tags=("promo",))))
        assert await store.get("acct", "m1") == message_view(folder.states["m1"])
        assert await store.get("other", "m1") is None

    async def test_an_upsert_replaces_the_row_and_appends_the_history(self, store):
        folder, events = Folder(), lifecycle("m1", "DELIVERED", at=T0)
        await store.apply(folder.updates(events[:2]))
        assert (await store.get("acct", "m1")).status == st.SENDING
        await store.apply(folder.updates(events[2:]))
        got = await store.get("acct", "m1")
        assert got.status == st.DELIVERED and got.version == 5 and got == message_view(folder.states["m1"])
        history = await store.history("acct", "m1")
        assert [h.envelope for h in history] == events
        assert [h.status_after for h in history] == [st.QUEUED, st.SENDING, st.SENDING, st.SENT, st.DELIVERED]
        assert await store.history("other", "m1") == []

    async def test_writing_the_same_update_twice_changes_nothing(self, store):
        updates = Folder().updates(lifecycle("m1", "SENT", at=T0))
        await store.apply(updates)
        await store.apply(updates)
        assert len(await store.history("acct", "m1")) == 4
        assert (await store.load_states(["m1"]))["m1"] == updates[0].state

    async def test_stored_events_fold_back_to_the_same_state(self, store):
        folder, events = Folder(), dataset(40)
        rng = random.Random(3)
        # Copies of events (redelivery) are dropped by the fold and never stored.
        events += rng.sample(events, 10)
        for start in range(0, len(events), 17):
            await store.apply(folder.updates(events[start : start + 17]))
        assert await store.load_states(folder.states) == folder.states
        assert await store.get_state("m-none") is None

    async def test_a_message_without_message_queued_is_kept_but_neither_got_nor_listed(self, store):
        folder = Folder()
        await store.apply(folder.updates([event(ev.MessageRouted(carrier="sim"), "orphan", 2, at=T0)]))
        assert await store.get("acct", "orphan") is None
        assert await store.list(MessageFilter(account_id="acct")) == ([], "")
        orphan = await store.get_state("orphan")
        assert orphan.status == st.SENDING and orphan.created_at is None and orphan == folder.states["orphan"]

    async def test_later_events_written_one_batch_at_a_time_keep_identity_tags_and_filters_right(self, store):
        # A stored message's later events rewrite only status and view (store.Rows.progress): its
        # other columns and its tags must stay as its MessageQueued wrote them.
        folder, events = Folder(), lifecycle("m1", "DELIVERED", at=T0, tags=("promo",))
        for one in events:
            await store.apply(folder.updates([one]))
        got = await store.get("acct", "m1")
        assert got == message_view(folder.states["m1"]) and got.status == st.DELIVERED
        for flt in (
            MessageFilter(account_id="acct", tag="promo"),
            MessageFilter(account_id="acct", to=got.to),
            MessageFilter(account_id="acct", statuses=frozenset({st.DELIVERED})),
        ):
            assert [m.id for m in (await store.list(flt))[0]] == ["m1"], flt
        assert (await store.list(MessageFilter(account_id="acct", statuses=frozenset({st.SENDING}))))[0] == []

    async def test_pages_match_the_in_memory_listing_for_every_filter(self, store):
        folder = Folder()
        await store.apply(folder.updates(dataset()))
        states = list(folder.states.values())
        filters = [
            MessageFilter(account_id="acct"),
            MessageFilter(account_id="other", statuses=frozenset({st.DELIVERED, st.FAILED})),
            MessageFilter(account_id="acct", to="+14155550101"),
            MessageFilter(account_id="acct", sender="ACME", statuses=frozenset({st.QUEUED})),
            MessageFilter(
                account_id="acct", created_after=T0 + timedelta(seconds=10), created_before=T0 + timedelta(seconds=30)
            ),
            MessageFilter(account_id="third", to="+447700900123", sender="+14155550000"),
            MessageFilter(account_id="nobody"),
        ]
        for flt in filters:
            for size in (1, 7, 50, 1000):
                got = await pages(store, flt, size)
                expected = reference(states, flt)
                assert [i for page in got for i in page] == expected, (flt, size)
                assert all(len(page) == size for page in got[:-1]) and len(got[-1]) <= size
                assert got == memory_pages(states, flt, size), (flt, size)

    async def test_the_tag_filter_matches_any_one_tag_of_the_message(self, store):
        folder = Folder()
        await store.apply(folder.updates(dataset()))
        states = list(folder.states.values())
        for tag in ("promo", "otp", "vip", "absent"):
            flt = MessageFilter(account_id="acct", tag=tag)
            got = [i for page in await pages(store, flt, 9) for i in page]
            assert got == reference(states, flt)
            assert await pages(store, flt, 9) == memory_pages(states, flt, 9)
            assert all(tag in tags_of(folder.states[i]) for i in got)
        flt = MessageFilter(account_id="acct", tag="promo", statuses=frozenset({st.DELIVERED}))
        assert [i for page in await pages(store, flt, 4) for i in page] == reference(states, flt)
        assert reference(states, MessageFilter(account_id="acct", tag="vip"))  # the data set has some

    async def test_created_after_is_inclusive_and_created_before_exclusive_to_the_microsecond(self, store):
        folder = Folder()
        at = T0 + timedelta(microseconds=123_457)
        await store.apply(folder.updates(lifecycle("edge", "QUEUED", at=at)))
        one = timedelta(microseconds=1)
        cases = [
            (at, None, True),
            (at + one, None, False),
            (None, at, False),
            (None, at + one, True),
            (at - one, at + one, True),
        ]
        for after, before, listed in cases:
            page, _ = await store.list(MessageFilter(account_id="acct", created_after=after, created_before=before))
            assert [m.id for m in page] == (["edge"] if listed else []), (after, before)

    async def test_a_page_token_only_works_with_the_filters_it_was_issued_for(self, store):
        folder = Folder()
        await store.apply(folder.updates(dataset(30)))
        flt = MessageFilter(account_id="acct")
        _, token = await store.list(flt, 2)
        assert token
        others = [
            MessageFilter(account_id="other"),
            MessageFilter(account_id="acct", tag="promo"),
            MessageFilter(account_id="acct", statuses=frozenset({st.SENT})),
            MessageFilter(account_id="acct", created_after=T0),
        ]
        for other in others:
            with pytest.raises(de.InvalidPageToken) as refused:
                await store.list(other, 2, token)
            assert refused.value.field == "page_token" and "other filters" in refused.value.message
        for garbage in ("garbage!", "e30=", token[:-4], "eyJjIjoiMSIsImkiOiJ4IiwiZiI6IiJ9"):
            with pytest.raises(de.InvalidPageToken) as refused:
                await store.list(flt, 2, garbage)
            assert refused.value.field == "page_token"
        page, _ = await store.list(flt, 2, token)  # still fine with its own filters
        assert len(page) == 2

    async def test_page_size_defaults_to_50_is_capped_at_1000_and_never_negative(self, store):
        folder = Folder()
        await store.apply(folder.updates([queued(f"m{i:04d}", at=T0 + timedelta(milliseconds=i)) for i in range(1003)]))
        flt = MessageFilter(account_id="acct")
        page, token = await store.list(flt, 0)
        assert len(page) == 50 and token
        page, token = await store.list(flt, 5000)
        assert len(page) == 1000 and token
        page, token = await store.list(flt, 1000, token)
        assert len(page) == 3 and token == ""
        with pytest.raises(de.InvalidArgument) as refused:
            await store.list(flt, -1)
        assert refused.value.field == "page_size"

    async def test_paging_while_messages_arrive_and_change_lists_each_earlier_message_exactly_once(self, store):
        folder = Folder()
        originals = [lifecycle(f"o{i:03d}", "QUEUED", at=T0 + timedelta(seconds=i // 2)) for i in range(60)]
        await store.apply(folder.updates([e for events in originals for e in events]))
        flt = MessageFilter(account_id="acct")
        first, token = await store.list(flt, 10)
        seen = [m.id for m in first]
        newer = [queued(f"n{i:03d}", at=T0 + timedelta(seconds=100 + i)) for i in range(15)]
        older = [queued(f"p{i:03d}", at=T0 - timedelta(seconds=1 + i)) for i in range(15)]
        late = [e for events in originals[::3] for e in lifecycle(events[0].message_id, "DELIVERED", at=T0)[1:]]
        await store.apply(folder.updates(newer + older + late))
        while token:
            page, token = await store.list(flt, 10, token)
            seen += [m.id for m in page]
        assert len(seen) == len(set(seen)), "a message was listed twice"
        assert {f"o{i:03d}" for i in range(60)} <= set(seen), "a message that existed before paging was skipped"
        assert not any(i.startswith("n") for i in seen), "newer messages belong before the first page"
        assert {i for i in seen if i.startswith("p")} == {e.message_id for e in older}

    async def test_the_checkpoint_is_written_with_the_rows(self, store):
        folder, events = Folder(), lifecycle("m1", "SENT", at=T0)
        await store.apply(folder.updates(events[:1]), {0: 5, 3: 9}, expected={0: None, 3: None})
        assert await store.checkpoint() == {0: 5, 3: 9}
        await store.apply(folder.updates(events[1:2]), {0: 7}, expected={0: 5})
        assert await store.checkpoint() == {0: 7, 3: 9}

    async def test_a_write_expecting_another_checkpoint_is_refused_whole(self, store):
        folder, events = Folder(), lifecycle("m1", "SENT", at=T0)
        await store.apply(folder.updates(events[:2]), {0: 2}, expected={0: None})
        before = await store.get("acct", "m1")
        for expected in ({0: 1}, {0: None}, {0: 2, 1: 4}):
            with pytest.raises(CheckpointConflict):
                await store.apply(
                    Folder().updates(events) + folder.updates(events[2:]), {0: 4, 1: 5}, expected=expected
                )
        assert await store.checkpoint() == {0: 2}
        assert await store.get("acct", "m1") == before
        assert len(await store.history("acct", "m1")) == 2

    async def test_reset_drops_rows_events_checkpoint_and_source(self, store):
        await store.bind_source("topic-a")
        await store.apply(Folder().updates(dataset(20)), {0: 100})
        await store.reset()
        assert await store.checkpoint() == {}
        assert await store.source() is None
        assert await store.list(MessageFilter(account_id="acct")) == ([], "")
        await store.bind_source("topic-b")
        assert await store.source() == "topic-b"

    async def test_a_store_projects_one_topic(self, store):
        await store.bind_source("topic-a")
        await store.bind_source("topic-a")
        with pytest.raises(SourceMismatch):
            await store.bind_source("topic-b")
        assert await store.source() == "topic-a"

    async def test_everything_survives_closing_and_reopening(self, store, make_store):
        folder = Folder()
        await store.bind_source("topic-a")
        await store.apply(folder.updates(dataset(30)), {0: 30, 1: 12})
        flt = MessageFilter(account_id="acct", tag="promo")
        before = (await pages(store, flt, 4), await store.checkpoint(), await store.load_states(folder.states))
        await store.close()
        again = make_store()
        await again.open()
        try:
            after = (await pages(again, flt, 4), await again.checkpoint(), await again.load_states(folder.states))
            assert after == before and await again.source() == "topic-a"
        finally:
            await again.close()

    async def test_account_events_replay_one_partition_from_an_offset_with_the_state_after_each(self, store):
        # Two accounts' messages interleaved in two partitions, at the offsets the projector read them.
        events = (
            lifecycle("a1", "DELIVERED", at=T0)
            + lifecycle("b1", "SENT", at=T0, account="other")
            + lifecycle("a2", "FAILED", at=T0)
        )
        placed = [(0 if e.message_id != "a2" else 1, offset) for offset, e in enumerate(events)]
        folder, updates = Folder(), []
        for (partition, offset), envelope in zip(placed, events):
            before = folder.states.get(envelope.message_id)
            after = folder.states[envelope.message_id] = apply(before, envelope)
            updates.append(MessageUpdate(after, (StoredEvent(envelope, after.status, partition, offset),)))
        for update in updates:  # one event per write, as batches would cut them
            await store.apply([update])

        replay = await store.account_events("acct", 0, 0)
        assert [(e.partition, e.offset, e.envelope.event_id) for e in replay] == [
            (p, o, e.event_id) for (p, o), e in zip(placed, events) if e.message_id == "a1"
        ]
        assert [e.state.status for e in replay] == [st.QUEUED, st.SENDING, st.SENDING, st.SENT, st.DELIVERED]
        assert [e.changed_status for e in replay] == [True, True, False, True, True]
        assert replay[-1].state == folder.states["a1"]
        # From an offset, and a page at a time.
        assert [e.offset for e in await store.account_events("acct", 0, 3, limit=1)] == [3]
        assert [e.envelope.message_id for e in await store.account_events("acct", 1, 0)] == ["a2"] * 3
        assert await store.account_events("acct", 0, 100) == []
        assert await store.account_events("nobody", 0, 0) == []
        assert [e.envelope.account_id for e in await store.account_events("other", 0, 0)] == ["other"] * 4

    async def test_queued_messages_and_messages_accepted_since_a_time(self, store):
        folder = Folder()
        await store.apply(
            folder.updates(
                lifecycle("q1", "QUEUED", at=T0)
                + lifecycle("s1", "SENT", at=T0)
                + lifecycle("q2", "QUEUED", at=T0 + timedelta(seconds=5), account="other")
                + [event(ev.MessageRouted(carrier="sim"), "orphan", 2, at=T0)]
            )
        )
        assert sorted(await store.queued_messages()) == [
            ("q1", to_micros(T0)),
            ("q2", to_micros(T0 + timedelta(seconds=5))),
        ]
        assert await store.accepted_since(to_micros(T0 + timedelta(seconds=1))) == [
            ("other", to_micros(T0 + timedelta(seconds=5)))
        ]
        assert sorted(await store.accepted_since(to_micros(T0))) == [
            ("acct", to_micros(T0)),
            ("acct", to_micros(T0)),
            ("other", to_micros(T0 + timedelta(seconds=5))),
        ]

    async def test_a_store_of_another_schema_version_must_be_rebuilt(self, store, make_store):
        await store.apply(Folder().updates(dataset(5)), {0: 5})
        await self.write_schema_version(store, "0")
        await store.close()
        outdated = make_store()
        with pytest.raises(StoreOutdated, match="rebuild"):
            await outdated.open()
        await outdated.open(reset_if_outdated=True)
        try:
            assert await outdated.checkpoint() == {}
        finally:
            await outdated.close()


# -- the backends ------------------------------------------------------------------------


class TestSqliteMessageStore(MessageStoreContract):
    @pytest.fixture
    def make_store(self, tmp_path) -> Callable[[], MessageStore]:
        return lambda: SqliteMessageStore(str(tmp_path / "messages.db"))

    async def write_schema_version(self, store, value):
        await store._w().run(
            lambda conn: conn.execute("UPDATE projection_meta SET value = ? WHERE key = 'schema_version'", (value,))
        )


class TestPostgresMessageStore(MessageStoreContract):
    @pytest.fixture
    def make_store(self, postgres) -> Callable[[], MessageStore]:  # noqa: F811
        schema = postgres.new_schema("store")
        return lambda: PostgresMessageStore(postgres.dsn, schema=schema)

    async def write_schema_version(self, store, value):
        await store._p().execute("UPDATE projection_meta SET value = $1 WHERE key = 'schema_version'", value)


async def test_an_in_memory_sqlite_store_works_in_one_process():
    store = SqliteMessageStore(":memory:")
    await store.open()
    try:
        folder = Folder()
        await store.apply(folder.updates(dataset(10)), {0: 1})
        page, _ = await store.list(MessageFilter(account_id="acct"), 100)
        assert [m.id for m in page] == reference(folder.states.values(), MessageFilter(account_id="acct"))
    finally:
        await store.close()
