"""What intake knows of messages beyond the store: its own appends until the projector has
them, the messages waiting in QUEUED, and who is watching what.

The message store (SQLite or PostgreSQL, fed by the projector, the one reader of the events
topic in intake) answers for every message. This holds only what the store cannot say yet or
cannot push: so its size is bounded by this replica's recent appends, the QUEUED backlog and
its open streams, not by the number of messages the platform ever carried.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from smsgw.deadlines import DeadlineIndex
from smsgw.domain import status as st
from smsgw.domain.message_state import MessageState, apply
from smsgw.projections.store import LoggedEvent
from smsgw.v1 import events_pb2 as ev

T = TypeVar("T")

#: Updates a stream may have waiting before it is told it fell behind (and reads the store instead).
DEFAULT_QUEUE_SIZE = 1000
#: This replica's appends kept until the projector commits them (read-your-writes across the gap).
DEFAULT_OWN_CAPACITY = 20_000


class Subscription(Generic[T]):
    """A stream's queue of updates, bounded: a stream whose client reads slower than updates come
    is marked `fell_behind` (and gets nothing more here) instead of growing the server's memory.
    The stream then reads what it missed from the store, which has everything."""

    def __init__(self, maxsize: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self.fell_behind = False
        self._woken = asyncio.Event()

    def offer(self, item: T) -> None:
        if self.fell_behind:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.fell_behind = True
            self._woken.set()

    async def next(self, timeout: float | None = None) -> T | None:
        """The next update; None when the stream fell behind (or `timeout` passed)."""
        if self.fell_behind and self.queue.empty():
            return None
        getter = asyncio.ensure_future(self.queue.get())
        woken = asyncio.ensure_future(self._woken.wait())
        try:
            done, _ = await asyncio.wait({getter, woken}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if not getter.done():
                getter.cancel()
        if getter in done and not getter.cancelled():
            return getter.result()
        return None


class LiveMessages:
    def __init__(self, *, own_capacity: int = DEFAULT_OWN_CAPACITY, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._own: OrderedDict[str, MessageState] = OrderedDict()
        self._own_capacity = own_capacity
        self._queue_size = queue_size
        self._watchers: dict[str, set[Subscription[tuple[ev.EventEnvelope, MessageState]]]] = {}
        self._account_watchers: dict[str, set[Subscription[LoggedEvent]]] = {}
        #: Messages in QUEUED by when they last changed (epoch s): what the redriver looks at.
        self.queued_since = DeadlineIndex[str]()
        #: Called with each committed event this replica did not append itself (other replicas'
        #: work, and everything read at start): what the sending limits count.
        self.on_committed_elsewhere: Callable[[LoggedEvent], None] | None = None
        self.producer_name = ""

    # -- this replica's appends ----------------------------------------------------------
    def apply_own(self, envelope: ev.EventEnvelope, current: MessageState | None) -> MessageState:
        """Folds an event this replica just appended onto the message's `current` state."""
        after = apply(current, envelope)
        if current is not None and after.version == current.version:
            return current  # a copy of an event already applied
        self._own[envelope.message_id] = after
        self._own.move_to_end(envelope.message_id)
        while len(self._own) > self._own_capacity:
            self._own.popitem(last=False)  # the store has it by now, or will shortly
        self._index(after)
        for watcher in self._watchers.get(envelope.message_id, ()):
            watcher.offer((envelope, after))
        return after

    def own(self, message_id: str) -> MessageState | None:
        return self._own.get(message_id)

    def __len__(self) -> int:
        return len(self._own)

    # -- the projector's commits ---------------------------------------------------------
    def on_committed(self, notice: LoggedEvent) -> None:
        """The projector's listener: an event is in the store now."""
        state = notice.state
        own = self._own.get(state.message_id)
        if own is not None and own.version <= state.version:
            del self._own[state.message_id]
        self._index(state)
        if notice.envelope.producer != self.producer_name and self.on_committed_elsewhere is not None:
            self.on_committed_elsewhere(notice)
        for watcher in self._watchers.get(state.message_id, ()):
            watcher.offer((notice.envelope, state))
        for account_watcher in self._account_watchers.get(state.account_id, ()):
            account_watcher.offer(notice)

    def _index(self, state: MessageState) -> None:
        self.queued_since.set(
            state.message_id,
            state.updated_at.timestamp() if state.status == st.QUEUED and state.updated_at is not None else None,
        )

    # -- watchers ------------------------------------------------------------------------
    def watch(self, message_id: str) -> Subscription[tuple[ev.EventEnvelope, MessageState]]:
        return self._subscribe(self._watchers, message_id)

    def unwatch(self, message_id: str, subscription: Subscription) -> None:
        self._unsubscribe(self._watchers, message_id, subscription)

    def watch_account(self, account_id: str) -> Subscription[LoggedEvent]:
        return self._subscribe(self._account_watchers, account_id)

    def unwatch_account(self, account_id: str, subscription: Subscription) -> None:
        self._unsubscribe(self._account_watchers, account_id, subscription)

    def _subscribe(self, registry: dict, key: str) -> Subscription:
        subscription: Subscription = Subscription(self._queue_size)
        registry.setdefault(key, set()).add(subscription)
        return subscription

    @staticmethod
    def _unsubscribe(registry: dict, key: str, subscription: Subscription) -> None:
        watchers = registry.get(key)
        if watchers is not None:
            watchers.discard(subscription)
            if not watchers:
                del registry[key]  # no empty sets left behind by streams that ended

    def watcher_count(self) -> int:
        return sum(map(len, self._watchers.values())) + sum(map(len, self._account_watchers.values()))
