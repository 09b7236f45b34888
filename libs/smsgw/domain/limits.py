"""Per-account sending limits: a rate with a burst, and a daily quota (pure, no I/O).

The rate is a token bucket in its GCRA form (one "theoretical arrival time" per account,
as in Redis' redis-cell and most API gateways): each accepted message pushes the account's
time forward by 1/rate; a message may go while that time is at most burst/rate ahead of now.
The daily quota counts messages per UTC day.

The state is folded from the log: every intake replica reads every MessageQueued of every
account (its read model does anyway), so each replica knows what all replicas accepted, a
few milliseconds late, and a restarted replica rebuilds today's counts by replaying the log.
A replica also counts what it admits itself at once, so concurrent calls on one replica
cannot slip past together. The cost of doing without a shared counter: N replicas may each
admit up to the read delay's worth (~the fetch latency x the rate) before they see each
other's messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from smsgw.domain import errors as de


@dataclass(frozen=True)
class Limits:
    messages_per_second: float = 0.0  # 0: no rate limit
    burst: int = 0  # 0: one second's worth (at least 1)
    messages_per_day: int = 0  # 0: no daily quota

    def over(self, defaults: Limits) -> Limits:
        """These limits, each unset (zero) one taken from `defaults`."""
        return Limits(
            self.messages_per_second or defaults.messages_per_second,
            self.burst or defaults.burst,
            self.messages_per_day or defaults.messages_per_day,
        )

    @property
    def bucket(self) -> int:
        return self.burst or max(1, int(self.messages_per_second))

    def check(self) -> None:
        if self.messages_per_second < 0 or self.burst < 0 or self.messages_per_day < 0:
            raise de.InvalidArgument("limits: every limit is 0 (the default) or positive", field="limits")


class AccountUsage:
    """What each account sent recently, for admission against its limits."""

    def __init__(self) -> None:
        self._arrival: dict[str, float] = {}  # account -> theoretical arrival time (epoch s)
        self._days: dict[str, tuple[date, int]] = {}  # account -> (UTC day, messages that day)

    def record(self, account_id: str, at: datetime, limits: Limits) -> None:
        """Counts one accepted message of the account (from the log, or admitted here)."""
        if limits.messages_per_second > 0:
            t = at.timestamp()
            self._arrival[account_id] = max(self._arrival.get(account_id, t), t) + 1.0 / limits.messages_per_second
        day = at.date()
        counted_day, count = self._days.get(account_id, (day, 0))
        if day > counted_day:
            counted_day, count = day, 0
        if day == counted_day:
            self._days[account_id] = (counted_day, count + 1)
        # else: a late record of a day already over counts for nothing today

    def admit(self, account_id: str, now: datetime, limits: Limits) -> None:
        """Records one message if the limits allow it now; raises RateLimited / DailyQuotaExceeded otherwise."""
        if limits.messages_per_day > 0:
            day, count = self._days.get(account_id, (now.date(), 0))
            if day == now.date() and count >= limits.messages_per_day:
                tomorrow = datetime.combine(now.date(), datetime.min.time(), now.tzinfo).timestamp() + 86_400
                raise de.DailyQuotaExceeded(
                    f"daily quota reached: {count} of {limits.messages_per_day} messages sent today (UTC); "
                    "nothing was sent. Sending resumes at 00:00 UTC, or ask for a higher quota",
                    metadata={"limit": str(limits.messages_per_day)},
                    retry_after=tomorrow - now.timestamp(),
                )
        if limits.messages_per_second > 0:
            t = now.timestamp()
            interval = 1.0 / limits.messages_per_second
            ahead = self._arrival.get(account_id, t) - t
            allowed = (limits.bucket - 1) * interval
            if ahead > allowed + 1e-9:
                wait = ahead - allowed
                raise de.RateLimited(
                    f"rate limit: this account may send {limits.messages_per_second:g} messages a second "
                    f"(bursts of {limits.bucket}); nothing was sent, retry in {wait * 1000:.0f} ms",
                    metadata={"limit_per_second": f"{limits.messages_per_second:g}", "burst": str(limits.bucket)},
                    retry_after=wait,
                )
        self.record(account_id, now, limits)

    def refund(self, account_id: str, at: datetime, limits: Limits) -> None:
        """Takes back an admission whose message was not accepted after all (the append failed)."""
        if limits.messages_per_second > 0 and account_id in self._arrival:
            self._arrival[account_id] -= 1.0 / limits.messages_per_second
        day, count = self._days.get(account_id, (at.date(), 0))
        if day == at.date() and count > 0:
            self._days[account_id] = (day, count - 1)
