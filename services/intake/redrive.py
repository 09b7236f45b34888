"""Redrive: a message that sits QUEUED past a deadline is offered to routing again.

The broker acknowledged its MessageQueued, so it is accepted; if routing's consumer
lost the record (we have seen faust skip a record around a worker restart), nothing
else would ever move the message. Intake re-appends the *same* MessageQueued envelope,
byte for byte: every reader already dedupes by event id, and routing routes a message
only if it has no record of it, so a redrive can never cause a second send.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

from smsgw.domain import status as st
from smsgw.domain.message_state import MessageState

from .projection import MessageProjection

log = logging.getLogger(__name__)


def due_for_redrive(state: MessageState, now: datetime, after: timedelta) -> bool:
    """QUEUED (not held for later), and nothing has happened to it for `after`."""
    if state.status != st.QUEUED or state.updated_at is None:
        return False
    if state.send_at is not None and state.send_at > now:
        return False
    return now - state.updated_at >= after


class Redriver:
    def __init__(self, projection: MessageProjection, append, *, after: timedelta = timedelta(seconds=15),
                 interval: float = 5.0, max_per_round: int = 500):
        self.projection = projection
        self.append = append
        self.after = after
        self.interval = interval
        self.max_per_round = max_per_round
        self.redriven = 0
        self._last_redrive: dict[str, datetime] = {}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
            if not stop.is_set():
                await self.round()

    async def round(self, now: datetime | None = None) -> int:
        now = now or datetime.now(timezone.utc)
        count = 0
        for state in self.projection.all_states():
            if count >= self.max_per_round:
                break
            if not due_for_redrive(state, now, self.after):
                continue
            last = self._last_redrive.get(state.message_id)
            if last is not None and now - last < self.after:
                continue
            queued = next((h.event for h in self.projection.history(state.message_id)
                           if h.event.WhichOneof("payload") == "message_queued"), None)
            if queued is None:
                continue
            try:
                await self.append(queued)
            except Exception as exc:  # the log is down: try again next round
                log.warning("redrive of %s failed: %r", state.message_id, exc)
                return count
            self._last_redrive[state.message_id] = now
            count += 1
        if count:
            self.redriven += count
            log.warning("redrove %d message(s) that sat QUEUED for more than %s", count, self.after)
        return count
