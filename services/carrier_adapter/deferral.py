"""When a message stops waiting in the adapter for its carrier, and how long it waits elsewhere (pure).

A carrier that is down holds its messages in the adapter: each a task retrying, or a parked
offset, with its partition's commit behind it. That is right for a short outage (the message
goes as soon as the carrier is back) and wrong for a long one: at most `max_parked` commands
wait per replica, and beyond that the replica stops reading its partitions, which holds every
other carrier's messages too. So a message whose carrier has not taken it for
`defer_after` seconds, with nothing of it sent, is *deferred*: its command goes to the delay
topic and is committed here, and comes back to the dispatch topic later (`DelayedCommands`).

The delay topics are read in order. Each is a *tier*: its records are due a fixed number of
*laps* (`lap` seconds each) after they were written, so a partition's records come due in the
order they were written and its reader only ever waits for the first one. A wait of n laps is
written to the longest tier not above n; the command counts down the laps still to wait
(`laps_left`) and, if some are left when it is due, goes to the tier for those (a wait of 20
laps: 16, then 4). The wait doubles with each deferral, up to `longest`. (With one tier, every
waiting record was written again every lap: 20,000 messages waiting in laps of 5 s were 1,700-
1,800 writes a second; with the tiers a wait is one write, or a few.)
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping

from smsgw.v1 import carrier_pb2 as cp


def validity_left(command: cp.DispatchCommand, now: float) -> float | None:
    """Seconds from `now` until the message's validity ends (negative once it has); None: no end."""
    if not command.HasField("expires_at"):
        return None
    return command.expires_at.seconds + command.expires_at.nanos / 1e9 - now


def laps_for(deferrals: int, lap: float, longest: float) -> int:
    """Laps the `deferrals`-th deferral waits: 1, 2, 4, ... up to `longest` seconds (at least one)."""
    if lap <= 0:
        raise ValueError(f"a lap must be longer than 0 s, not {lap}")
    most = max(1, math.ceil(longest / lap))
    return min(most, 2 ** max(0, min(deferrals - 1, 30)))


class Step(enum.Enum):
    WAIT = "wait"  # not due yet: its reader waits (and everything after it in the partition)
    DISPATCH = "dispatch"  # back on the dispatch topic, for its next attempt
    AGAIN = "again"  # more laps to wait: written to the tier for them, its laps counted down


def next_step(
    command: cp.DispatchCommand, written_at: float, now: float, lap: float, tier: int = 1
) -> tuple[Step, float]:
    """What the delay topics' reader does with `command`, written at `written_at` (seconds) to the
    tier of `tier` laps, at `now`; with WAIT, the time it is due. With AGAIN, `laps_left - tier`
    laps are left to wait. A message whose validity ends within the next lap goes back at once:
    the dispatcher expires it then, or sends it if its carrier is back."""
    due = written_at + lap * tier
    if now < due:
        return Step.WAIT, due
    if command.laps_left - tier <= 0:
        return Step.DISPATCH, now
    if (left := validity_left(command, now)) is not None and left < lap:
        return Step.DISPATCH, now
    return Step.AGAIN, now


class DelayTiers:
    """The delay topics by the laps their records wait (`topics`: laps -> topic; one of one lap)."""

    def __init__(self, topics: Mapping[int, str], lap: float) -> None:
        if 1 not in topics:
            raise ValueError(f"the delay tiers need one of one lap, not only {sorted(topics)}")
        if lap <= 0:
            raise ValueError(f"a lap must be longer than 0 s, not {lap}")
        self.topics = dict(sorted(topics.items()))
        self.lap = lap
        self._tier_of = {topic: laps for laps, topic in self.topics.items()}

    def tier_of(self, topic: str) -> int:
        """The laps a record of `topic` waits."""
        return self._tier_of[topic]

    def tier_for(self, laps: int, validity_left: float | None = None) -> int:
        """The longest tier not above `laps`, nor beyond the message's validity (a record must
        come due before its message expires, to be expired on time); one lap at the least."""
        fits = [
            tier for tier in self.topics if tier <= laps and (validity_left is None or tier * self.lap <= validity_left)
        ]
        return max(fits, default=1)

    def topic_for(self, laps: int, validity_left: float | None = None) -> str:
        return self.topics[self.tier_for(laps, validity_left)]


class CarrierProbes:
    """While a carrier stays down, only one of its due commands a lap goes back to try it (a probe);
    the others wait again, for their next (doubled) deferral, without leaving the delay topic
    (pure). Sent back, each would cost an attempt that fails, a DispatchDeferred read by every
    service and a pass through the dispatcher, and with many messages waiting those returns take
    the CPU the other carriers' messages need (`make bench-outage`: 20,000 waiting, 1,000 returns a
    second, the adapter at 75 % of a core and the other carrier's messages p95 36 s late).

    `down`: the carrier has taken nothing for `defer_after` seconds on this replica (the
    dispatcher's view). A message whose validity ends within the next lap always goes back, to be
    sent if the carrier takes it or expire on time."""

    def __init__(self, lap: float, longest: float) -> None:
        self.lap = lap
        self.longest = longest
        self._probed: dict[str, float] = {}  # carrier -> when its last probe went back

    def laps_to_hold(self, command: cp.DispatchCommand, now: float, down: bool) -> int:
        """0: the command goes back to the dispatch topic; otherwise the laps it waits again."""
        if not down:
            self._probed.pop(command.carrier, None)
            return 0
        if (left := validity_left(command, now)) is not None and left < self.lap:
            return 0
        if now - self._probed.get(command.carrier, -math.inf) >= self.lap:
            self._probed[command.carrier] = now
            return 0
        return laps_for(command.deferrals + 1, self.lap, self.longest)
