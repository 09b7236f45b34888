"""Reads the recent records of some partitions of a topic, once, when dispatch partitions are assigned.

The look-ups a replica makes before it submits anything of a newly assigned dispatch partition
read this way, each with a reader of its own: the dispatch partition itself before its commit
(dispatcher.py: the ids of commands handled there, so a copy after the commit is known as one),
the message events (finished_outcomes.py: commands whose outcome was written) and
the submit ledger (submit_ledger.py: commands a replica had started). The last two are keyed by
message id and have as many partitions as the dispatch topic, so a command and its records share a
partition number.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from smsgw.kafka.clients import wait_for_partitions
from smsgw.kafka.connection import KafkaConnection

log = logging.getLogger(__name__)


async def read_recent(
    kafka: KafkaConnection | str,
    make_reader: Callable[[], AIOKafkaConsumer],
    topic: str,
    partitions: set[int],
    dispatch_partitions: int,
    since_ms: int,
    on_record: Callable[[int, ConsumerRecord], None],
) -> int | None:
    """Hands every record of `partitions` of `topic` written since `since_ms` (epoch ms) to
    `on_record(partition, record)`, up to the partitions' ends when called. Returns how many were
    read, or None when the topic is not partitioned as the dispatch topic (nothing can be learnt)."""
    if not partitions:
        return 0
    found = await wait_for_partitions(kafka, topic, timeout=30.0)
    if len(found) != dispatch_partitions:
        log.warning(
            "%s has %d partitions and the dispatch topic %d: what it says of the commands cannot be looked "
            "up by partition, so commands started or finished before a crash may be submitted again",
            topic,
            len(found),
            dispatch_partitions,
        )
        return None
    reader = make_reader()
    await reader.start()
    try:
        return await _read(reader, topic, sorted(partitions), since_ms, on_record)
    finally:
        await reader.stop()


async def read_ranges(
    make_reader: Callable[[], AIOKafkaConsumer],
    ranges: dict[TopicPartition, tuple[int, int]],
    on_record: Callable[[TopicPartition, ConsumerRecord], None],
) -> int:
    """Hands every record of each partition from its start offset up to (not including) its end
    offset to `on_record(tp, record)`, read by a reader of its own. Returns how many were read."""
    ranges = {tp: (start, end) for tp, (start, end) in ranges.items() if start < end}
    if not ranges:
        return 0
    reader = make_reader()
    await reader.start()
    try:
        reader.assign(list(ranges))
        for tp, (start, _end) in ranges.items():
            reader.seek(tp, start)
        return await _read_until(reader, {tp: end for tp, (_start, end) in ranges.items()}, on_record)
    finally:
        await reader.stop()


async def _read(
    reader: AIOKafkaConsumer,
    topic: str,
    partitions: list[int],
    since_ms: int,
    on_record: Callable[[int, ConsumerRecord], None],
) -> int:
    tps = [TopicPartition(topic, p) for p in partitions]
    reader.assign(tps)
    starts = await reader.offsets_for_times(dict.fromkeys(tps, since_ms))
    ends = await reader.end_offsets(tps)
    pending = {}
    for tp in tps:
        start = starts.get(tp)
        if start is not None and start.offset < ends[tp]:
            reader.seek(tp, start.offset)
            pending[tp] = ends[tp]
    return await _read_until(reader, pending, lambda tp, record: on_record(tp.partition, record))


async def _read_until(
    reader: AIOKafkaConsumer,
    ends: dict[TopicPartition, int],
    on_record: Callable[[TopicPartition, ConsumerRecord], None],
) -> int:
    """Reads each partition from the reader's position up to its end offset (not included)."""
    pending = set(ends)
    records = 0
    while pending:
        batches = await reader.getmany(*pending, timeout_ms=1000, max_records=5000)
        for tp, batch in batches.items():
            for record in batch:
                if record.offset < ends[tp]:
                    records += 1
                    on_record(tp, record)
            if batch and batch[-1].offset >= ends[tp] - 1:
                pending.discard(tp)
        for tp in list(pending):
            if await reader.position(tp) >= ends[tp]:
                pending.discard(tp)
    return records
