"""Which offsets may be committed when commands finish out of order (pure, no I/O).

The dispatcher handles each command in its own task, so a carrier that is down holds
only its own commands while the others finish. A partition's committed offset may
only pass commands that have an outcome: it stops at the oldest one still in flight.
"""

from __future__ import annotations

from collections import deque
from typing import Hashable


class OffsetWatermarks:
    def __init__(self) -> None:
        self._started: dict[Hashable, deque[int]] = {}
        self._done: dict[Hashable, set[int]] = {}
        self._next: dict[Hashable, int] = {}

    def started(self, partition: Hashable, offset: int) -> None:
        """Offsets of one partition must be started in increasing order (as they are fetched)."""
        self._started.setdefault(partition, deque()).append(offset)
        self._done.setdefault(partition, set())

    def finished(self, partition: Hashable, offset: int) -> None:
        if partition not in self._started:
            return                      # the partition was dropped meanwhile (revoked)
        self._done[partition].add(offset)
        started, done = self._started[partition], self._done[partition]
        while started and started[0] in done:
            done.discard(started[0])
            self._next[partition] = started.popleft() + 1

    def committable(self) -> dict[Hashable, int]:
        """Per partition, the offset to commit: one past the last command of an unbroken run of
        finished ones (only partitions that moved since the last call)."""
        moved, self._next = self._next, {}
        return moved

    def in_flight(self, partition: Hashable | None = None) -> int:
        if partition is not None:
            return len(self._started.get(partition, ()))
        return sum(len(started) for started in self._started.values())

    def drop(self, partition: Hashable) -> None:
        """Forget a partition this consumer no longer owns (its new owner starts from the commit)."""
        self._started.pop(partition, None)
        self._done.pop(partition, None)
        self._next.pop(partition, None)

    def partitions(self) -> set[Hashable]:
        return set(self._started)
