"""How far a reader of the message store has got, and who hears of each event it gets to.

Two things read the events into intake: the projector, which writes them into the store, and,
when the projector is a partitioned group writing one shared store, the store follower, which
reads every partition's committed events back from that store (follower.py). Intake's reads
wait on either the same way (read-your-writes: `wait_until` its own appends), its watches,
sending limits and metrics hear of each event the same way (listeners), and its look-ups ask
either for the states it last saw (`cached_state`). This is that common part.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from smsgw.domain.message_state import MessageState

from .store import LoggedEvent

log = logging.getLogger(__name__)

Listener = Callable[[LoggedEvent], None]


class StateCache:
    """The newest states a reader has seen, least recently used dropped first."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._states: OrderedDict[str, MessageState] = OrderedDict()

    def get(self, message_id: str) -> MessageState | None:
        state = self._states.get(message_id)
        if state is not None:
            self._states.move_to_end(message_id)
        return state

    def put(self, state: MessageState) -> None:
        self._states[state.message_id] = state
        self._states.move_to_end(state.message_id)
        while len(self._states) > self._capacity:
            self._states.popitem(last=False)

    def clear(self) -> None:
        self._states.clear()

    def __len__(self) -> int:
        return len(self._states)


class StoreProgress:
    """Per partition of the events topic, the next offset whose event is in the store and has been
    told to the listeners; waits for positions; the states last seen."""

    def __init__(self, cache_size: int) -> None:
        self._positions: dict[int, int] = {}
        self._cache = StateCache(cache_size)
        self._listeners: list[Listener] = []
        self._progress = asyncio.Condition()
        self.caught_up = asyncio.Event()
        #: Whether the listeners hear of every event (else a stream that starts must read the store
        #: for what came since its start position: what it watches was maybe not asked for yet).
        self.tells_every_event = True

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def cached_state(self, message_id: str) -> MessageState | None:
        """The message's state as last committed, if this reader still has it in memory."""
        return self._cache.get(message_id)

    @property
    def partitions(self) -> list[int]:
        """The partitions whose positions this reader keeps."""
        raise NotImplementedError

    @property
    def positions(self) -> dict[int, int]:
        """Partition -> next offset to apply, as committed to the store."""
        return dict(self._positions)

    def has_reached(self, positions: Mapping[int, int]) -> bool:
        return all(self._positions.get(p, 0) >= offset for p, offset in positions.items())

    async def wait_for_progress(self, timeout: float) -> bool:
        """Waits until the next batch is committed; False if `timeout` passed first."""
        try:
            async with asyncio.timeout(timeout), self._progress:
                await self._progress.wait()
            return True
        except TimeoutError:
            return False

    async def wait_until(self, positions: Mapping[int, int], timeout: float) -> bool:
        """Waits until the store holds every record before `positions` (partition -> offset).

        Lets a reader see in the store at least what it has seen elsewhere, e.g. its own appends
        (offset + 1 of each) or another read model's positions. False if `timeout` passed first.
        """
        if self.has_reached(positions):
            return True
        try:
            async with asyncio.timeout(timeout), self._progress:
                await self._progress.wait_for(lambda: self.has_reached(positions))
            return True
        except TimeoutError:
            return False

    async def _advanced(self, offsets: Mapping[int, int], states: Iterable[MessageState], notices: list[LoggedEvent]):
        """Records what the store now holds (only then may the cache, the waiters and the listeners
        see it)."""
        self._positions.update(offsets)
        for state in states:
            self._cache.put(state)
        async with self._progress:
            self._progress.notify_all()
        for notice in notices:
            for listener in self._listeners:
                try:
                    listener(notice)
                except Exception:
                    log.exception("projection listener failed")
