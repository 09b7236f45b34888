"""Who is watching what: one bounded queue per open stream, by key (a message, an account).

Every watch stream in intake (WatchMessage, WatchMessages, WatchMessageBatches, WatchInbound)
is fed through these. A stream whose client reads slower than updates come is marked as fallen
behind: its queue is emptied at once (it never grows past `queue_size`) and it is given nothing
more. What the stream does then is its own: WatchMessages, WatchMessageBatches and WatchInbound
end with WATCH_FELL_BEHIND and the cursor to resume from (the store and the inbound log have
everything after it); WatchMessage reads its one message's newest state from the store. Memory
stays bounded, nothing is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

#: Updates a stream may have waiting before it is told it fell behind. Well above what one
#: commit of the projector tells at once (at most its batch, 2,000 events), so a client that
#: reads as fast as the server sends is never told so by a burst; each slot holds a reference
#: to an update every stream shares, so a full queue costs ~80 KB.
DEFAULT_QUEUE_SIZE = 10_000


class Subscription(Generic[T]):
    """A stream's queue of updates, bounded: a stream whose client reads slower than updates come
    is marked `fell_behind` (its queue emptied, nothing more queued) instead of growing the
    server's memory. What it missed is in the store and the logs, which have everything.

    `wants`: which updates the stream would send (its filter); the others are not queued, so a
    stream that asked for a few statuses is not told it fell behind by updates it would drop."""

    def __init__(self, maxsize: int = DEFAULT_QUEUE_SIZE, wants: Callable[[T], bool] | None = None) -> None:
        self.queue: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self.fell_behind = False
        self.wants = wants
        self._woken = asyncio.Event()

    def offer(self, item: T) -> None:
        if self.fell_behind or (self.wants is not None and not self.wants(item)):
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.fell_behind = True
            while not self.queue.empty():  # released now, not when the stream gets round to it
                self.queue.get_nowait()
            self._woken.set()

    async def next(self, timeout: float | None = None) -> T | None:
        """The next update; None when the stream fell behind (or `timeout` passed)."""
        if self.fell_behind:
            return None
        if not self.queue.empty():
            # A stream that keeps up mostly finds one waiting: no futures made to wait for it.
            return self.queue.get_nowait()
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

    def ready(self, limit: int) -> list[T]:
        """The updates waiting now, at most `limit`, without waiting for more (a batch to send
        together after `next`); none once the stream fell behind."""
        taken: list[T] = []
        while len(taken) < limit and not self.fell_behind and not self.queue.empty():
            taken.append(self.queue.get_nowait())
        return taken


class Watchers(Generic[T]):
    """Subscriptions by key. No empty set is left behind by streams that ended."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._by_key: dict[str, set[Subscription[T]]] = {}

    def subscribe(self, key: str, wants: Callable[[T], bool] | None = None) -> Subscription[T]:
        subscription: Subscription[T] = Subscription(self._queue_size, wants)
        self._by_key.setdefault(key, set()).add(subscription)
        return subscription

    def unsubscribe(self, key: str, subscription: Subscription[T]) -> None:
        watchers = self._by_key.get(key)
        if watchers is not None:
            watchers.discard(subscription)
            if not watchers:
                del self._by_key[key]

    def offer(self, key: str, item: T) -> None:
        """Hands `item` to every stream watching `key`."""
        for subscription in self._by_key.get(key, ()):
            subscription.offer(item)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_key)

    def count(self) -> int:
        return sum(map(len, self._by_key.values()))

    def keys(self) -> frozenset[str]:
        """What is watched now."""
        return frozenset(self._by_key)
