"""The commands a partition of the dispatch topic held recently, by id (pure, no I/O).

Routing publishes a message's dispatch command before it records, in its table's changelog,
that the message was routed. Killed in between, it decides the same message again when it
reads its events again, and publishes the same command (same id: ids are derived from the
event that caused them) a second time. Both copies are keyed by the message id, so they land
in the same partition, the copy after the original and close to it: only what routing
published in between (at most a batch or two) separates them.

The dispatcher therefore remembers the ids of the last `window` commands of each partition it
reads, and hands a command whose id it has already seen to nobody: the original was (or will
be) handled. After a restart or a rebalance it reads the `window` records before its committed
offset again only to learn their ids, so the copy is recognised by a process that never saw
the original.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

#: Per partition. Routing re-publishes at most what it had not yet recorded when it died (its
#: pipeline holds up to two batches of 2,000), so the copies come well within this distance.
DEFAULT_WINDOW = 8192


class RecentCommands:
    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.window = window
        self._order: dict[Hashable, deque[str]] = {}
        self._ids: dict[Hashable, set[str]] = {}

    def seen(self, partition: Hashable, command_id: str) -> bool:
        """True when a command with this id came earlier in this partition (within the window)."""
        ids = self._ids.get(partition)
        return ids is not None and command_id in ids

    def add(self, partition: Hashable, command_id: str) -> None:
        """Remembers a command read from the partition (in offset order), forgetting the oldest
        beyond the window."""
        order = self._order.setdefault(partition, deque())
        ids = self._ids.setdefault(partition, set())
        if command_id in ids:
            return
        order.append(command_id)
        ids.add(command_id)
        if len(order) > self.window:
            ids.discard(order.popleft())

    def drop(self, partition: Hashable) -> None:
        """Forgets a partition this reader no longer owns (whoever reads it next learns it again)."""
        self._order.pop(partition, None)
        self._ids.pop(partition, None)

    def __len__(self) -> int:
        return sum(len(order) for order in self._order.values())
