"""The projector: folds the events topic into a MessageStore, batch by batch, resumably.

By default no consumer group: it assigns itself every partition and seeks each one to the
store's checkpoint (or the beginning). With `group=True` it is one member of a consumer group
whose members share the partitions and write one shared store, each its own partitions (seeking
each one it is given to the store's checkpoint); the store follower (follower.py) then tells each
replica of every partition's events. Each fetched batch is folded with the
pure `smsgw.domain.message_state.apply` and written, rows and checkpoint
together, in one transaction; the checkpoint it expects to find is part of the
write, so a second projector on the same store fails its write instead of
corrupting it, and resynchronises from the stored checkpoint.

States are kept in an LRU cache and reloaded from the store (by folding the
message's stored events) on a miss; the cache only takes states the store has
committed, so it never runs ahead of the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, NoOffsetForPartitionError, OffsetOutOfRangeError
from opentelemetry.metrics import Meter, Observation

from smsgw.domain.message_state import MessageState, apply
from smsgw.events.envelope import decode_event
from smsgw.kafka.clients import wait_for_partitions
from smsgw.kafka.connection import KafkaConnection
from smsgw.v1 import events_pb2 as ev

from .progress import Listener, StoreProgress
from .store import CheckpointConflict, LoggedEvent, MessageStore, MessageUpdate, StoredEvent, StoreError

log = logging.getLogger(__name__)

__all__ = ["Listener", "Projector", "ProjectorStats", "make_consumer"]


@dataclass
class ProjectorStats:
    records: int = 0  # records read from the topic
    applied: int = 0  # events that changed a message (copies and poison records excluded)
    skipped: int = 0  # records that could not be decoded
    batches: int = 0  # transactions committed
    conflicts: int = 0  # writes refused because another writer moved the checkpoint
    failures: int = 0  # batches that failed otherwise (the store refused the write), retried
    first_offsets: dict[int, int] = field(default_factory=dict)  # per partition, first offset read since start


class Projector(StoreProgress):
    """Keeps `store` up to date with `topic`.

    `consumer` must have `auto_offset_reset="none"` (see `make_consumer`): a checkpoint the log
    no longer has (topic recreated, records deleted) must stop the projector, not silently jump.
    It has no group, unless `group`: then it has one, and its offsets live in the store only
    (nothing is committed to Kafka). Listeners are called after each commit, once per event that changed a
    message, with its position and the message's new state (intake's watches feed on this).
    """

    def __init__(
        self,
        store: MessageStore,
        consumer: AIOKafkaConsumer,
        topic: str,
        *,
        kafka: KafkaConnection | str,
        max_batch: int = 2000,
        fetch_timeout_ms: int = 200,
        cache_size: int = 10_000,
        retry_delay: float = 1.0,
        group: bool = False,
        folded: Callable[[str], MessageState | None] | None = None,
    ):
        super().__init__(cache_size)
        self.store = store
        self.topic = topic
        self._consumer = consumer
        self._kafka = kafka
        self._group = group
        self._max_batch = max_batch
        self._fetch_timeout_ms = fetch_timeout_ms
        self._retry_delay = retry_delay
        #: A message's state this process already folded from its first event (intake's own
        #: appends, folded for the caller's answer): taken instead of folding that event again.
        self._folded = folded
        #: The partitions this projector writes: every one, or the group's share for this member.
        self._partitions: list[TopicPartition] = []
        #: Every partition of the topic (a checkpoint of another is a store of another topic).
        self._topic_partitions: set[int] = set()
        self._end_offsets: dict[TopicPartition, int] = {}
        self._task: asyncio.Task | None = None
        self._started = False
        #: Group assignments so far, and whether the last one is yet to be sought to the checkpoint.
        self._assignments = 0
        self._unsought = False
        self.stats = ProjectorStats()

    @property
    def partitions(self) -> list[int]:
        return [tp.partition for tp in self._partitions]

    @property
    def share(self) -> float:
        """The part of the topic's partitions this projector writes (1.0 outside a group)."""
        if not self._topic_partitions:
            return 1.0
        return len(self._partitions) / len(self._topic_partitions)

    def lag(self) -> int:
        """Records of the topic not yet in the store, as far as the last fetch told (0 before one)."""
        behind = 0
        for tp in self._partitions:
            try:
                end = self._consumer.highwater(tp)
            except (AssertionError, IllegalStateError):  # not assigned (stopping, or not started)
                continue
            if end is not None:
                behind += max(0, end - self._positions.get(tp.partition, 0))
        return behind

    def instrument(self, meter: Meter) -> None:
        meter.create_observable_gauge(
            "smsgw_projection_lag_records",
            callbacks=[lambda _: [Observation(self.lag())]],
            description="records of the events topic not yet in this replica's message store (reads are that far behind)",
        )
        meter.create_observable_counter(
            "smsgw_projection_write_failures",
            callbacks=[lambda _: [Observation(self.stats.failures)]],
            description="projected batches the message store failed to write (disk full, database down), each retried",
        )

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Opens the store, assigns every partition and seeks each to the stored checkpoint (in a
        group: joins it; the partitions come with the first fetch, each sought on assignment)."""
        await self.store.open()
        await self.store.bind_source(self.topic)
        await self._consumer.start()
        partitions = await wait_for_partitions(self._kafka, self.topic)
        self._topic_partitions = set(partitions)
        self._started = True
        if self._group:
            self._consumer.subscribe([self.topic], listener=_Share(self))
            return
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._partitions)
        await self._seek_to_checkpoint()

    def drop_partitions(self, revoked: set[TopicPartition]) -> None:
        """The group took `revoked` from this member: no longer its to write or wait for."""
        self._partitions = [tp for tp in self._partitions if tp not in revoked]
        for tp in revoked:
            self._end_offsets.pop(tp, None)

    async def take_partitions(self, assigned: set[TopicPartition]) -> None:
        """The group gave this member `assigned`: each is read from the store's checkpoint (where
        its last writer, maybe another member, left it)."""
        self._partitions = sorted(assigned)
        self._assignments += 1
        log.info("projecting partitions %s of %s", [tp.partition for tp in self._partitions], self.topic)
        try:
            await self._seek_to_checkpoint()
        except Exception:
            log.exception("seeking newly assigned partitions to the store's checkpoint failed")
            self._unsought = True

    async def run_forever(self) -> None:
        """Applies batches until cancelled; a failed batch is logged, and retried from the checkpoint.

        A store that keeps failing (its disk full, its server down) is logged once with the
        traceback, then one line per retry, and once more when writes succeed again; meanwhile
        reads and watches fall behind the log (`lag()`), and nothing is lost: the log has it all."""
        failing = 0
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if isinstance(error, CheckpointConflict):
                    self.stats.conflicts += 1
                    log.warning("%s", error)
                else:
                    self.stats.failures += 1
                    failing += 1
                    if failing == 1:
                        log.exception("projection batch failed; retrying from the stored checkpoint")
                    else:
                        log.warning(
                            "projection batch failed again (%d in a row; the store is %d records behind the log): %s",
                            failing,
                            self.lag(),
                            error,
                        )
                await asyncio.sleep(self._retry_delay)
                with _logged("resynchronising the projector"):
                    await self._seek_to_checkpoint()
            else:
                if failing:
                    log.info("projection batches are written again, after %d failed", failing)
                    failing = 0

    def spawn(self) -> asyncio.Task:
        """Runs `run_forever` in a task (stopped by `stop`)."""
        self._task = asyncio.create_task(self.run_forever(), name=f"projector-{self.topic}")
        return self._task

    async def catch_up(self, timeout: float | None = None) -> None:
        """Applies batches until every partition reaches the end offsets seen at start (or rebuild)."""
        async with asyncio.timeout(timeout):
            while not self.caught_up.is_set():
                await self.step()

    async def rebuild(self, timeout: float | None = None) -> None:
        """Drops the store's contents and replays the topic from the beginning up to its current end.

        Works before `start()` too (then it starts): a store bound to another topic, or of an
        older schema, is reset rather than refused.
        """
        if self._task is not None:
            raise RuntimeError("stop the running projector before rebuilding")
        if self._group:
            raise RuntimeError("a group member writes only its partitions: rebuild with a projector of its own")
        if not self._started:
            await self.store.open(reset_if_outdated=True)
            await self.store.reset()
            await self.start()
        else:
            await self.store.reset()
            await self.store.bind_source(self.topic)
            await self._seek_to_checkpoint()
        self.stats = ProjectorStats()
        await self.catch_up(timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._consumer.stop()

    # -- one batch -----------------------------------------------------------------------
    async def step(self) -> int:
        """Fetches one batch, folds it, commits it with the checkpoint; returns the records read."""
        if self._unsought:
            await self._seek_to_checkpoint()
        try:
            batches = await self._consumer.getmany(timeout_ms=self._fetch_timeout_ms, max_records=self._max_batch)
        except NoOffsetForPartitionError:
            # In a group: a partition just assigned, and the consumer looked for a committed offset
            # (there is none: the store has it) before the assignment's seek. Seek again.
            await self._seek_to_checkpoint()
            return 0
        except OffsetOutOfRangeError as error:
            raise StoreError(
                f"the store's checkpoint {self._positions} is outside the log of {self.topic} ({error}): "
                "was the topic recreated or truncated? rebuild the projection (smsgw projections rebuild)"
            ) from error
        records = [(tp.partition, record) for tp, recs in batches.items() for record in recs]
        if records:
            await self._apply(records)
        await self._check_caught_up()
        return len(records)

    async def _apply(self, records: list) -> None:
        decoded: list[tuple[int, int, ev.EventEnvelope | None, bytes | None]] = []
        for partition, record in records:
            self.stats.first_offsets.setdefault(partition, record.offset)
            try:
                envelope = decode_event(record.value) if record.value is not None else None
                if envelope is not None and not envelope.message_id:
                    envelope = None
            except Exception:  # noqa: BLE001 - a poison record must not stop the read model
                envelope = None
            if envelope is None:
                log.warning("skipping undecodable record %s[%d]@%d", self.topic, partition, record.offset)
            decoded.append((partition, record.offset, envelope, record.value))

        needed = {e.message_id for _, _, e, _ in decoded if e is not None}
        base = {mid: s for mid in needed if (s := self._cache.get(mid)) is not None}
        missing = needed - base.keys()
        if missing:
            base.update(await self.store.load_states(missing))

        changed: dict[str, MessageState] = {}
        new_events: dict[str, list[StoredEvent]] = {}
        folded: list[tuple[int, int, ev.EventEnvelope, MessageState]] = []
        offsets: dict[int, int] = {}
        skipped = 0
        for partition, offset, envelope, raw in decoded:
            offsets[partition] = offset + 1
            if envelope is None:
                skipped += 1
                continue
            before = changed.get(envelope.message_id) or base.get(envelope.message_id)
            after = self._first_folded(envelope) if before is None else None
            if after is None:
                after = apply(before, envelope)
            if before is not None and after.version == before.version:
                continue  # a copy of an event already applied
            changed[envelope.message_id] = after
            new_events.setdefault(envelope.message_id, []).append(
                StoredEvent(envelope, after.status, partition, offset, raw)
            )
            folded.append((partition, offset, envelope, after))

        # Each message's newest state is rendered once, for the store and for the watches that
        # are told of the event that made it (an earlier state of the batch is not stored).
        views = {mid: self.store.render(state) for mid, state in changed.items()}
        updates = [MessageUpdate(state, tuple(new_events[mid]), views[mid]) for mid, state in changed.items()]
        notices = [
            LoggedEvent(partition, offset, envelope, state, views[envelope.message_id])
            if changed[envelope.message_id] is state
            else LoggedEvent(partition, offset, envelope, state)
            for partition, offset, envelope, state in folded
        ]
        expected = {p: self._positions.get(p) for p in offsets}
        await self.store.apply(updates, offsets, expected=expected)

        self.stats.records += len(decoded)
        self.stats.applied += len(notices)
        self.stats.skipped += skipped
        self.stats.batches += 1
        # Committed: only now may the cache and the listeners see the new states.
        await self._advanced(offsets, changed.values(), notices)

    def _first_folded(self, envelope: ev.EventEnvelope) -> MessageState | None:
        """The state `apply(None, envelope)` gives, if this process folded it already: a message
        the store does not have, whose first event is `envelope` (event ids are unique, so a state
        of version 1 made of this event id is that fold)."""
        if self._folded is None:
            return None
        state = self._folded(envelope.message_id)
        if state is None or state.version != 1 or envelope.event_id not in state.applied_event_ids:
            return None
        return state

    # -- positions -----------------------------------------------------------------------
    async def _seek_to_checkpoint(self) -> None:
        if not self._started:
            raise RuntimeError("start() the projector first")
        self._cache.clear()
        self.caught_up.clear()
        stored = await self.store.checkpoint()
        unknown = set(stored) - self._topic_partitions
        mine = {tp.partition for tp in self._partitions}
        self._positions = {p: offset for p, offset in stored.items() if p in mine}
        self._unsought = False
        if unknown:
            raise StoreError(
                f"the store has checkpoints for partitions {sorted(unknown)} that {self.topic} "
                "does not have: was the topic recreated? rebuild the projection"
            )
        fresh = []
        for tp in self._partitions:
            if tp.partition in self._positions:
                self._consumer.seek(tp, self._positions[tp.partition])
            else:
                fresh.append(tp)
        if fresh:
            await self._consumer.seek_to_beginning(*fresh)
        self._end_offsets = await self._consumer.end_offsets(self._partitions)
        await self._check_caught_up()

    async def _check_caught_up(self) -> None:
        if self.caught_up.is_set() or (self._group and not self._assignments):
            return
        for tp, end in self._end_offsets.items():
            # Records skipped by the broker (compaction, transaction markers) leave the consumer's
            # position ahead of the last applied record: that counts as reached.
            if end > 0 and self._positions.get(tp.partition, 0) < end:
                try:
                    if await self._consumer.position(tp) < end:
                        return
                except IllegalStateError:
                    continue  # in a group: no longer this member's (revoked meanwhile)
        log.info("projection of %s caught up (%d partitions)", self.topic, len(self._end_offsets))
        self.caught_up.set()


class _Share(ConsumerRebalanceListener):
    """A group member's partitions: each new one is sought to the store's checkpoint, each revoked
    one dropped. A batch of a revoked partition still being written either lands before its new
    member's first write (which then finds the checkpoint moved, is refused and re-reads it) or
    after it (then this write is refused: CheckpointConflict)."""

    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    async def on_partitions_revoked(self, revoked) -> None:
        self.projector.drop_partitions(set(revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        await self.projector.take_partitions(set(assigned))


def make_consumer(
    kafka: KafkaConnection | str, *, client_id: str = "smsgw-projector", fetch_max_wait_ms: int = 500, **overrides
) -> AIOKafkaConsumer:
    """A consumer for the projector: no group, no auto commit, no silent offset reset."""
    kwargs = dict(
        **KafkaConnection.of(kafka).client_kwargs(),
        enable_auto_commit=False,
        auto_offset_reset="none",
        client_id=client_id,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    kwargs.update(overrides)
    return AIOKafkaConsumer(**kwargs)


class _logged:
    """Logs (and swallows) an error of a best-effort step, so the retry loop goes on."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if error is not None and not isinstance(error, asyncio.CancelledError):
            log.exception("%s failed", self.what)
            return True
        return False
