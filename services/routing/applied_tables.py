"""The route table applied at run time (`smsgw routes apply`), read from the admin events.

Every routing replica reads the whole admin event log (smsgw.account-events.v1, one small
partition) and routes by the latest RouteTableApplied; until there is one, by its
configuration's table. A replica reads the log to its end before it routes anything, so a
restarted one routes by the same table as the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from smsgw.domain.route_versions import RouteTableVersion, RouteTableVersions
from smsgw.kafka.connection import KafkaConnection
from smsgw.kafka.topic_reader import WholeTopicReader
from smsgw.v1 import accounts_pb2 as ac

log = logging.getLogger(__name__)


class AppliedRouteTables(WholeTopicReader):
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        kafka: KafkaConnection | str,
        use: Callable[[RouteTableVersion], None],
    ) -> None:
        super().__init__(
            consumer,
            topic,
            kafka,
            lambda _tp, record: self.apply(ac.AccountEvent.FromString(record.value)),
            name="route-table-reader",
            on_caught_up=lambda: log.info(
                "route table: %s",
                f"version {self.versions.current_version} (applied)"
                if self.versions.current
                else "the configuration's (none applied)",
            ),
        )
        self.versions = RouteTableVersions()
        self.use = use

    def apply(self, event: ac.AccountEvent) -> None:
        version = self.versions.apply(event)
        if version is None:
            return
        self.use(version)
        log.info(
            "route table version %d applied by %s (%d routes)%s",
            version.version,
            version.applied_by,
            len(version.table.routes),
            f": {version.comment}" if version.comment else "",
        )
