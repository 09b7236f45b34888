"""Feeds the projection from the message-events topic, from the beginning.

No consumer group: every intake replica reads every partition, so any replica
can answer for any message. `caught_up` is set once the reader has reached the
end offsets it saw at start, which is when the replica reports SERVING.
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiokafka import AIOKafkaConsumer

from smsgw.events.envelope import decode_event
from smsgw.kafka.connection import KafkaConnection
from smsgw.kafka.topic_reader import WholeTopicReader
from smsgw.v1 import events_pb2 as ev

log = logging.getLogger(__name__)


class LogSink(Protocol):
    def apply_from_log(self, envelope: ev.EventEnvelope, partition: int, offset: int) -> None: ...

    def __len__(self) -> int: ...


class EventLogReader(WholeTopicReader):
    def __init__(self, consumer: AIOKafkaConsumer, topic: str, projection: LogSink, kafka: KafkaConnection | str):
        super().__init__(
            consumer,
            topic,
            kafka,
            lambda tp, record: projection.apply_from_log(decode_event(record.value), tp.partition, record.offset),
            name="event-log-reader",
            max_records=500,
            on_caught_up=lambda: log.info("read model of %s caught up: %d entries", topic, len(projection)),
        )
