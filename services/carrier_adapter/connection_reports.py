"""This replica's connection to each carrier, on smsgw.carrier-connections.v1 for routing to read.

A carrier whose SMPP binds are down (or with no phone attached) cannot take a submit, and routing
should not wait for submits to fail before it skips it: the connection is a health signal that
needs no traffic. Each carrier with a connection of its own (`CarrierClient.connected` not None)
gets a record keyed `<carrier>/<replica>`, written within `poll_seconds` of a change and every
`refresh_seconds` while it lasts (so that a replica killed without a word goes stale, after three
refreshes: smsgw.domain.carrier_connections), and a tombstone when the replica stops.

A record that cannot be written is tried again at the next poll: the newest state is what counts,
so only the last one per carrier is kept due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer

from smsgw.domain.carrier_connections import report_key
from smsgw.v1 import carrier_pb2 as cp

from .carrier import CarrierClient
from .carrier_metrics import CarrierMetrics

log = logging.getLogger(__name__)


def _sessions(client: CarrierClient) -> dict[str, bool]:
    metrics: Callable[[], CarrierMetrics] | None = getattr(client, "metrics", None)
    return dict(metrics().sessions) if metrics is not None else {}


class ConnectionReporter:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        clients: Sequence[CarrierClient],
        *,
        replica_id: str,
        kinds: dict[str, str],
        refresh_seconds: float = 5.0,
        poll_seconds: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._producer = producer
        self._topic = topic
        # Only the carriers with a connection of their own; an HTTP provider has none to report.
        self._clients = [c for c in clients if c.connected is not None]
        self.replica_id = replica_id
        self._kinds = kinds
        self.refresh_seconds = refresh_seconds
        self._poll_seconds = poll_seconds
        self._clock = clock
        self._written: dict[str, tuple[bool, float]] = {}  # carrier -> (connected, when written)
        self._changed_at: dict[str, tuple[bool, float]] = {}  # carrier -> (connected, since when)
        self._task: asyncio.Task | None = None

    @property
    def carriers(self) -> list[str]:
        return [c.name for c in self._clients]

    async def start(self) -> None:
        if self._clients:
            await self.report_due()  # before SERVING: routing knows the state from the start
            self._task = asyncio.create_task(self._run(), name="connection-reporter")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            await self.report_due()

    async def report_due(self) -> None:
        """Writes the record of each carrier whose state changed or whose refresh is due."""
        now = self._clock()
        for client in self._clients:
            connected = bool(client.connected)
            since = self._changed_at.get(client.name)
            if since is None or since[0] != connected:
                since = self._changed_at[client.name] = (connected, now)
            written = self._written.get(client.name)
            if written is not None and written[0] == connected and now - written[1] < self.refresh_seconds:
                continue
            report = self._report(client, connected, now, since[1])
            try:
                await self._producer.send_and_wait(
                    self._topic, key=report_key(client.name, self.replica_id).encode(), value=report.SerializeToString()
                )
            except Exception as exc:  # noqa: BLE001 - tried again at the next poll
                log.warning("connection report of %s not written (%r); retrying", client.name, exc)
                return
            if written is None or written[0] != connected:
                log.info("carrier %s: %s", client.name, "connected" if connected else "NOT connected")
            self._written[client.name] = (connected, now)

    def _report(self, client: CarrierClient, connected: bool, now: float, since: float) -> cp.CarrierConnectionReported:
        report = cp.CarrierConnectionReported(
            carrier=client.name,
            replica_id=self.replica_id,
            kind=self._kinds.get(client.name, ""),
            connected=connected,
            sessions=_sessions(client),
            refresh_seconds=self.refresh_seconds,
        )
        report.reported_at.FromNanoseconds(int(now * 1e9))
        report.changed_at.FromNanoseconds(int(since * 1e9))
        return report

    async def stop(self, timeout: float = 5.0) -> None:
        """Tombstones for this replica's reports: it holds no connection once it is gone."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            async with asyncio.timeout(timeout):
                for carrier in self._written:
                    await self._producer.send_and_wait(
                        self._topic, key=report_key(carrier, self.replica_id).encode(), value=None
                    )
        except Exception as exc:  # noqa: BLE001 - the reports go stale instead
            log.warning("connection tombstones not all written at stop (%r); the reports go stale instead", exc)
