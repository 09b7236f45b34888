"""The read model behind GetMessage, ListMessages, WatchMessage and history.

Built only by folding events from the log (plus the events this replica just
appended, which the log then repeats and the fold ignores). It holds no state
that the log cannot rebuild.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

from smsgw.deadlines import DeadlineIndex
from smsgw.domain import status as st
from smsgw.domain.message_state import MessageState, apply
from smsgw.events.envelope import message_id_for_idempotency_key
from smsgw.v1 import events_pb2 as ev


@dataclass(frozen=True)
class HistoryEntry:
    event: ev.EventEnvelope
    status_after: int


@dataclass(frozen=True)
class JournalEntry:
    """One record of the log as this replica read it, for account-wide watchers."""

    partition: int
    offset: int
    event: ev.EventEnvelope
    state: MessageState
    changed_status: bool


class MessageProjection:
    def __init__(self) -> None:
        self._states: dict[str, MessageState] = {}
        self._history: dict[str, list[HistoryEntry]] = {}
        self._watchers: dict[str, set[asyncio.Queue]] = {}
        # Account-wide journal in log-read order, with each record's position.
        self._journal: dict[str, list[JournalEntry]] = {}
        self._journaled: set[str] = set()
        self._account_watchers: dict[str, set[asyncio.Queue]] = {}
        self.positions: dict[int, int] = {}  # next offset to read, per partition
        #: Messages in QUEUED by when they last changed (epoch s): what the redriver looks at,
        #: instead of every message every round.
        self.queued_since = DeadlineIndex[str]()
        #: Called with each event read from the log that this replica had not applied yet (not
        #: its own appends, which it applied when it made them): what other replicas did.
        self.on_new_from_log: Callable[[ev.EventEnvelope], None] | None = None

    def __len__(self) -> int:
        return len(self._states)

    def get(self, message_id: str) -> MessageState | None:
        return self._states.get(message_id)

    def find_by_idempotency_key(self, account_id: str, key: str) -> MessageState | None:
        return self._states.get(message_id_for_idempotency_key(account_id, key))

    def history(self, message_id: str) -> list[HistoryEntry]:
        """Events in causal order (sequence); log order breaks ties."""
        return sorted(self._history.get(message_id, ()), key=lambda h: h.event.sequence)

    def all_states(self) -> list[MessageState]:
        return list(self._states.values())

    def apply(self, envelope: ev.EventEnvelope) -> MessageState | None:
        """Folds one event in; returns the new state if the event was new."""
        before = self._states.get(envelope.message_id)
        after = apply(before, envelope)
        if before is not None and after.version == before.version:
            return None  # a copy of an event already applied
        self._states[envelope.message_id] = after
        self.queued_since.set(envelope.message_id, after.updated_at.timestamp()
                              if after.status == st.QUEUED and after.updated_at is not None else None)
        self._history.setdefault(envelope.message_id, []).append(HistoryEntry(envelope, after.status))
        for queue in self._watchers.get(envelope.message_id, ()):
            queue.put_nowait((envelope, after))
        return after

    def apply_from_log(self, envelope: ev.EventEnvelope, partition: int, offset: int) -> None:
        """Folds a record read from the log and journals it with its position."""
        if self.apply(envelope) is not None and self.on_new_from_log is not None:
            self.on_new_from_log(envelope)
        self.positions[partition] = offset + 1
        if envelope.event_id in self._journaled:
            return  # the same event again at another offset (a producer retry): journal it once
        state = self._states.get(envelope.message_id)
        if state is None or state.status == 0:
            return
        self._journaled.add(envelope.event_id)
        entry = JournalEntry(partition, offset, envelope, state,
                             changed_status=any(t.event_id == envelope.event_id for t in state.transitions))
        self._journal.setdefault(state.account_id, []).append(entry)
        for queue in self._account_watchers.get(state.account_id, ()):
            queue.put_nowait(entry)

    def journal(self, account_id: str) -> list[JournalEntry]:
        return list(self._journal.get(account_id, ()))

    def watch_account(self, account_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._account_watchers.setdefault(account_id, set()).add(queue)
        return queue

    def unwatch_account(self, account_id: str, queue: asyncio.Queue) -> None:
        watchers = self._account_watchers.get(account_id)
        if watchers is not None:
            watchers.discard(queue)

    def watch(self, message_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._watchers.setdefault(message_id, set()).add(queue)
        return queue

    def unwatch(self, message_id: str, queue: asyncio.Queue) -> None:
        watchers = self._watchers.get(message_id)
        if watchers is not None:
            watchers.discard(queue)
            if not watchers:
                del self._watchers[message_id]

    async def wait_for(self, message_id: str, predicate: Callable[[MessageState | None], bool], timeout: float) -> MessageState | None:
        """Waits until the message's state satisfies `predicate` or `timeout` passes."""
        state = self.get(message_id)
        if predicate(state):
            return state
        queue = self.watch(message_id)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    _, state = await queue.get()
                    if predicate(state):
                        return state
        except TimeoutError:
            return self.get(message_id)
        finally:
            self.unwatch(message_id, queue)
