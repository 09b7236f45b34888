"""Keyed state that survives a restart and moves with its partition, without a stream framework.

A consumer in a group owns some partitions of its input topic; the state it keeps per key lives
in partition p of a compacted changelog topic when the key's input record is in partition p. A
change is one record (the key's newest value, or a tombstone); when a partition is assigned, its
changelog partition is read to its end offset, which is all the state that partition ever needs.
That is what faust's tables gave routing; here it is two functions, because a faust event costs
~250 µs of CPU where a batched aiokafka loop costs ~15 (docs/brokers.md, section (c)).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import TopicPartition

from smsgw.settings import ServiceSettings

from .clients import make_reader

log = logging.getLogger(__name__)


async def read_changelog(
    settings: ServiceSettings, topic: str, partitions: Iterable[int], *, progress_every: float = 10.0
) -> dict[int, dict[bytes, bytes]]:
    """Each partition's keys with their newest value, read to the end offset it had when asked
    (tombstones remove their key). No deadline: a long changelog takes as long as it takes, and
    the wait says every `progress_every` seconds how far it got."""
    wanted = sorted(set(partitions))
    state: dict[int, dict[bytes, bytes]] = {p: {} for p in wanted}
    if not wanted:
        return state
    reader = make_reader(settings, bounded=True)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in wanted]
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        starts = await reader.beginning_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > starts[tp]}
        for tp in pending:
            reader.seek(tp, starts[tp])
        loop = asyncio.get_running_loop()
        next_report = loop.time() + progress_every
        read = 0
        while pending:
            batches = await reader.getmany(*pending, timeout_ms=200, max_records=10_000)
            for tp, records in batches.items():
                values = state[tp.partition]
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    if record.value is None:
                        values.pop(record.key, None)
                    else:
                        values[record.key] = record.value
                read += len(records)
            for tp in list(pending):
                if await reader.position(tp) >= ends[tp]:
                    pending.discard(tp)
            if loop.time() >= next_report:
                log.info("%s: %d records read, %d partitions still loading", topic, read, len(pending))
                next_report = loop.time() + progress_every
    finally:
        await reader.stop()
    return state
