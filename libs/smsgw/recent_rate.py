"""Events per second over a recent window: the TPS every carrier reports as a metric.

One implementation for every carrier kind (SMPP submit_sm admitted, HTTP submits accepted,
messages phones sent), so "TPS" means the same thing on every dashboard. Not thread-safe:
mark and read from the same event loop.
"""

from __future__ import annotations

import time
from collections import deque

#: Seconds the rate is averaged over.
DEFAULT_WINDOW = 10.0


class RecentRate:
    def __init__(self, window: float = DEFAULT_WINDOW):
        if window <= 0:
            raise ValueError(f"window must be positive seconds, got {window!r}")
        self.window = window
        #: time.monotonic() of every event in the last ``window`` seconds (older ones are dropped).
        self._marks: deque[float] = deque()

    def mark(self, now: float | None = None) -> None:
        """One event happened (now)."""
        now = time.monotonic() if now is None else now
        self._marks.append(now)
        self._forget_before(now - self.window)

    def per_second(self, now: float | None = None) -> float:
        """Events per second, averaged over the last ``window`` seconds."""
        now = time.monotonic() if now is None else now
        self._forget_before(now - self.window)
        return len(self._marks) / self.window

    def _forget_before(self, horizon: float) -> None:
        while self._marks and self._marks[0] < horizon:
            self._marks.popleft()
