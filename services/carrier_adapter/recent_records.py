"""Reads the last minutes of some partitions of a topic, once, when dispatch partitions are assigned.

Both look-ups a replica makes before it submits anything of a newly assigned dispatch partition
read this way: the message events (finished_outcomes.py: commands whose outcome was written) and
the submit ledger (submit_ledger.py: commands a replica had started). Both topics are keyed by
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
    pending = set()
    for tp in tps:
        start = starts.get(tp)
        if start is not None and start.offset < ends[tp]:
            reader.seek(tp, start.offset)
            pending.add(tp)
    records = 0
    while pending:
        batches = await reader.getmany(*pending, timeout_ms=1000, max_records=5000)
        for tp, batch in batches.items():
            for record in batch:
                if record.offset < ends[tp]:
                    records += 1
                    on_record(tp.partition, record)
            if batch and batch[-1].offset >= ends[tp] - 1:
                pending.discard(tp)
        for tp in list(pending):
            if await reader.position(tp) >= ends[tp]:
                pending.discard(tp)
    return records
