"""How long a command waits before its carrier is tried again (pure, no I/O).

Exponential: the first retry after `first` seconds, each next one twice as long, up to
`ceiling`. With jitter: each wait is drawn from half to all of the delay, so the commands of
every replica that failed together do not all come back to a recovering carrier at the same
instant. A carrier's own hint (Retry-After, a throttling answer) is honoured up to `ceiling`.
"""

from __future__ import annotations

import random


class RetryBackoff:
    def __init__(self, first: float, ceiling: float, rnd: random.Random | None = None) -> None:
        self.delay = first
        self.ceiling = ceiling
        # The module's shared generator unless a test gives one: one is made for every submit,
        # and a random.Random() of its own would read the OS's entropy each time (~14 µs).
        self._uniform = rnd.uniform if rnd is not None else random.uniform

    def next_wait(self, retry_after: float | None = None) -> float:
        """The wait before the next attempt; the one after is twice as long (up to the ceiling)."""
        wait = max(self._uniform(self.delay / 2, self.delay), min(retry_after or 0.0, self.ceiling))
        self.delay = min(self.delay * 2, self.ceiling)
        return wait
