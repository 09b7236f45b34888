"""The directory of accounts and keys, fed from smsgw.account-events.v1, and the admin API's appends.

Every intake replica reads the whole topic (one partition, no group) into its directory, so
any replica can check any key. An admin change is appended (acks=all) and then folded here
at once, so the key just made works on this replica before the record comes back from the
log (the fold drops the copy by event id); other replicas see it once they read it.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from smsgw.domain import credentials as cr
from smsgw.domain import errors as de
from smsgw.domain.route_versions import RouteTableVersions
from smsgw.kafka.broken_producer import ProducerHealth
from smsgw.kafka.connection import KafkaConnection
from smsgw.kafka.topic_reader import WholeTopicReader
from smsgw.v1 import accounts_pb2 as ac

log = logging.getLogger(__name__)


class AccountLog:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        topic: str,
        kafka: KafkaConnection | str,
        directory: cr.Directory,
        route_tables: RouteTableVersions | None = None,
        producer_health: ProducerHealth | None = None,
    ):
        self.directory = directory
        #: Told of every append's error (smsgw.kafka.broken_producer): the producer is intake's.
        self.producer_health = producer_health or ProducerHealth()
        #: The route table versions applied through the admin API (route_versions.py).
        self.route_tables = route_tables or RouteTableVersions()
        self._producer = producer
        self._topic = topic
        self.reader = WholeTopicReader(
            consumer,
            topic,
            kafka,
            lambda tp, record: self._fold(ac.AccountEvent.FromString(record.value)),
            name="account-log-reader",
            on_caught_up=lambda: log.info(
                "directory caught up: %d accounts, %d keys", len(directory.accounts), len(directory.keys)
            ),
        )

    async def append(self, events: list[ac.AccountEvent]) -> None:
        """Appends the events of one admin action in order, then folds them in."""
        try:
            for event in events:
                await self._producer.send_and_wait(
                    self._topic, key=event.account_id.encode(), value=event.SerializeToString()
                )
        except KafkaError as exc:
            self.producer_health.observe(exc)
            raise de.GatewayUnavailable(
                "gateway error: the event log is unreachable; the change was NOT made, retry later",
                metadata={"cause": type(exc).__name__},
            ) from exc
        for event in events:
            self._fold(event)

    async def append_in_log_order(self, event: ac.AccountEvent, timeout: float = 10.0) -> None:
        """Appends one event and returns once this replica has read it back from the log: for
        changes whose outcome depends on what came before them in the log (two route tables
        applied at once, on any replicas: the first in the log is the next version, and every
        reader agrees on which), so it is folded in log order, never ahead of it."""
        try:
            sent = await self._producer.send_and_wait(
                self._topic, key=event.account_id.encode(), value=event.SerializeToString()
            )
        except KafkaError as exc:
            self.producer_health.observe(exc)
            raise de.GatewayUnavailable(
                "gateway error: the event log is unreachable; the change was NOT made, retry later",
                metadata={"cause": type(exc).__name__},
            ) from exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (await self.reader.positions()).get(sent.partition, 0) <= sent.offset:
            if loop.time() > deadline:
                raise de.GatewayUnavailable(
                    "the change was appended but not read back in time; see whether it took (smsgw routes show)"
                )
            await asyncio.sleep(0.02)

    def _fold(self, event: ac.AccountEvent) -> None:
        self.directory.apply(event)
        if self.route_tables.apply(event) is not None:
            log.info("route table version %d applied by %s", self.route_tables.current_version, event.actor)
