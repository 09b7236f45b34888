"""The store follower: every event one shared message store holds, read back in log order.

When intake's projector runs as a partitioned consumer group (each replica writes only the
partitions the group gives it into one shared store, `Projector(group=True)`), no replica's own
commits cover the whole log. What each replica needs of every event — its watch streams, the
sending limits that count other replicas' messages, the redriver's QUEUED index, the flow and
carrier-health metrics, and read-your-writes for reads that come after an append — it gets from
this follower instead: it polls the store's checkpoints and reads each partition's new events
(`MessageStore.log_events`), with the message's state after each, and tells its listeners, as
the projector tells its own after a commit. Everything it tells is in the store already, so a
client that hears of an event can read it at once from any replica.

It starts at the store's checkpoints (what was stored before is read from the store when asked
for, as after any restart) and needs nothing of the log but the number of partitions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.metrics import Meter, Observation

from smsgw.domain.message_state import MessageState
from smsgw.kafka.clients import wait_for_partitions
from smsgw.kafka.connection import KafkaConnection

from .progress import StoreProgress
from .store import MessageStore

log = logging.getLogger(__name__)

#: How often an idle follower looks at the store's checkpoints (seconds): what a read that waits
#: for its own append, or a watch, waits at most beyond the writer's own commit.
DEFAULT_INTERVAL = 0.025


@dataclass(frozen=True)
class Interest:
    """The events a follower must tell besides every message's first: those of these accounts and
    of these messages (what the replica's streams watch)."""

    accounts: frozenset[str] = frozenset()
    message_ids: frozenset[str] = frozenset()


class StoreFollower(StoreProgress):
    """`interest`: asked before each read, what to tell besides every message's first event; None:
    every event. With it, the store reads only those rows (the others are written by the members
    that own their partitions, which count them in their own metrics and QUEUED index): a replica
    then reads a fourth of the events plus what its clients watch, not the whole log again."""

    def __init__(
        self,
        store: MessageStore,
        topic: str,
        *,
        kafka: KafkaConnection | str,
        interval: float = DEFAULT_INTERVAL,
        page: int = 1000,
        cache_size: int = 10_000,
        retry_delay: float = 1.0,
        interest: Callable[[], Interest] | None = None,
    ) -> None:
        super().__init__(cache_size)
        self._interest = interest
        # Told only some events, its states of the others would be stale: it tells none.
        self.tells_every_event = interest is None
        self.store = store
        self.topic = topic
        self._kafka = kafka
        self._interval = interval
        self._page = page
        self._retry_delay = retry_delay
        self._partitions: list[int] = []
        #: Events the store holds that this follower has not told yet, as of its last look.
        self._behind = 0
        self._task: asyncio.Task | None = None

    @property
    def partitions(self) -> list[int]:
        return list(self._partitions)

    def cached_state(self, message_id: str) -> MessageState | None:
        return super().cached_state(message_id) if self.tells_every_event else None

    def lag(self) -> int:
        return self._behind

    def instrument(self, meter: Meter) -> None:
        meter.create_observable_gauge(
            "smsgw_projection_follower_lag_records",
            callbacks=[lambda _: [Observation(self.lag())]],
            description="events the shared message store holds that this replica's watches and counts have not read yet",
        )

    async def start(self) -> None:
        """Opens the store and starts at its checkpoints."""
        await self.store.open()
        await self.store.prepare_following()
        self._partitions = sorted(await wait_for_partitions(self._kafka, self.topic))
        stored = await self.store.checkpoint()
        self._positions = {p: stored.get(p, 0) for p in self._partitions}
        self.caught_up.set()

    async def catch_up(self, timeout: float | None = None) -> None:
        """Nothing to read before serving: the follower starts at the store's checkpoints."""

    def spawn(self) -> asyncio.Task:
        self._task = asyncio.create_task(self.run_forever(), name=f"store-follower-{self.topic}")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run_forever(self) -> None:
        """Reads what the store holds past its positions, then looks again after `interval` (at
        once while a partition has more than a page to read); a failed read is logged and retried."""
        failing = 0
        while True:
            try:
                more = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failing += 1
                if failing == 1:
                    log.exception("reading the message store's new events failed; retrying")
                else:
                    log.warning("reading the message store's new events failed again (%d in a row): %s", failing, error)
                await asyncio.sleep(self._retry_delay)
                continue
            if failing:
                log.info("the message store's new events are read again, after %d failures", failing)
                failing = 0
            if not more:
                await asyncio.sleep(self._interval)

    async def step(self) -> bool:
        """Tells what the store holds past the positions, at most a page (two statements however
        many partitions moved); True if there is more."""
        stored = await self.store.checkpoint()
        ranges = {
            p: (self._positions.get(p, 0), stored[p])
            for p in self._partitions
            if stored.get(p, 0) > self._positions.get(p, 0)
        }
        if not ranges:
            self._behind = 0
            return False
        interest = self._interest() if self._interest is not None else None
        page = await self.store.log_events(
            ranges,
            self._page,
            known=self._cache.get,
            accounts=interest.accounts if interest is not None else None,
            message_ids=interest.message_ids if interest is not None else None,
        )
        reached = {p: end for p, (_start, end) in ranges.items()}
        if len(page) == self._page:
            # A full page ends inside its last partition; the partitions after it are not read yet.
            last = page[-1]
            reached[last.partition] = last.offset + 1
            for p, (start, _end) in ranges.items():
                if p > last.partition:
                    reached[p] = start
        # Elsewhere `end`: the offsets below it without a stored event hold records that changed no
        # message (copies of events, undecodable records).
        self._behind = sum(end - reached[p] for p, (_start, end) in ranges.items())
        await self._advanced(reached, [notice.state for notice in page], page)
        return self._behind > 0
