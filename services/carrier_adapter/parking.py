"""Which commands wait without a task, so one slow carrier cannot hold the others (pure, no I/O).

A carrier may take at most its share of commands at once on this replica (each a task
submitting, or retrying while the carrier is down or throttled): `per_carrier`, or more for a
carrier that takes more at once itself (`carrier_shares`). Beyond that its commands
are *parked*: their offsets are kept, the commit stays behind them, and the commands
themselves are kept too while fewer than `keep` are (`dispatch_parked_in_memory`). Once the
carrier has drained to half its share, the dispatcher starts its parked commands in offset
order (so per-carrier order holds): the kept ones at once, and for the first one parked as an
offset only it rewinds the partition to it and reads it again, starting the parked ones and
skipping what already finished or still runs.

Without this, a carrier that is down (or a campaign to a carrier with a low TPS) filled
the whole replica's window and every other carrier waited behind it.

Each carrier has one share per priority lane (smsgw.lanes): a HIGH command parks only behind
other HIGH commands, never behind a campaign's NORMAL ones, and once running it goes first at
the carrier's own queues (an SMPP bind's window and rate gate).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping

from smsgw.lanes import Lane
from smsgw.v1.carrier_pb2 import DispatchCommand

#: A carrier's lane: what a share of running commands and a queue of parked ones belong to.
Queue = tuple[str, Lane]


def carrier_shares(concurrency: Mapping[str, int | None], per_carrier: int) -> dict[str, int]:
    """Each carrier's share of running commands: `per_carrier`, or twice what the carrier takes at
    once itself (its window, its concurrent requests) if that is more.

    Why not simply a large share: every running command is a task, and beyond what the carrier
    takes at once they only queue, in its window's queue and in the event loop. Under a saturated
    CPU that queue is what an OTP waits behind even in its own lane (docs/benchmarks.md, stop 38:
    the worst of 40 OTPs in a 10,000-message campaign was 351-609 ms with a share of 500, 242-311
    ms with 200 and 189-274 ms with 100, at the same throughput). Why twice the carrier's own: a command keeps its place
    while its CarrierAccepted is written, after it left the window, so a share of just the window
    would leave the window part empty at a fast carrier."""
    return {name: max(per_carrier, 2 * (taken or 0)) for name, taken in concurrency.items()}


class CarrierParking:
    def __init__(self, per_carrier: int, keep: int = 0, shares: Mapping[str, int] | None = None) -> None:
        """`keep`: how many parked commands (all partitions together) are kept in memory;
        `shares`: a carrier's share when it is not `per_carrier` (carrier_shares)."""
        if per_carrier < 1 or any(share < 1 for share in (shares or {}).values()):
            raise ValueError("a carrier's share must be at least 1")
        self.per_carrier = per_carrier
        self._shares = dict(shares or {})
        self.keep = keep
        #: partition -> offset -> the command, for the parked ones kept in memory.
        self._kept: dict[Hashable, dict[int, DispatchCommand]] = {}
        self._kept_count = 0
        self._active: Counter[Queue] = Counter()
        #: partition -> carrier lane -> offsets (oldest first) of the commands waiting without a task.
        self._parked: dict[Hashable, dict[Queue, dict[int, None]]] = {}
        #: partition -> offset -> carrier lane, for the same commands.
        self._queue_of: dict[Hashable, dict[int, Queue]] = {}
        self._parked_per_queue: Counter[Queue] = Counter()

    # --- the running share of each carrier lane ---------------------------------------------

    def started(self, carrier: str, lane: Lane = Lane.NORMAL) -> None:
        self._active[carrier, lane] += 1

    def finished(self, carrier: str, lane: Lane = Lane.NORMAL) -> None:
        queue = (carrier, lane)
        self._active[queue] -= 1
        if self._active[queue] <= 0:
            del self._active[queue]

    def active(self, carrier: str) -> int:
        """Commands of the carrier running now, every lane."""
        return sum(count for (name, _lane), count in self._active.items() if name == carrier)

    def carriers(self) -> set[str]:
        """Carriers with commands running or parked now."""
        return {carrier for carrier, _lane in set(self._active) | set(self._parked_per_queue)}

    def share(self, carrier: str) -> int:
        """How many commands of each lane of the carrier may run at once."""
        return self._shares.get(carrier, self.per_carrier)

    def has_room(self, carrier: str, lane: Lane = Lane.NORMAL) -> bool:
        return self._active[carrier, lane] < self.share(carrier)

    # --- parked commands ---------------------------------------------------------------------

    def should_park(self, carrier: str, lane: Lane = Lane.NORMAL) -> bool:
        """A new command waits without a task when its carrier's lane is at its share, or
        already has parked commands (which go first: they are older)."""
        return not self.has_room(carrier, lane) or self._parked_per_queue[carrier, lane] > 0

    def park(
        self,
        partition: Hashable,
        offset: int,
        carrier: str,
        lane: Lane = Lane.NORMAL,
        command: DispatchCommand | None = None,
    ) -> None:
        """Offsets of one partition are parked in increasing order (as they are read), so each
        carrier lane's dict below keeps its oldest first. `command` is kept while fewer than
        `keep` are."""
        if command is not None and self._kept_count < self.keep:
            self._kept.setdefault(partition, {})[offset] = command
            self._kept_count += 1
        queue = (carrier, lane)
        self._queue_of.setdefault(partition, {})[offset] = queue
        self._parked.setdefault(partition, {}).setdefault(queue, {})[offset] = None
        self._parked_per_queue[queue] += 1

    def parked_queue(self, partition: Hashable, offset: int) -> Queue | None:
        """The carrier lane a parked command waits in (None: not parked)."""
        return self._queue_of.get(partition, {}).get(offset)

    def kept_command(self, partition: Hashable, offset: int) -> DispatchCommand | None:
        """The parked command kept in memory (None: parked as an offset only, or not parked)."""
        return self._kept.get(partition, {}).get(offset)

    def kept(self) -> int:
        """Parked commands kept in memory now (at most `keep`)."""
        return self._kept_count

    def unpark(self, partition: Hashable, offset: int) -> DispatchCommand | None:
        """Unparks the command; returns it if it was kept in memory."""
        kept = self._kept.get(partition)
        command = kept.pop(offset, None) if kept else None
        if command is not None:
            self._kept_count -= 1
            if not kept:
                del self._kept[partition]
        queue = self._queue_of[partition].pop(offset)
        offsets = self._parked[partition][queue]
        del offsets[offset]
        if not offsets:
            del self._parked[partition][queue]
        if not self._queue_of[partition]:
            del self._queue_of[partition]
            del self._parked[partition]
        self._uncount(queue, 1)
        return command

    def parked_in(self, partition: Hashable) -> list[tuple[int, Queue]]:
        """The partition's parked commands, oldest first: (offset, carrier lane)."""
        return list(self._queue_of.get(partition, {}).items())

    def parked(self, carrier: str | None = None) -> int:
        """Commands parked now (of the carrier, every lane; or of every carrier)."""
        return sum(count for (name, _lane), count in self._parked_per_queue.items() if carrier in (None, name))

    def rewinds(self) -> dict[Hashable, int]:
        """Per partition, the offset to read again from: its oldest parked command of a carrier
        lane that has drained to half its share (at least one free place)."""
        ready = {queue for queue in self._parked_per_queue if self._active[queue] <= _drained(self.share(queue[0]))}
        if not ready:
            return {}
        targets: dict[Hashable, int] = {}
        for partition, by_queue in self._parked.items():
            oldest = [next(iter(offsets)) for queue, offsets in by_queue.items() if queue in ready]
            if oldest:
                targets[partition] = min(oldest)
        return targets

    def drop(self, partition: Hashable) -> None:
        """The partition went to another replica: its parked commands are its new owner's."""
        self._queue_of.pop(partition, None)
        self._kept_count -= len(self._kept.pop(partition, {}))
        for queue, offsets in self._parked.pop(partition, {}).items():
            self._uncount(queue, len(offsets))

    def _uncount(self, queue: Queue, count: int) -> None:
        self._parked_per_queue[queue] -= count
        if self._parked_per_queue[queue] <= 0:
            del self._parked_per_queue[queue]


def _drained(share: int) -> int:
    """Running commands at which a carrier lane's parked ones start: half its share, one free place at least."""
    return min(share - 1, share // 2)
