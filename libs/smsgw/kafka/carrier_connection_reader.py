"""Reads smsgw.carrier-connections.v1 whole (no group) into a CarrierConnections table.

Every routing replica reads it to skip a carrier no carrier-adapter replica is connected to, and
intake reads it for `smsgw routes explain --live`. What a record says and how records fold is
smsgw.domain.carrier_connections; the writer is carrier-adapter's connection_reports.py.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer

from smsgw.domain.carrier_connections import CarrierConnections, from_proto
from smsgw.events.topics import CARRIER_CONNECTIONS
from smsgw.kafka.clients import make_reader
from smsgw.kafka.connection import KafkaConnection
from smsgw.kafka.topic_reader import WholeTopicReader
from smsgw.settings import ServiceSettings
from smsgw.v1 import carrier_pb2 as cp

log = logging.getLogger(__name__)


class CarrierConnectionReader(WholeTopicReader):
    def __init__(
        self, consumer: AIOKafkaConsumer, topic: str, kafka: KafkaConnection | str, connections: CarrierConnections
    ) -> None:
        super().__init__(
            consumer,
            topic,
            kafka,
            lambda _tp, record: self.apply(record.key, record.value),
            name="carrier-connection-reader",
            on_caught_up=lambda: log.info(
                "carrier connections read: %s reported", ", ".join(self.connections.carriers()) or "none"
            ),
        )
        self.connections = connections

    @classmethod
    def of(cls, settings: ServiceSettings, connections: CarrierConnections) -> CarrierConnectionReader:
        """The reader a service runs: the topic under the service's prefix, on its brokers."""
        return cls(make_reader(settings), settings.topic(CARRIER_CONNECTIONS), settings.kafka_connection(), connections)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:  # a tombstone: the replica stopped
            carrier, _, replica_id = (key or b"").decode().partition("/")
            self.connections.forget(carrier, replica_id)
            return
        self.connections.apply(from_proto(cp.CarrierConnectionReported.FromString(value)))
