"""Device tokens issued through the admin API: read from the account log by every replica, so a
phone given a token connects to any of them, and a revoked one is let out of all of them."""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer

from smsgw.domain.device_tokens import DeviceTokens
from smsgw.kafka.connection import KafkaConnection
from smsgw.kafka.topic_reader import WholeTopicReader
from smsgw.v1 import accounts_pb2 as ac

from .registry import DeviceRegistry

log = logging.getLogger(__name__)


class IssuedTokenReader(WholeTopicReader):
    def __init__(self, consumer: AIOKafkaConsumer, topic: str, kafka: KafkaConnection | str, registry: DeviceRegistry):
        super().__init__(
            consumer,
            topic,
            kafka,
            lambda _tp, record: self.apply(ac.AccountEvent.FromString(record.value)),
            name="device-token-reader",
            on_caught_up=lambda: log.info(
                "device tokens read: %d live", sum(1 for t in self.tokens.records.values() if t.live)
            ),
        )
        self.tokens = DeviceTokens()
        self.registry = registry

    def apply(self, event: ac.AccountEvent) -> None:
        token = self.tokens.apply(event)
        if token is None:
            return
        if not token.live:
            self.registry.withdraw(token)
            log.info("device token %s (device %s) revoked", token.token_id, token.device_id)
            return
        problem = self.registry.admit(token)
        if problem:
            log.warning("%s", problem)
        else:
            log.info("device token %s admits device %s of carrier %s", token.token_id, token.device_id, token.carrier)
