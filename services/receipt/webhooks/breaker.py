"""A circuit breaker per endpoint (pure: the caller passes the time).

closed: requests go out; `failure_threshold` failures in a row open it.
open: requests fail fast, without touching the network, for `open_seconds`.
half-open: then `half_open_probes` requests go out; a success closes the
circuit, a failure opens it again for another `open_seconds`.
"""

from __future__ import annotations

from dataclasses import dataclass

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5
    open_seconds: float = 30.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.half_open_probes < 1 or self.open_seconds < 0:
            raise ValueError(f"invalid breaker policy: {self}")


class CircuitBreaker:
    def __init__(self, policy: BreakerPolicy = BreakerPolicy()) -> None:
        self.policy = policy
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0

    def state(self, now: float) -> str:
        if self._state == OPEN and now - self._opened_at >= self.policy.open_seconds:
            return HALF_OPEN
        return self._state

    def allow(self, now: float) -> bool:
        """May a request go out now? In half-open, each True is one of the probes."""
        if self._state == CLOSED:
            return True
        if self._state == OPEN:
            if now - self._opened_at < self.policy.open_seconds:
                return False
            self._state, self._probes = HALF_OPEN, 0
        if self._probes < self.policy.half_open_probes:
            self._probes += 1
            return True
        return False

    def seconds_until_probe(self, now: float) -> float:
        if self._state != OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.policy.open_seconds - now)

    def record_success(self) -> None:
        # Also from a request that left before the circuit opened: the endpoint answers again.
        self._state, self._failures, self._probes = CLOSED, 0, 0

    def record_failure(self, now: float) -> None:
        if self._state == HALF_OPEN:
            self._open(now)
        elif self._state == CLOSED:
            self._failures += 1
            if self._failures >= self.policy.failure_threshold:
                self._open(now)
        # Already open: a request that left earlier failed too; the open period is not extended.

    def _open(self, now: float) -> None:
        self._state, self._opened_at, self._probes = OPEN, now, 0
