"""Which commands wait without a task, so one slow carrier cannot hold the others (pure, no I/O).

A carrier may take at most `per_carrier` commands at once on this replica (each a task
submitting, or retrying while the carrier is down or throttled). Beyond that its commands
are *parked*: only their offsets are kept, the commit stays behind them, and nothing else
about them is held in memory. Once the carrier has drained to half its share, the
dispatcher rewinds each partition to its oldest parked command of that carrier and reads
it again, starting the parked ones (in offset order, so per-carrier order holds) and
skipping what already finished or still runs.

Without this, a carrier that is down (or a campaign to a carrier with a low TPS) filled
the whole replica's window and every other carrier waited behind it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable


class CarrierParking:
    def __init__(self, per_carrier: int) -> None:
        if per_carrier < 1:
            raise ValueError("per_carrier must be at least 1")
        self.per_carrier = per_carrier
        self._active: Counter[str] = Counter()
        #: partition -> carrier -> offsets (oldest first) of the commands waiting without a task.
        self._parked: dict[Hashable, dict[str, dict[int, None]]] = {}
        #: partition -> offset -> carrier, for the same commands.
        self._carrier_of: dict[Hashable, dict[int, str]] = {}
        self._parked_per_carrier: Counter[str] = Counter()

    # --- the running share of each carrier --------------------------------------------------

    def started(self, carrier: str) -> None:
        self._active[carrier] += 1

    def finished(self, carrier: str) -> None:
        self._active[carrier] -= 1
        if self._active[carrier] <= 0:
            del self._active[carrier]

    def active(self, carrier: str) -> int:
        return self._active[carrier]

    def carriers(self) -> set[str]:
        """Carriers with commands running or parked now."""
        return set(self._active) | set(self._parked_per_carrier)

    def has_room(self, carrier: str) -> bool:
        return self._active[carrier] < self.per_carrier

    # --- parked commands ---------------------------------------------------------------------

    def should_park(self, carrier: str) -> bool:
        """A new command waits without a task when its carrier is at its share, or already has
        parked commands (which go first: they are older)."""
        return not self.has_room(carrier) or self._parked_per_carrier[carrier] > 0

    def park(self, partition: Hashable, offset: int, carrier: str) -> None:
        """Offsets of one partition are parked in increasing order (as they are read), so each
        carrier's dict below keeps its oldest first."""
        self._carrier_of.setdefault(partition, {})[offset] = carrier
        self._parked.setdefault(partition, {}).setdefault(carrier, {})[offset] = None
        self._parked_per_carrier[carrier] += 1

    def parked_carrier(self, partition: Hashable, offset: int) -> str | None:
        return self._carrier_of.get(partition, {}).get(offset)

    def unpark(self, partition: Hashable, offset: int) -> None:
        carrier = self._carrier_of[partition].pop(offset)
        offsets = self._parked[partition][carrier]
        del offsets[offset]
        if not offsets:
            del self._parked[partition][carrier]
        if not self._carrier_of[partition]:
            del self._carrier_of[partition]
            del self._parked[partition]
        self._uncount(carrier, 1)

    def parked(self, carrier: str | None = None) -> int:
        if carrier is not None:
            return self._parked_per_carrier[carrier]
        return sum(self._parked_per_carrier.values())

    def rewinds(self) -> dict[Hashable, int]:
        """Per partition, the offset to read again from: its oldest parked command of a carrier
        that has drained to half its share (at least one free place)."""
        threshold = min(self.per_carrier - 1, self.per_carrier // 2)
        ready = {carrier for carrier in self._parked_per_carrier if self._active[carrier] <= threshold}
        if not ready:
            return {}
        targets: dict[Hashable, int] = {}
        for partition, by_carrier in self._parked.items():
            oldest = [next(iter(offsets)) for carrier, offsets in by_carrier.items() if carrier in ready]
            if oldest:
                targets[partition] = min(oldest)
        return targets

    def drop(self, partition: Hashable) -> None:
        """The partition went to another replica: its parked commands are its new owner's."""
        self._carrier_of.pop(partition, None)
        for carrier, offsets in self._parked.pop(partition, {}).items():
            self._uncount(carrier, len(offsets))

    def _uncount(self, carrier: str, count: int) -> None:
        self._parked_per_carrier[carrier] -= count
        if self._parked_per_carrier[carrier] <= 0:
            del self._parked_per_carrier[carrier]
