"""When each key next needs attention: a time index, so a timer never scans a whole table.

routing holds scheduled messages until their send time and receipt waits out receipt
timeouts and orphan windows. Their timers used to decode every record of their table on
every tick, a cost that grew with every message ever sent (2-20 % of a service's CPU under
load). Here each key has at most one deadline; `pop_due` hands over the keys whose time
came, cheapest first, in O(log n) each.

Keys must be orderable (strings, tuples of ints and bytes): two deadlines at the same time are
ordered by key. A sequence number in each heap entry would spare that, at 40 bytes an entry, and
a receipt replica holds two entries for each message it retains.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class DeadlineIndex(Generic[K]):
    def __init__(self) -> None:
        self._at: dict[K, float] = {}
        # (time, key); entries whose time no longer matches `_at` are stale and skipped.
        self._heap: list[tuple[float, K]] = []

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, key: K) -> bool:
        return key in self._at

    def deadline(self, key: K) -> float | None:
        return self._at.get(key)

    def set(self, key: K, at: float | None) -> None:
        """Sets (or with None clears) the key's deadline, replacing any earlier one."""
        if at is None:
            self._at.pop(key, None)
            return
        if self._at.get(key) == at:
            return
        self._at[key] = at
        heapq.heappush(self._heap, (at, key))
        if len(self._heap) > 2 * len(self._at) + 1024:
            self._compact()

    def clear(self) -> None:
        self._at.clear()
        self._heap.clear()

    def earliest(self) -> float | None:
        """The soonest deadline set (None: none), dropping the stale entries above it."""
        heap = self._heap
        while heap and self._at.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float, limit: int | None = None) -> list[K]:
        """Removes and returns the keys whose deadline is at or before `now` (at most `limit`)."""
        due: list[K] = []
        heap = self._heap
        while heap and heap[0][0] <= now and (limit is None or len(due) < limit):
            at, key = heapq.heappop(heap)
            if self._at.get(key) == at:
                del self._at[key]
                due.append(key)
        return due

    def _compact(self) -> None:
        self._heap = [(at, key) for key, at in self._at.items()]
        heapq.heapify(self._heap)
