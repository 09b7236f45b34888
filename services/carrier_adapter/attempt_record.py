"""Which failed submit attempts get an event of their own, and how the others are still in the history.

A carrier down for an hour, retried every few seconds, would write ~700 SubmitAttemptFailed per
waiting message: for 10,000 waiting messages, more events than the platform's whole traffic.
So attempts 1-5 are written each, then the powers of two (the history still shows how long the
outage lasted). The attempts in between are held back and written as one event: the newest of
them, with the others summed up on it (how many, their reasons counted, whether one may have
reached the carrier: `unrecorded_*` on SubmitAttemptFailed), just before the next attempt that
is written each (attempt 7 with 6, before attempt 8) or when the run of attempts ends, whatever
ends it (the carrier takes the message or refuses it; it is deferred, rerouted or expires: that
last failure is written whatever its number). So every attempt is in the message's history, in
order, and an hour's outage (~720 attempts at the 5 s ceiling) costs ~30 events a message.
"""

from __future__ import annotations

from collections import Counter

from smsgw.v1 import events_pb2 as ev


def attempt_is_recorded(attempt: int) -> bool:
    """Attempts 1-5 and then powers of two get an event of their own (and the last of a run)."""
    return attempt <= 5 or attempt & (attempt - 1) == 0


class UnrecordedAttempts:
    """The failed attempts held back since the last one written, for the next event to sum up."""

    def __init__(self) -> None:
        self._newest: ev.SubmitAttemptFailed | None = None
        self._reset()

    def _reset(self) -> None:
        self._count = 0  # held before the newest
        self._reasons: Counter[str] = Counter()
        self._in_doubt = False

    def __bool__(self) -> bool:
        return self._newest is not None

    def hold(self, failed: ev.SubmitAttemptFailed) -> None:
        """An attempt that gets no event of its own (yet)."""
        if self._newest is not None:
            self._fold(self._newest)
        self._newest = failed

    def summed_into(self, failed: ev.SubmitAttemptFailed) -> ev.SubmitAttemptFailed:
        """`failed`, to be written now, with every attempt held back before it summed up on it."""
        if self._newest is not None:
            self._fold(self._newest)
        failed.unrecorded_attempts = self._count
        for reason, count in self._reasons.items():
            failed.unrecorded_reasons[reason] = count
        failed.unrecorded_in_doubt = self._in_doubt
        self._newest = None
        self._reset()
        return failed

    def last(self) -> ev.SubmitAttemptFailed | None:
        """The run ends: the newest attempt held back, with the ones before it summed up; None if none is."""
        newest, self._newest = self._newest, None
        return None if newest is None else self.summed_into(newest)

    def _fold(self, failed: ev.SubmitAttemptFailed) -> None:
        self._count += 1
        self._reasons[failed.reason] += 1
        self._in_doubt = self._in_doubt or failed.in_doubt
