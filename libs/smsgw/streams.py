"""faust-streaming apps for the services that keep keyed state (routing, receipt).

Built by a factory (never a module-level app) and started inside the service's
own asyncio loop next to its gRPC server, so health can say SERVING only once
the app joined its group and restored its tables from their changelogs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import faust
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from smsgw.settings import ServiceSettings

log = logging.getLogger(__name__)

#: The faust-streaming release the patches in this module were read against and are tested with
#: (tests/integration/test_reliability.py, tests/unit/test_batch_pipeline.py). Another release must
#: be read again first: until this names it, importing this module fails.
FAUST_VERSION = "0.15.3"
if faust.__version__ != FAUST_VERSION:
    raise ImportError(f"smsgw.streams patches faust-streaming {FAUST_VERSION}, found {faust.__version__}: read "
                      "the patched methods of the new release against these before changing FAUST_VERSION")

_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer  # noqa: SLF001 - faust internals, patched here only (see each patch's docstring)


def _with_fetch_wait(self, transport):
    """faust hard-codes fetch_max_wait_ms=1500. Tansu holds every fetch for half of it,
    so each faust hop cost 0.75 s there; the wait is a setting instead (docs/brokers.md)."""
    consumer = _create_worker_consumer(self, transport)
    wait = getattr(self.app, "smsgw_fetch_max_wait_ms", None)
    if wait is not None:
        consumer._fetch_max_wait_ms = wait  # noqa: SLF001 - read when the consumer starts its fetcher
    return consumer


AIOKafkaConsumerThread._create_worker_consumer = _with_fetch_wait  # noqa: SLF001 - faust internals, patched here only

_faust_ack = FaustConsumer.ack


def _ack_only_processed(self, message) -> bool:
    """faust skips records its stream fetched while a rebalance was under way (generation
    mismatch, flow control off) and then *acks* them, so their offsets get committed and the
    records are never processed: messages lost after a worker restart (seen in our kill -9
    test). A record the stream never handed to an agent is never `tracked`; refusing to ack it
    keeps the commit behind it, and faust re-reads it after the seek that ends the rebalance."""
    if not getattr(message, "tracked", True):
        log.info("not acking %s@%s: faust skipped it during a rebalance; it will be read again",
                 message.tp, message.offset)
        return False
    return _faust_ack(self, message)


FaustConsumer.ack = _ack_only_processed


async def _drain_messages(self, fetcher) -> None:  # pragma: no cover - exercised by the kill -9 tests
    """faust's Consumer._drain_messages (faust-streaming 0.15.3, BSD licence), with one change.

    faust hands each fetched record to its streams with
    `wait_first(callback(record), suspend_flow.wait())` and then marks the record as read
    whether or not the hand-over finished. When a rebalance suspends the flow mid-batch, the
    rest of the batch is marked read but never reaches an agent, and unless a seek follows,
    nothing fetches it again: the kill -9 test saw routing and receipt lose records this way.
    Here a record that was not handed over is not marked read, and every partition of the
    batch is sought back to its first such record, so it is fetched again.

    And a record that comes after a gap (offsets never handed over: seen after rebalances, when
    records fetched before the seek to the committed offset arrive after it) is not handed over
    either: the partition is fetched again from the gap, so records reach the agent in log order
    (a delivery receipt after the submit it belongs to) and none waits for the stall healer. A
    partition with nothing read yet and no committed offset starts at its earliest offset. A gap
    that is still there after three fetches is taken as real (faust's own handling)."""
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set  # noqa: SLF001 - faust internals: a copy of faust's own method
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    gap_fetches: dict = self.__dict__.setdefault("_smsgw_gap_fetches", {})
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            ait = getmany(timeout=1.0)
            await self.sleep(0)
            if self.should_stop:
                continue
            refetch: dict = {}
            handled = 0
            async for tp, message in ait:
                handled += 1
                if handled % 100 == 0:
                    await asyncio.sleep(0)
                offset = message.offset
                if tp in refetch:
                    continue  # an earlier record of this partition will be fetched again
                r_offset = get_read_offset(tp)
                if r_offset is not None and offset < r_offset:
                    continue  # already handed over (faust's "dropped message")
                gap_from = None
                if acks_enabled_for(message.topic):
                    if r_offset is None:
                        # Nothing read here yet and no committed offset (faust leaves the read
                        # offset unset then): the partition starts at its earliest offset.
                        if offset > 0:
                            start = (await self.earliest_offsets(tp)).get(tp, 0)
                            if offset > start:
                                gap_from = start
                    elif offset - r_offset > 1:
                        gap_from = r_offset
                if gap_from is not None:
                    fetches = gap_fetches.get((tp, gap_from), 0)
                    if len(gap_fetches) > 10_000:
                        gap_fetches.clear()  # bounded: gaps are rare, and a cleared count only allows a fetch more
                    if fetches < 3:
                        gap_fetches[(tp, gap_from)] = fetches + 1
                        log.info("%s: offsets %s..%s came before %s; fetching from %s again",
                                 tp, gap_from, offset - 1, offset, gap_from)
                        refetch[tp] = gap_from
                        continue
                    if r_offset:
                        await self._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                handover = callback(message)
                result = await self.wait_first(handover, self.suspend_flow.wait())
                if handover not in result.done:
                    refetch[tp] = offset
                    continue
                set_read_offset(tp, offset)
            for tp, offset in refetch.items():
                log.info("flow suspended before %s@%s reached its stream; fetching it again", tp, offset)
                await self.seek(tp, offset)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            return
        raise


FaustConsumer._drain_messages = _drain_messages  # noqa: SLF001 - faust internals, patched here only


async def _no_gaps(self, tp, offset_from: int, offset_to: int) -> None:
    """faust treats a jump in fetched offsets as records that do not exist (transaction markers,
    compaction) and commits over them. Our stream topics have neither, so a jump means records
    that were not handed over: never commit over them (the stall healer fetches them again)."""
    log.info("offsets %s..%s of %s were skipped by the fetch; not committing over them", offset_from, offset_to, tp)


FaustConsumer._add_gap = _no_gaps  # noqa: SLF001 - faust internals, patched here only


def read_offset(app: faust.App, tp) -> int | None:
    """The offset of the last record faust handed to an agent from this partition (None: none yet)."""
    return app.consumer._read_offset.get(tp)  # type: ignore[attr-defined]  # noqa: SLF001 - faust internals live here


def heal_stalled_partitions(app: faust.App, stream_topics: set[str], *, after: float = 15.0,
                            interval: float = 2.0) -> None:
    """When a partition's commit has been stuck behind an unprocessed record for `after` seconds
    (later records processed, or records waiting and none processed), fetch it again from the
    committed offset. Agents are idempotent (deterministic event ids, table dedupe), so re-read
    records are harmless; a partition that is merely slow gets re-read once per `after`."""
    stalled_since: dict = {}

    @app.timer(interval=interval)
    async def heal() -> None:
        consumer = app.consumer
        now = asyncio.get_running_loop().time()
        for tp in list(consumer.assignment()):
            if tp.topic not in stream_topics:
                continue
            acked = consumer._acked.get(tp)  # noqa: SLF001 - faust keeps this bookkeeping private
            committed = consumer._committed_offset.get(tp)  # noqa: SLF001
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - not known yet
                highwater = None
            behind_processed = bool(acked) and committed is not None and min(acked) > committed
            # Or: records wait past the commit and none of them is being processed at all.
            idle_behind = (not acked and committed is not None and highwater is not None
                           and highwater > committed)
            if behind_processed or idle_behind:
                since = stalled_since.setdefault(tp, now)
                if now - since >= after:
                    log.warning("%s: commit stuck at %s behind unprocessed records; fetching them again",
                                tp, committed)
                    stalled_since.pop(tp, None)
                    await consumer.seek(tp, committed)
            else:
                stalled_since.pop(tp, None)


@dataclass(frozen=True)
class Outgoing:
    """One record a stream processor emits."""

    topic: faust.types.TopicT
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


async def publish(outgoing: list[Outgoing], what: str) -> None:
    """Sends a batch's records together and waits until the broker has all of them.

    Tried until it succeeds: the batch's events are acked only after this returns, so giving
    up would commit over them. A retry sends the same records again (deterministic ids: readers
    drop the copies); a broker that is down holds the stream, it does not lose it."""
    delay = 0.2
    while True:
        try:
            futures = [await record.topic.send(key=record.key, value=record.value, headers=record.headers)
                       for record in outgoing]
            await asyncio.gather(*futures)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: %d records not written; retrying in %.1fs", what, len(outgoing), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


class ChangelogTable(faust.Table):
    """A faust Table whose changelog writes can be awaited (`await table.written()`).

    faust sends a table's changelog records through its producer buffer and, before it commits
    offsets, flushes that buffer with `ProducerBuffer.flush`, which gives up after 0.1 s without
    progress (faust-streaming 0.15.3) and lets the commit go ahead. A kill -9 right after such a
    commit lost a receipt correlation: the report that created it was committed, its changelog
    record never reached the broker, and the delivery receipt that came next found nothing to
    match (stuck at SENT in a CI run). Awaiting the writes before acking the events that caused
    them makes the order a guarantee: state on the broker, then the offset."""

    def send_changelog(self, partition, key, value, key_serializer=None, value_serializer=None):
        future = super().send_changelog(partition, key, value, key_serializer, value_serializer)
        unwritten = self._unwritten()
        unwritten[key] = future  # only the newest write of a key matters

        def forget(done, key=key):
            if unwritten.get(key) is done and not done.cancelled() and done.exception() is None:
                del unwritten[key]

        future.add_done_callback(forget)
        return future

    def _unwritten(self) -> dict:
        # Set on first use: faust builds tables through a long keyword-only __init__.
        return self.__dict__.setdefault("_smsgw_unwritten", {})

    async def written(self) -> None:
        """Returns once every change made before the call is on the broker (later ones are their
        writers' to await: waiting for them too would let a busy table keep this waiting). A write
        the broker refused is sent again, with the key's current value, until it is taken: acking
        the events behind it otherwise would commit over state that exists only in this process."""
        unwritten = self._unwritten()
        pending = dict(unwritten)
        delay = 0.2
        while pending:
            results = await asyncio.gather(*pending.values(), return_exceptions=True)
            failed = {key: result for key, result in zip(pending, results) if isinstance(result, BaseException)}
            pending = {}
            if not failed:
                return
            log.warning("%s: %d changelog writes failed (first: %r); sending them again in %.1fs",
                        self.name, len(failed), next(iter(failed.values())), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            for key in failed:
                newest = unwritten.get(key)
                if newest is None:
                    continue  # written since, by a later change of the key
                if newest.done():  # still the failed write (or another failed one): send it again
                    value = self.get(key)
                    newest = self.send_changelog(self.partition_for_key(key), key, value,
                                                 value_serializer=None if value is not None else "raw")
                pending[key] = newest


_MISSING = object()


@dataclass
class PendingBatch:
    """What a stream decided for some events and has not yet published."""

    outgoing: list[Outgoing] = field(default_factory=list)
    changes: dict = field(default_factory=dict)   # key -> new state, applied once published
    events: list = field(default_factory=list)    # faust events to ack once published


class BatchPipeline:
    """Publishes what an agent decides in batches while it goes on deciding the next batch.

    faust hands an agent one event at a time. Awaiting the broker's acks per event (or per
    `stream.take` batch, which holds the stream until its batch is done) bounded each agent
    to what one ack round trip allows: about 100 messages/s. Here the agent only decides;
    its records wait in `filling` while the previous batch is in flight, and go out together
    as soon as that one is acknowledged. Idle, a batch is one event (no added latency); under
    load it grows by itself, up to `max_batch` events, beyond which the agent waits.

    At least once, in this order per batch: records acknowledged by the broker, then the
    agent's state changes applied (`apply_changes`, e.g. table writes) and, when `written` is
    given, awaited until they are on the broker too (a table's changelog), then the events
    acked (faust commits only contiguous acked offsets). A crash before the acks replays the
    events. The stream must be `noack()`: events are acked here.

    The next batch goes out as soon as this one's records are acknowledged and its changes
    applied: waiting for the changelog only holds this batch's acks (a round trip and a linger
    that would otherwise be added to every record's way downstream).
    """

    def __init__(self, stream, apply_changes: Callable[[dict], None], *, what: str, max_batch: int = 2000,
                 written: Callable[[], Awaitable[None]] | None = None):
        self.stream = stream
        self.apply_changes = apply_changes
        self.written = written
        self.what = what
        self.max_batch = max_batch
        self.filling = PendingBatch()
        self.publishing: PendingBatch | None = None
        self._task: asyncio.Task | None = None
        self._acking: set[asyncio.Task] = set()   # batches out, waiting for their changelog to ack

    def pending_change(self, key, default=None):
        """The newest state decided for `key` that is not applied yet, else `default`."""
        for batch in (self.filling, self.publishing):
            if batch is not None:
                change = batch.changes.get(key, _MISSING)
                if change is not _MISSING:
                    return change
        return default

    def has_pending_change(self, key) -> bool:
        return key in self.filling.changes or (self.publishing is not None and key in self.publishing.changes)

    async def add(self, event) -> None:
        """Queues the event (its records and changes are already in `filling`) for its batch."""
        self.filling.events.append(event)
        if self._task is None:
            self._start()
        elif len(self.filling.events) >= self.max_batch:
            await asyncio.shield(self._task)  # its end starts the batch that is full now

    async def drain(self) -> None:
        """Returns once everything added so far is published and acked."""
        while self._task is not None or self.filling.events or self._acking:
            if self._task is None and self.filling.events:
                self._start()
            if self._task is not None:
                await asyncio.shield(self._task)
            elif self._acking:
                await asyncio.shield(asyncio.gather(*self._acking))

    def _start(self) -> None:
        batch, self.filling = self.filling, PendingBatch()
        self.publishing = batch
        self._task = asyncio.create_task(self._publish(batch), name=f"publish {self.what}")

    async def _publish(self, batch: PendingBatch) -> None:
        if batch.outgoing:
            await publish(batch.outgoing, self.what)
        self.apply_changes(batch.changes)
        if self.written is not None and batch.changes:
            acking = asyncio.create_task(self._ack_when_written(batch), name=f"ack {self.what}")
            self._acking.add(acking)
            acking.add_done_callback(self._acking.discard)
        else:
            await self._ack(batch)
        self.publishing = None
        self._task = None
        if self.filling.events:
            self._start()

    async def _ack_when_written(self, batch: PendingBatch) -> None:
        assert self.written is not None
        await self.written()
        await self._ack(batch)

    async def _ack(self, batch: PendingBatch) -> None:
        for event in batch.events:
            await self.stream.ack(event)


def make_app(settings: ServiceSettings, app_id: str, *, partitions: int = 12) -> faust.App:
    app_id = settings.topic_prefix + app_id
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        datadir=str(Path(settings.state_dir) / app_id),
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",  # tables are rebuilt from their changelog topics at start
        topic_partitions=partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_ms / 1000,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=settings.kafka_linger_ms,
        producer_max_batch_size=settings.kafka_max_batch_size,
        stream_buffer_maxsize=4096,
        web_enabled=False,
        autodiscover=False,
        processing_guarantee="at_least_once",
        key_serializer="raw",
        value_serializer="raw",
        Table=ChangelogTable,
    )
    app.smsgw_fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
    return app


async def start_app(app: faust.App, timeout: float | None = None, *, progress_every: float = 10.0) -> None:
    """Starts the app and waits until its partitions are assigned and tables recovered.

    No deadline by default: recovering a table takes as long as its changelog is long, which a
    fixed deadline would one day be too short for (a crash loop). The wait says what it waits for
    every `progress_every` seconds instead; whoever runs the service (the kubelet's startup probe,
    a test harness) decides how long is too long."""
    await app.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    next_report = started + progress_every
    while True:
        assigned = bool(app.consumer.assignment())
        recovered = app.tables.recovery.completed.is_set() if app.tables else True
        if assigned and recovered and not app.rebalancing:
            return
        now = loop.time()
        if timeout is not None and now - started > timeout:
            raise TimeoutError(f"{app.conf.id}: not ready after {timeout}s (assigned={assigned}, recovered={recovered})")
        if now >= next_report:
            log.info("%s: not ready after %.0fs, still waiting (partitions assigned: %s, tables recovered: %s, "
                     "rebalancing: %s)", app.conf.id, now - started, assigned, recovered, app.rebalancing)
            next_report = now + progress_every
        await asyncio.sleep(0.05)


async def stop_app(app: faust.App) -> None:
    await app.stop()
