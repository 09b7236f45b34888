"""Commands whose outcome reached the log though their offset was never committed.

A dispatch command is committed after its outcome (CarrierAccepted, MessageFailed,
DispatchExpired) is written to the message's events. Killed between the two,
the adapter left a command that is done but not committed: whoever reads its partition next
would submit it to its carrier a second time (the duplicate `make chaos` measured after a kill -9
of carrier-adapter). So when a replica is given dispatch partitions, it first reads the recent
events of the same partitions of the message-events topic (both are keyed by message id and have
as many partitions, so a message's command and its events share a partition number) and
collects the commands that have an outcome there: each event the adapter writes names its
command (causation_id). Those commands are skipped like the ones the commit's metadata names.

The look-back is bounded in time (`lookback_seconds`, default 5 minutes): a command finished
longer ago than that before its partition was taken over is submitted again (the behaviour
without this scan: a duplicate, never a loss). What no scan can see is a submit the carrier took
whose outcome was never written (the process died with the answer in hand): that is the in-doubt
window the carrier's `in_doubt` policy rules (docs/smpp.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.message import DecodeError

from smsgw.events.envelope import decode_event
from smsgw.kafka.clients import wait_for_partitions
from smsgw.kafka.connection import KafkaConnection

log = logging.getLogger(__name__)

#: The events after which a command needs nothing more. Not MessageRerouted: the command for
#: the next carrier is published after it (Dispatcher._reroute), so a command whose reroute was
#: written but whose successor may not have been is handled again (it reroutes again, under the
#: same ids: the copies are dropped), never skipped, which could leave its message waiting forever.
FINISHING = frozenset({"carrier_accepted", "message_failed", "dispatch_expired"})


class FinishedOutcomes:
    def __init__(
        self,
        kafka: KafkaConnection | str,
        make_reader: Callable[[], AIOKafkaConsumer],
        events_topic: str,
        *,
        lookback_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kafka = kafka
        self.make_reader = make_reader
        self.events_topic = events_topic
        self.lookback_seconds = lookback_seconds
        self.clock = clock

    async def scan(self, partitions: set[int], dispatch_partitions: int) -> dict[int, set[str]]:
        """Per partition, the ids of the commands whose outcome is in the last `lookback_seconds`
        of its events; empty when the topics are not partitioned alike (nothing to learn)."""
        if not partitions:
            return {}
        events_partitions = await wait_for_partitions(self.kafka, self.events_topic, timeout=30.0)
        if len(events_partitions) != dispatch_partitions:
            log.warning(
                "%s has %d partitions and the dispatch topic %d: commands finished before a crash "
                "cannot be looked up by partition, and may be submitted again",
                self.events_topic,
                len(events_partitions),
                dispatch_partitions,
            )
            return {}
        reader = self.make_reader()
        await reader.start()
        try:
            return await self._read(reader, sorted(partitions))
        finally:
            await reader.stop()

    async def _read(self, reader: AIOKafkaConsumer, partitions: list[int]) -> dict[int, set[str]]:
        tps = [TopicPartition(self.events_topic, p) for p in partitions]
        reader.assign(tps)
        since = int((self.clock() - self.lookback_seconds) * 1000)
        starts = await reader.offsets_for_times(dict.fromkeys(tps, since))
        ends = await reader.end_offsets(tps)
        found: dict[int, set[str]] = {p: set() for p in partitions}
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
                    records += 1
                    try:
                        envelope = decode_event(record.value or b"")
                    except DecodeError:
                        continue  # not an event (the services dead-letter it); names no command
                    if envelope.causation_id and envelope.WhichOneof("payload") in FINISHING:
                        found[tp.partition].add(envelope.causation_id)
                if batch and batch[-1].offset >= ends[tp] - 1:
                    pending.discard(tp)
            for tp in list(pending):
                if await reader.position(tp) >= ends[tp]:
                    pending.discard(tp)
        log.info(
            "read %d events of partitions %s (the last %.0f s): %d commands have their outcome",
            records,
            partitions,
            self.lookback_seconds,
            sum(len(ids) for ids in found.values()),
        )
        return found
