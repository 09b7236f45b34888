"""An account's inbound SMS between two positions of the inbound log, read from the log itself.

WatchInbound resumes from a cursor (and catches up after falling behind) by reading what it
missed here, so intake keeps no inbound message in memory: the log is the journal. A read
assigns the partitions it needs to a consumer of its own (no group), reads each from the
cursor's offset up to the position intake's projection had reached when the read began
(later entries reach the stream through its live queue), and keeps only the account's
InboundMessageReceived events, each once (a retried append can leave a copy in the log).
The cost is one pass over the inbound log since the cursor, paid by the stream that resumes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from smsgw.events.envelope import decode_event

from .inbound_projection import InboundEntry

#: Records taken per poll while reading a range.
PAGE = 1000


class InboundHistory:
    def __init__(self, make_consumer: Callable[[], AIOKafkaConsumer], topic: str) -> None:
        self._make_consumer = make_consumer
        self._topic = topic

    async def read(
        self, account_id: str, after: Mapping[int, int], until: Mapping[int, int]
    ) -> AsyncIterator[InboundEntry]:
        """The account's inbound entries at or after `after` and before `until` (partition ->
        offset; a partition missing from `after` is read from its beginning), in log order per
        partition."""
        wanted = {p: (after.get(p, 0), end) for p, end in until.items() if end > after.get(p, 0)}
        if not wanted:
            return
        consumer = self._make_consumer()
        await consumer.start()
        seen: set[str] = set()
        try:
            for partition, (start, end) in sorted(wanted.items()):
                tp = TopicPartition(self._topic, partition)
                consumer.assign([tp])
                consumer.seek(tp, start)
                while await consumer.position(tp) < end:
                    records = (await consumer.getmany(tp, timeout_ms=1000, max_records=PAGE)).get(tp, [])
                    for record in records:
                        if record.offset >= end:
                            break
                        if record.value is None:
                            continue
                        envelope = decode_event(record.value)
                        if (
                            envelope.account_id == account_id
                            and envelope.WhichOneof("payload") == "inbound_message_received"
                            and envelope.event_id not in seen
                        ):
                            seen.add(envelope.event_id)
                            yield InboundEntry(partition, record.offset, envelope)
        finally:
            await consumer.stop()
