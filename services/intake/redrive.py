"""Redrive: a message that sits QUEUED past a deadline is offered to routing again.

The broker acknowledged its MessageQueued, so it is accepted; if routing's consumer
lost the record (we have seen faust skip a record around a worker restart), nothing
else would ever move the message. Intake re-appends the *same* MessageQueued envelope,
byte for byte: every reader already dedupes by event id, and routing routes a message
only if it has no record of it, so a redrive can never cause a second send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from smsgw.deadlines import DeadlineIndex
from smsgw.domain import status as st
from smsgw.domain.message_state import MessageState
from smsgw.v1 import events_pb2 as ev

log = logging.getLogger(__name__)


def due_for_redrive(state: MessageState, now: datetime, after: timedelta) -> bool:
    """QUEUED (not held for later), and nothing has happened to it for `after`."""
    if state.status != st.QUEUED or state.updated_at is None:
        return False
    if state.send_at is not None and state.send_at > now:
        return False
    return now - state.updated_at >= after


class Redriver:
    """Each round looks only at messages QUEUED for longer than `after` (`queued_since`, a time
    index kept from the store's commits), not at every message.

    More than `max_per_round` of them is a backlog in front of routing (overload, or routing
    down), not records a consumer lost: redriving them would only add records to the backlog
    (under overload that fed on itself). They are looked at again next round, and redriven
    once few are left waiting."""

    def __init__(
        self,
        queued_since: DeadlineIndex[str],
        state_of: Callable[[str], Awaitable[MessageState | None]],
        queued_event_of: Callable[[MessageState], Awaitable[ev.EventEnvelope | None]],
        append: Callable[[ev.EventEnvelope], Awaitable[None]],
        *,
        after: timedelta = timedelta(seconds=15),
        interval: float = 5.0,
        max_per_round: int = 500,
    ):
        self.queued_since = queued_since
        self.state_of = state_of
        self.queued_event_of = queued_event_of
        self.append = append
        self.after = after
        self.interval = interval
        self.max_per_round = max_per_round
        self.redriven = 0
        self.backlog_rounds = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await stop.wait()
            if not stop.is_set():
                await self.round()

    async def round(self, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        index = self.queued_since
        # Popped ones not handled now go back due at once, so the next round looks at them again.
        due_again = (now - self.after).timestamp()
        waiting = index.pop_due(due_again)
        if len(waiting) > self.max_per_round:
            for message_id in waiting:
                index.set(message_id, due_again)
            self.backlog_rounds += 1
            log.info(
                "%d messages have sat QUEUED for more than %s: a backlog in front of routing, not "
                "lost records; not redriving them now",
                len(waiting),
                self.after,
            )
            return 0
        count = 0
        for position, message_id in enumerate(waiting):
            try:
                state = await self.state_of(message_id)
                if state is None or not due_for_redrive(state, now, self.after):
                    continue  # moved on meanwhile; indexed again if it comes back to QUEUED
                queued = await self.queued_event_of(state)
                if queued is None:
                    continue
                await self.append(queued)
            except Exception as exc:  # noqa: BLE001 - the log or the store is down: this one and the rest next round
                log.warning("redrive of %s failed: %r", message_id, exc)
                for later in waiting[position:]:
                    index.set(later, due_again)
                break
            # Not again before another full period (the copy changes nothing in the projection).
            index.set(message_id, now.timestamp())
            count += 1
        if count:
            self.redriven += count
            log.warning("redrove %d message(s) that sat QUEUED for more than %s", count, self.after)
        return count
