"""Flow control for submit_sm on one bind: a rate limit and the SMSC's "slow down".

Both brakes answer the same question, "may the next submit_sm go now?", so one
FIFO gate owns both:

* Rate: carriers contract a number of submit_sm per second per bind and answer
  the excess with ESME_RTHROTTLED (or cut the bind). A token bucket refilling
  at ``max_tps`` with room for one token spaces submit_sm evenly; carriers that
  count in sub-second slices see no burst. Each submit_sm takes a token,
  parts of one message and retries included, because that is what the SMSC
  counts.
* Pause: ESME_RTHROTTLED / ESME_RMSGQFUL stop every submit on the bind for a
  backoff with full jitter that grows while the SMSC keeps refusing.

Waiters pass one at a time, HIGH lane first and then in arrival order (the lock,
a ``LaneSemaphore``, is held while waiting), so flow control never reorders what
one lane queued, and a bulk backlog waiting for tokens never delays an OTP by
more than the one submit already waiting.
"""

from __future__ import annotations

import asyncio
import random

from smsgw.lanes import Lane, LaneSemaphore
from smsgw.recent_rate import RecentRate


def full_jitter(attempt: int, low: float, high: float) -> float:
    """A delay between ``low`` and min(high, low * 2**attempt), uniformly drawn.

    Full jitter keeps a fleet of adapters from retrying a recovering SMSC in lock step.
    """
    ceiling = min(high, low * (2**attempt))
    return random.uniform(low, max(low, ceiling))


class SubmitGate:
    def __init__(self, *, max_tps: float | None, pause_min: float, pause_max: float):
        if max_tps is not None and max_tps <= 0:
            raise ValueError("max_tps must be positive (or None for no limit)")
        self._rate = max_tps
        #: The configured rate, of which this replica takes `share` (several replicas bind to one SMSC).
        self._max_tps = max_tps
        self._pause_min = pause_min
        self._pause_max = pause_max
        self._lock = LaneSemaphore(1)
        # One token of room: a full bucket lets exactly one submit_sm go at once.
        self._tokens = 1.0
        self._refilled_at: float | None = None
        self._paused_until = 0.0
        self._streak = 0
        #: Admissions, for current_tps (the same rate every carrier kind reports).
        self._admitted = RecentRate()

    @property
    def max_tps(self) -> float | None:
        """The rate this gate lets through now: the configured one times this replica's share."""
        return self._rate

    def share(self, fraction: float) -> None:
        """Take `fraction` (0-1] of the configured rate: the carrier's limit holds for every replica together."""
        if not 0 < fraction <= 1:
            raise ValueError(f"share must be in (0, 1], not {fraction}")
        if self._max_tps is not None:
            self._rate = self._max_tps * fraction

    async def admit(self, lane: Lane = Lane.NORMAL) -> None:
        """Return when the next submit_sm may be sent (not paused, a token available); HIGH
        lane first, FIFO within a lane."""
        loop = asyncio.get_running_loop()
        async with self._lock.held(lane):
            while True:
                now = loop.time()
                self._refill(now)
                wait = self._paused_until - now
                if self._rate is not None:
                    wait = max(wait, (1.0 - self._tokens) / self._rate)
                if wait <= 0:
                    break
                # A pause set while we sleep is seen on the next turn of the loop.
                await asyncio.sleep(wait)
            if self._rate is not None:
                self._tokens -= 1.0
            self._admitted.mark()

    def _refill(self, now: float) -> None:
        if self._rate is None:
            return
        if self._refilled_at is not None:
            # Fractions carry over, so a late wake-up does not lower the rate.
            self._tokens = min(1.0, self._tokens + (now - self._refilled_at) * self._rate)
        self._refilled_at = now

    def pause(self) -> float:
        """The SMSC pushed back: hold every submit for a growing, jittered delay. Returns the delay."""
        delay = full_jitter(self._streak, self._pause_min, self._pause_max)
        self._streak += 1
        until = asyncio.get_running_loop().time() + delay
        self._paused_until = max(self._paused_until, until)
        return delay

    def accepted(self) -> None:
        """An answer that was not backpressure: the next pause starts small again."""
        self._streak = 0

    def current_tps(self) -> float:
        """submit_sm admitted per second, averaged over the last 10 seconds."""
        return self._admitted.per_second()
