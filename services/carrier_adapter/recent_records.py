"""Reads the recent records of newly assigned dispatch partitions' topics, once, with one reader.

The look-ups a replica makes before it submits anything of a newly assigned dispatch partition
are read together: the dispatch partition itself before its commit (dispatcher.py: the ids of
commands handled there, so a copy after the commit is known as one), the submit ledger
(submit_ledger.py: commands a replica had started) and the message events (finished_outcomes.py:
commands whose outcome was written). The last two are keyed by message id and have as many
partitions as the dispatch topic, so a command and its records share a partition number. One
reader for all of them: each reader costs a connection and a metadata round trip, and the time
the look-ups take is time a rebalance waits on.

Each look-up's end is taken in the order the look-ups are given, before anything is read: the
dispatcher gives the ledger before the events, so an outcome written after the ledger's end was
taken, for an attempt the ledger shows, is still within the events' end (its command is not
taken for one left in doubt).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

log = logging.getLogger(__name__)


@dataclass
class Lookup:
    """One look-up's part of the read: partitions of `topic`, each from a start to its end as the
    read begins, every record handed to `on_record(partition, record)`."""

    topic: str
    partitions: set[int]
    on_record: Callable[[int, ConsumerRecord], None]
    #: From the first record written at or after this time (epoch ms)...
    since_ms: int | None = None
    #: ...or from these offsets, per partition (None: from `since_ms`), each to its end; the
    #: reader takes the offsets (a partition's first offset at the least), so the caller's own
    #: consumer makes no request (on its connection it would wait behind its held fetch).
    starts: dict[int, int | None] | None = None
    #: Records read (None: the topic is not partitioned as the dispatch topic, nothing was read).
    records: int | None = 0
    #: Each partition's end offset as the read began (filled for look-ups read from `starts`).
    ends: dict[int, int] = field(default_factory=dict)


async def read_lookups(
    make_reader: Callable[[], AIOKafkaConsumer],
    lookups: list[Lookup],
    dispatch_partitions: int,
    partitions_of: Callable[[str], Awaitable[set[int]]],
) -> None:
    """Reads every look-up's records with one reader; each look-up's `records` says how many
    were read, or None when its topic (read by time) is not partitioned like the dispatch topic.
    `partitions_of(topic)`: the topic's partitions (a producer's `partitions_for`, which keeps
    the metadata of the topics it writes: no round trip)."""
    wanted = [lookup for lookup in lookups if lookup.partitions]
    if not wanted:
        return
    reader = make_reader()
    try:
        await reader.start()
        ends: dict[TopicPartition, int] = {}
        starts: dict[TopicPartition, int] = {}
        owner: dict[TopicPartition, Lookup] = {}
        await _learn_leaders(reader, {lookup.topic for lookup in wanted})
        for lookup in wanted:
            if lookup.starts is not None:
                tps = [TopicPartition(lookup.topic, p) for p in sorted(lookup.partitions)]
                by_time = [tp for tp in tps if lookup.starts.get(tp.partition) is None]
                timed = await reader.offsets_for_times(dict.fromkeys(by_time, lookup.since_ms or 0)) if by_time else {}
                beginnings = await reader.beginning_offsets(tps)
                lasts = await reader.end_offsets(tps)
                for tp in tps:
                    lookup.ends[tp.partition] = lasts[tp]
                    given = lookup.starts.get(tp.partition)
                    if given is not None:
                        first = max(beginnings.get(tp, 0), given)
                    else:
                        at = timed.get(tp)
                        first = at.offset if at is not None else lasts[tp]
                    if first < lasts[tp]:
                        starts[tp], ends[tp], owner[tp] = first, lasts[tp], lookup
                continue
            try:
                found = await partitions_of(lookup.topic)
            except KafkaError as error:  # the topic does not exist (yet): the warning below says what follows
                log.warning("%s: its partitions are unknown (%s)", lookup.topic, error)
                found = set()
            if len(found or ()) != dispatch_partitions:
                log.warning(
                    "%s has %d partitions and the dispatch topic %d: what it says of the commands cannot be looked "
                    "up by partition, so commands started or finished before a crash may be submitted again",
                    lookup.topic,
                    len(found or ()),
                    dispatch_partitions,
                )
                lookup.records = None
                continue
            tps = [TopicPartition(lookup.topic, p) for p in sorted(lookup.partitions)]
            firsts = await reader.offsets_for_times(dict.fromkeys(tps, lookup.since_ms or 0))
            lasts = await reader.end_offsets(tps)
            for tp in tps:
                first = firsts.get(tp)
                if first is not None and first.offset < lasts[tp]:
                    starts[tp], ends[tp], owner[tp] = first.offset, lasts[tp], lookup
        if not ends:
            return
        reader.assign(list(ends))
        for tp, offset in starts.items():
            reader.seek(tp, offset)

        def on_record(tp: TopicPartition, record: ConsumerRecord) -> None:
            lookup = owner[tp]
            lookup.records = (lookup.records or 0) + 1
            lookup.on_record(tp.partition, record)

        await _read_until(reader, ends, on_record)
    finally:
        await reader.stop()


async def _learn_leaders(reader: AIOKafkaConsumer, topics: set[str]) -> None:
    """Has the new reader learn every topic's leaders at once, in one metadata round trip, before
    it takes any end or seeks: learned one topic at a time it waited ~100 ms for each (the
    client's retry back-off), and a topic
    it had not learned when it began to fetch was fetched only after the first fetch request, which
    the broker holds up to fetch.max.wait (500 ms) once the other partitions have nothing more:
    a partition's take-up went from ~220 ms to ~820 ms when the dispatch topic's own records were
    added to the look-ups. The ends are still taken one look-up after another, in their order."""
    # One call per topic, together: a call that finds its topic unknown adds it to the client's
    # next metadata request and waits for it, so the calls share that one round trip (a single
    # call with every topic learns them one retry, ~100 ms, at a time).
    results = await asyncio.gather(
        *(reader.end_offsets([TopicPartition(topic, 0)]) for topic in sorted(topics)), return_exceptions=True
    )
    for topic, result in zip(sorted(topics), results, strict=True):
        if isinstance(result, KafkaError):  # it does not exist (yet): its look-up says so below
            log.debug("leaders of %s not learned (%s)", topic, result)
        elif isinstance(result, BaseException):
            raise result


async def _read_until(
    reader: AIOKafkaConsumer,
    ends: dict[TopicPartition, int],
    on_record: Callable[[TopicPartition, ConsumerRecord], None],
) -> None:
    """Reads each partition from the reader's position up to its end offset (not included)."""
    pending = set(ends)
    while pending:
        batches = await reader.getmany(*pending, timeout_ms=1000, max_records=5000)
        for tp, batch in batches.items():
            for record in batch:
                if record.offset < ends[tp]:
                    on_record(tp, record)
            if batch and batch[-1].offset >= ends[tp] - 1:
                pending.discard(tp)
        for tp in list(pending):
            if await reader.position(tp) >= ends[tp]:
                pending.discard(tp)
