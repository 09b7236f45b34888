"""Which offsets may be committed when commands finish out of order (pure, no I/O).

The dispatcher handles each command in its own task, so a carrier that is down holds
only its own commands while the others finish. A partition's committed offset may
only pass commands that have an outcome: it stops at the oldest one still in flight.

The commands that finished beyond that offset travel with the commit, in its metadata
(as Confluent's parallel-consumer does): whoever reads the partition next, this process
after a crash or another replica after a rebalance, skips them instead of submitting
them to their carrier a second time. Without it, one carrier down for an hour and one
restart would send that hour's traffic of every other carrier again.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable, Iterable

log = logging.getLogger(__name__)

#: Version tag of the metadata format; anything else is ignored (read as "nothing finished ahead").
METADATA_PREFIX = "smsgw-done-v1:"
#: Kafka refuses commit metadata over `offset.metadata.max.bytes` (4096 by default).
MAX_METADATA_CHARS = 4000


def encode_finished_ahead(position: int, offsets: Iterable[int], limit: int = MAX_METADATA_CHARS) -> tuple[str, bool]:
    """Offsets finished at or after ``position``, as ranges of distances from it:
    ``smsgw-done-v1:0-3,7,9-12``. Returns (metadata, complete); when the ranges do not fit
    in ``limit`` the ones nearest the position are kept (the rest would be redelivered:
    duplicates, never a loss)."""
    deltas = sorted({offset - position for offset in offsets if offset >= position})
    ranges: list[str] = []
    length = len(METADATA_PREFIX)
    index = 0
    while index < len(deltas):
        end = index
        while end + 1 < len(deltas) and deltas[end + 1] == deltas[end] + 1:
            end += 1
        text = str(deltas[index]) if end == index else f"{deltas[index]}-{deltas[end]}"
        if length + len(text) + (1 if ranges else 0) > limit:
            return METADATA_PREFIX + ",".join(ranges), False
        ranges.append(text)
        length += len(text) + (1 if len(ranges) > 1 else 0)
        index = end + 1
    return (METADATA_PREFIX + ",".join(ranges)) if ranges else "", True


def decode_finished_ahead(position: int, metadata: str | None) -> set[int]:
    """The offsets a commit's metadata says were finished; empty for metadata that is not ours
    or does not parse (the safe reading: those commands are handled again)."""
    if not metadata or not metadata.startswith(METADATA_PREFIX):
        return set()
    offsets: set[int] = set()
    try:
        for part in filter(None, metadata[len(METADATA_PREFIX) :].split(",")):
            first, _, last = part.partition("-")
            start, end = int(first), int(last or first)
            if start < 0 or end < start:
                raise ValueError(part)
            offsets.update(range(position + start, position + end + 1))
    except ValueError:
        log.warning(
            "commit metadata %r does not parse; commands past offset %d will be handled again", metadata[:80], position
        )
        return set()
    return offsets


class OffsetWatermarks:
    def __init__(self) -> None:
        self._started: dict[Hashable, deque[int]] = {}
        self._done: dict[Hashable, set[int]] = {}
        #: One past the last offset the watermark passed, per partition.
        self._passed: dict[Hashable, int] = {}
        #: Offsets an earlier reader finished (from its commit's metadata) not fetched again yet.
        self._finished_before: dict[Hashable, set[int]] = {}
        self._changed: set[Hashable] = set()
        self._truncation_logged: set[Hashable] = set()

    def resume(self, partition: Hashable, committed: int | None, metadata: str | None) -> None:
        """Starts tracking a partition this reader was just given, from its last commit."""
        self.drop(partition)
        self._started[partition] = deque()
        self._done[partition] = set()
        if committed is not None and committed >= 0:
            self._finished_before[partition] = decode_finished_ahead(committed, metadata)

    def is_tracked(self, partition: Hashable) -> bool:
        return partition in self._started

    def finished_before(self, partition: Hashable, offset: int) -> bool:
        """True when the last commit says this offset was already handled: skip it (it is
        then counted as started and finished, so the commit moves past it)."""
        known = self._finished_before.get(partition)
        if not known or offset not in known:
            return False
        known.discard(offset)
        self.started(partition, offset)
        self.finished(partition, offset)
        return True

    def started(self, partition: Hashable, offset: int) -> None:
        """Offsets of one partition must be started in increasing order (as they are fetched)."""
        self._started.setdefault(partition, deque()).append(offset)
        self._done.setdefault(partition, set())

    def finished(self, partition: Hashable, offset: int) -> None:
        if partition not in self._started:
            return  # the partition was dropped meanwhile (revoked)
        self._done[partition].add(offset)
        started, done = self._started[partition], self._done[partition]
        while started and started[0] in done:
            done.discard(started[0])
            self._passed[partition] = started.popleft() + 1
        self._changed.add(partition)

    def committable(self) -> dict[Hashable, tuple[int, str]]:
        """Per partition that changed since the last call: the offset to commit (its oldest
        command still in flight, or one past the last one) and the metadata naming the
        commands finished beyond it."""
        result: dict[Hashable, tuple[int, str]] = {}
        for partition in self._changed:
            if partition not in self._started:
                continue
            started = self._started[partition]
            position = started[0] if started else self._passed.get(partition)
            if position is None:
                continue
            ahead = self._done[partition] | self._finished_before.get(partition, set())
            metadata, complete = encode_finished_ahead(position, ahead)
            if not complete and partition not in self._truncation_logged:
                self._truncation_logged.add(partition)
                log.warning(
                    "%s: %d commands finished past offset %d do not fit in the commit's metadata; "
                    "a restart would hand some of them to their carrier again",
                    partition,
                    len(ahead),
                    position,
                )
            result[partition] = (position, metadata)
        self._changed = set()
        return result

    def in_flight(self, partition: Hashable | None = None) -> int:
        if partition is not None:
            return len(self._started.get(partition, ()))
        return sum(len(started) for started in self._started.values())

    def drop(self, partition: Hashable) -> None:
        """Forget a partition this consumer no longer owns (its new owner starts from the commit)."""
        self._started.pop(partition, None)
        self._done.pop(partition, None)
        self._passed.pop(partition, None)
        self._finished_before.pop(partition, None)
        self._changed.discard(partition)
        self._truncation_logged.discard(partition)

    def partitions(self) -> set[Hashable]:
        return set(self._started)
