"""MessageStore: the message read model in a database, written only by the projector.

One row per message (the columns ListMessages filters on, and the public
`smsgw.v1.Message` view as bytes), the message's events (so its state can be
reloaded by the same pure fold that built it, and its history answered), and a
checkpoint: per partition of the events topic, the offset of the next record to
apply. Rows and checkpoint are written in one transaction, so after a crash the
projector resumes exactly where the committed rows end: nothing is applied twice
and nothing is skipped (eventsourcing's "Tracking" record).

Everything in a store can be rebuilt from the log: `reset()` drops it, and a
replay from the beginning gives the same answers.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from smsgw.domain.message_state import MessageState, apply, fold
from smsgw.events.envelope import decode_event, encode
from smsgw.v1 import events_pb2 as ev
from smsgw.v1 import message_pb2 as mp
from smsgw.views import message_view

from .query import MessageFilter, tags_of, to_micros

#: Bumped when the tables change shape (or `tags_of` changes meaning): an older store must be rebuilt.
#: 2: each event keeps its account and its position in the log (WatchMessages resumes from the store).
SCHEMA_VERSION = "2"

Render = Callable[[MessageState], mp.Message]


class StoreError(RuntimeError):
    """The store cannot do what was asked; the message says what to do about it."""


class CheckpointConflict(StoreError):
    """The stored checkpoint is not where this writer left it: another projector wrote this store.

    The transaction was rolled back; reload the checkpoint (and forget cached states) and go on from there.
    """


class SourceMismatch(StoreError):
    """The store was projected from another topic; pointing it at this one would mix two logs."""


class StoreOutdated(StoreError):
    """The store was written by an older schema; rebuild it (`smsgw projections rebuild`)."""


@dataclass(frozen=True)
class StoredEvent:
    """One event of a message as the store keeps it, with where the log has it (None: not from the log)."""

    envelope: ev.EventEnvelope
    status_after: int
    partition: int | None = None
    offset: int | None = None
    #: The envelope as the log has it (the record's value), stored as is instead of encoded again.
    raw: bytes | None = None


@dataclass(frozen=True)
class LoggedEvent:
    """An event that changed a message, where the log has it, and the message's state right after it:
    what an account-wide watch (WatchMessages) delivers, live or replayed from the store."""

    partition: int
    offset: int
    envelope: ev.EventEnvelope
    state: MessageState
    #: `state`'s public view as the store wrote it (`MessageStore.render`), when the projector
    #: rendered this very state: a watch sends these bytes instead of building the view again.
    view: bytes | None = None

    @property
    def changed_status(self) -> bool:
        return any(t.event_id == self.envelope.event_id for t in self.state.transitions)


@dataclass(frozen=True)
class MessageUpdate:
    """A message's state after some new events, and those events in the order they were folded.

    `events` are exactly the events that changed `state.version` (copies are left out), so the
    i-th of them is the message's event number `state.version - len(events) + i + 1`.
    """

    state: MessageState
    events: tuple[StoredEvent, ...] = ()
    #: `state` rendered by `MessageStore.render`, if the caller did already (else the store does).
    view: bytes | None = None

    def ordinals(self) -> range:
        first = self.state.version - len(self.events) + 1
        if first < 1:
            raise ValueError(f"{self.state.message_id}: {len(self.events)} new events but version {self.state.version}")
        return range(first, self.state.version + 1)


def default_render(state: MessageState) -> mp.Message:
    return message_view(state)


def fold_stored(envelopes: Iterable[bytes]) -> MessageState | None:
    """A message's state from its stored events, in the order they were first folded."""
    return fold(decode_event(raw) for raw in envelopes)


def fold_rows(rows: Iterable[tuple[str, bytes]]) -> dict[str, MessageState]:
    """(message id, stored envelope) rows, in first-seen order per message -> each message's state."""
    by_message: dict[str, list[bytes]] = {}
    for message_id, raw in rows:
        by_message.setdefault(message_id, []).append(bytes(raw))
    states = {message_id: fold_stored(raws) for message_id, raws in by_message.items()}
    return {message_id: state for message_id, state in states.items() if state is not None}


def encode_event(envelope: ev.EventEnvelope) -> bytes:
    return encode(envelope)


class MessageStore(abc.ABC):
    """The read model behind GetMessage, ListMessages and GetMessageHistory, in a database.

    Every method is a coroutine; a store is opened once and closed once. The projector calls
    `apply` (or, on a shared store, the members of a partitioned one, each for its partitions: the
    `expected` checkpoints keep two writers of a partition from both succeeding); readers may be
    many, in this process or others.
    """

    def __init__(self, render: Render | None = None):
        self._render = render or default_render

    def render(self, state: MessageState) -> bytes:
        """The public view of `state` (a Message) as the store keeps it, serialized."""
        return self._render(state).SerializeToString(deterministic=True)

    # -- lifecycle -----------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self, *, reset_if_outdated: bool = False) -> None:
        """Connects and creates the tables if missing.

        Raises StoreOutdated when the tables are of another SCHEMA_VERSION, unless
        `reset_if_outdated`, which drops them (the projector then replays the log).
        """

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> MessageStore:
        await self.open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- writing (the projector) ---------------------------------------------------------
    @abc.abstractmethod
    async def apply(
        self,
        updates: Sequence[MessageUpdate],
        offsets: Mapping[int, int] | None = None,
        *,
        expected: Mapping[int, int | None] | None = None,
    ) -> None:
        """Upserts the rows of `updates` and advances the checkpoint to `offsets`, in one transaction.

        `offsets`: partition -> offset of the next record to apply. `expected`: partition -> the
        checkpoint this writer believes is stored (None: nothing stored yet); if any differs,
        nothing is written and CheckpointConflict is raised.
        """

    @abc.abstractmethod
    async def checkpoint(self) -> dict[int, int]:
        """Partition -> offset of the next record to apply; empty for a new or reset store."""

    @abc.abstractmethod
    async def bind_source(self, topic: str) -> None:
        """Records which topic this store projects; SourceMismatch if it already projects another."""

    @abc.abstractmethod
    async def source(self) -> str | None: ...

    @abc.abstractmethod
    async def reset(self) -> None:
        """Drops every row, event, checkpoint and the source, and recreates empty tables (one transaction)."""

    # -- reading -------------------------------------------------------------------------
    @abc.abstractmethod
    async def get(self, account_id: str, message_id: str) -> mp.Message | None:
        """The public view of one message of this account; None if unknown, of another account, or not queued."""

    @abc.abstractmethod
    async def list(self, flt: MessageFilter, page_size: int = 0, page_token: str = "") -> tuple[list[mp.Message], str]:
        """One page, newest first, and the token of the next page ("" on the last one)."""

    @abc.abstractmethod
    async def load_states(self, message_ids: Iterable[str]) -> dict[str, MessageState]:
        """The folded state of each known message among `message_ids` (any status, any account)."""

    async def get_state(self, message_id: str) -> MessageState | None:
        return (await self.load_states([message_id])).get(message_id)

    @abc.abstractmethod
    async def history(self, account_id: str, message_id: str) -> builtins.list[StoredEvent]:
        """Every stored event of one message of this account, by sequence (then first-seen order)."""

    async def account_events(
        self, account_id: str, partition: int, from_offset: int, limit: int = 500
    ) -> builtins.list[LoggedEvent]:
        """The account's events at or after `from_offset` in one partition of the log, in log order, at
        most `limit`, each with its message's state right after it (WatchMessages' replay)."""
        rows = await self._account_event_rows(account_id, partition, from_offset, limit)
        if not rows:
            return []
        after: dict[tuple[str, int], tuple[ev.EventEnvelope, MessageState]] = {}
        by_message: dict[str, list[tuple[int, bytes]]] = {}
        for message_id, ordinal, raw in await self._event_rows({row[0] for row in rows}):
            by_message.setdefault(message_id, []).append((ordinal, bytes(raw)))
        for message_id, events in by_message.items():
            state = None
            for ordinal, raw in sorted(events):
                envelope = decode_event(raw)
                state = apply(state, envelope)
                after[(message_id, ordinal)] = (envelope, state)
        return [
            LoggedEvent(partition, offset, *after[(message_id, ordinal)])
            for message_id, ordinal, offset in rows
            if (message_id, ordinal) in after
        ]

    async def log_events(
        self,
        ranges: Mapping[int, tuple[int, int]],
        limit: int = 1000,
        known: Callable[[str], MessageState | None] | None = None,
        *,
        accounts: Iterable[str] | None = None,
        message_ids: Iterable[str] | None = None,
    ) -> builtins.list[LoggedEvent]:
        """Every account's events stored in `ranges` (partition -> [from, until) offsets), by
        partition then offset, at most `limit`, each with its message's state right after it (the
        store follower's read, follower.py; call `prepare_following` once first).

        `known`: the states the caller has already (a message whose known state is the one just
        before its first event here is folded on from it; the others are folded from the store).
        `accounts` / `message_ids` (given together): only every message's first event and the
        events of these accounts and messages."""
        only = None if accounts is None else (sorted(set(accounts)), sorted(set(message_ids or ())))
        rows = await self._log_event_rows(ranges, limit, only)
        if not rows:
            return []
        first: dict[str, int] = {}
        for _partition, message_id, ordinal, _offset, _raw in rows:
            first.setdefault(message_id, ordinal)
        states: dict[str, MessageState | None] = {}
        unknown = set()
        for message_id, ordinal in first.items():
            state = known(message_id) if known is not None else None
            if ordinal == 1:
                states[message_id] = None
            elif state is not None and state.version == ordinal - 1:
                states[message_id] = state
            else:
                unknown.add(message_id)
        if unknown:
            earlier: dict[str, list[tuple[int, bytes]]] = {}
            for message_id, ordinal, raw in await self._event_rows(unknown):
                if ordinal < first[message_id]:
                    earlier.setdefault(message_id, []).append((ordinal, bytes(raw)))
            for message_id in unknown:
                states[message_id] = fold_stored(raw for _ordinal, raw in sorted(earlier.get(message_id, [])))
        told = []
        for partition, message_id, _ordinal, offset, raw in rows:
            envelope = decode_event(bytes(raw))
            state = states[message_id] = apply(states[message_id], envelope)
            told.append(LoggedEvent(partition, offset, envelope, state))
        return told

    @abc.abstractmethod
    async def prepare_following(self) -> None:
        """Creates, if missing, the index `log_events` reads by (a store that is not followed
        does without it: it would cost every event written)."""

    @abc.abstractmethod
    async def _log_event_rows(
        self,
        ranges: Mapping[int, tuple[int, int]],
        limit: int,
        only: tuple[builtins.list[str], builtins.list[str]] | None = None,
    ) -> builtins.list[tuple[int, str, int, int, bytes]]:
        """(partition, message id, ordinal, offset, envelope) of the events in `ranges` (partition ->
        [from, until) offsets), by partition then offset; one statement, however many partitions.
        `only` (accounts, message ids): first events (ordinal 1) and those of these only."""

    @abc.abstractmethod
    async def _account_event_rows(
        self, account_id: str, partition: int, from_offset: int, limit: int
    ) -> builtins.list[tuple[str, int, int]]:
        """(message id, ordinal, offset) of the account's events in `partition` from `from_offset`, by offset."""

    @abc.abstractmethod
    async def _event_rows(self, message_ids: Iterable[str]) -> builtins.list[tuple[str, int, bytes]]:
        """(message id, ordinal, envelope) of every stored event of these messages."""

    @abc.abstractmethod
    async def queued_messages(self) -> builtins.list[tuple[str, int]]:
        """(message id, updated_at in epoch microseconds) of every message in QUEUED: what intake's
        redriver watches, read once at start."""

    @abc.abstractmethod
    async def accepted_since(self, since_micros: int) -> builtins.list[tuple[str, int]]:
        """(account id, created_at in epoch microseconds) of every message accepted at or after
        `since_micros`, oldest first: what intake's sending limits count, read once at start."""

    # -- shared pieces -------------------------------------------------------------------
    def _rows(self, updates: Sequence[MessageUpdate]) -> Rows:
        """The parameter tuples every backend writes, in one shape."""
        messages: builtins.list[tuple] = []
        progress: builtins.list[tuple] = []
        tags: builtins.list[tuple] = []
        events: builtins.list[tuple] = []
        ids: builtins.list[tuple] = []
        for update in updates:
            state = update.state
            view = update.view if update.view is not None else self.render(state)
            ordinals = update.ordinals()
            if ordinals.start > 1 and not any(e.envelope.HasField("message_queued") for e in update.events):
                # A stored message's later events: identity, creation time and tags stay as stored.
                progress.append((int(state.status), to_micros(state.updated_at), state.version, view, state.message_id))
            else:
                messages.append(
                    (
                        state.message_id,
                        state.account_id,
                        state.to,
                        state.sender,
                        int(state.status),
                        to_micros(state.created_at),
                        to_micros(state.updated_at),
                        state.version,
                        view,
                    )
                )
                tags.extend((state.message_id, tag) for tag in tags_of(state))
                ids.append((state.message_id,))
            for ordinal, stored in zip(ordinals, update.events):
                events.append(
                    (
                        state.message_id,
                        ordinal,
                        stored.envelope.event_id,
                        stored.envelope.sequence,
                        int(stored.status_after),
                        stored.raw if stored.raw is not None else encode_event(stored.envelope),
                        state.account_id,
                        stored.partition,
                        stored.offset,
                    )
                )
        return Rows(messages=messages, progress=progress, tags=tags, events=events, ids=ids)


@dataclass(frozen=True)
class Rows:
    messages: list[tuple]  # new or (re)queued: id, account_id, to, from, status, created_at, updated_at,
    # version, view
    progress: list[tuple]  # stored, later events only: status, updated_at, version, view, id
    tags: list[tuple]  # message_id, tag (of the `messages` rows)
    events: list[tuple]  # message_id, ordinal, event_id, sequence, status_after, envelope, account_id,
    # log partition, log offset
    ids: list[tuple]  # (message_id,) of every `messages` row: their tags are rewritten


def check_expected(stored: Mapping[int, int], expected: Mapping[int, int | None] | None) -> None:
    for partition, offset in (expected or {}).items():
        if stored.get(partition) != offset:
            raise CheckpointConflict(
                f"checkpoint of partition {partition} is {stored.get(partition)}, this writer expected {offset}: "
                "another projector writes this store; reload the checkpoint and resume from it"
            )


def view_of(raw: bytes) -> mp.Message:
    message = mp.Message()
    message.ParseFromString(raw)
    return message
