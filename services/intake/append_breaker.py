"""Refuses appends at once while the event log cannot take writes, instead of holding each call
until its deadline.

Without it, every SendMessage made while no broker can take the write waits for the producer
(up to the Kafka request timeout), and the client sees DEADLINE_EXCEEDED, not knowing whether
its message was taken. With it:

- closed: every append goes to the producer;
- an append the log did not confirm (its time bound passed, or the producer gave up on an
  unreachable or under-replicated cluster) opens the breaker: for `retry_after` seconds every
  new append is refused before anything is sent, so the caller is told truthfully that the
  message was NOT accepted, and when to try again (a RetryInfo);
- then one append goes through as a trial while the others are still refused (half-open): its
  success closes the breaker, its failure opens it again for twice as long (up to `max_open`).

Pure and clock-driven (no asyncio), so the states are tested without a broker; the servicer
reports each append's outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from enum import Enum

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from smsgw.domain import errors as de


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"  # one trial append in flight


class AppendBreaker:
    def __init__(self, *, first_open: float = 1.0, max_open: float = 8.0, clock: Callable[[], float] = time.monotonic):
        self.first_open = first_open
        self.max_open = max_open
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._open_for = first_open
        self._reopen_at = 0.0
        #: Appends refused before anything was sent, since start.
        self.refused = 0
        #: Times the breaker opened (from closed, or again after a failed trial).
        self.opened = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    def admit(self) -> bool:
        """Called before an append; True when it is the half-open trial. Raises EventLogUnavailable
        when the append must not be tried now."""
        if self._state is BreakerState.CLOSED:
            return False
        now = self._clock()
        if self._state is BreakerState.OPEN and now >= self._reopen_at:
            self._state = BreakerState.HALF_OPEN
            return True
        self.refused += 1
        # While a trial is out, its outcome comes within one append bound: ask for a short wait.
        wait = self._reopen_at - now if self._state is BreakerState.OPEN else self.first_open / 2
        raise de.EventLogUnavailable(
            "the event log cannot take writes now (the last append was not confirmed); the message was "
            f"NOT accepted: retry in {wait:.1f} s",
            retry_after=wait,
        )

    def succeeded(self, trial: bool) -> None:
        """An append was confirmed: the log takes writes (whichever append it was)."""
        self._state = BreakerState.CLOSED
        self._open_for = self.first_open

    def failed(self, trial: bool) -> None:
        """An append was not confirmed because of the log (not the caller's own short deadline)."""
        if trial:
            self._open_for = min(self._open_for * 2, self.max_open)
        elif self._state is not BreakerState.CLOSED:
            return  # an append let through before the breaker opened: already counted
        self._state = BreakerState.OPEN
        self._reopen_at = self._clock() + self._open_for
        self.opened += 1

    def gave_up(self, trial: bool) -> None:
        """An append ended without telling anything of the log (the caller's deadline came first, or
        it was cancelled): if it was the trial, the next append is."""
        if trial and self._state is BreakerState.HALF_OPEN:
            self._state = BreakerState.OPEN
            self._reopen_at = self._clock()

    def instrument(self, meter: Meter) -> None:
        meter.create_observable_gauge(
            "smsgw_intake_event_log_breaker_open",
            callbacks=[self._observe_state],
            description="1 while intake refuses appends at once because the event log took none (0: closed)",
        )
        meter.create_observable_counter(
            "smsgw_intake_appends_refused",
            callbacks=[self._observe_refused],
            description="appends refused by the open breaker, before anything was sent (EVENT_LOG_UNAVAILABLE)",
        )

    def _observe_state(self, _: CallbackOptions) -> Iterator[Observation]:
        yield Observation(0 if self._state is BreakerState.CLOSED else 1)

    def _observe_refused(self, _: CallbackOptions) -> Iterator[Observation]:
        yield Observation(self.refused)
