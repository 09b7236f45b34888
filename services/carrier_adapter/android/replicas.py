"""The pieces that let carrier-adapter replicas share Android phones, built and run together:
the directory, its reader and publisher on smsgw.device-presence.v1, and the relay caller.
__main__ creates one when Android carriers are configured; every AndroidCarrierClient gets its
`links`, and the gRPC server serves DeviceRelayService for the others.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from smsgw.kafka.connection import KafkaConnection

from .client import AndroidCarrierClient
from .directory import DeviceDirectory
from .links import ReplicaLinks
from .presence import PresencePublisher, PresenceReader
from .relay import RelayCaller, RelayTls

log = logging.getLogger(__name__)


class AndroidReplicas:
    def __init__(
        self,
        *,
        producer: AIOKafkaProducer,
        reader_consumer: AIOKafkaConsumer,
        topic: str,
        kafka: KafkaConnection | str,
        instance_id: str,
        address: str,
        relay_secret: str = "",
        refresh_interval: float = 15.0,
        relay_tls: RelayTls | None = None,
    ):
        # Unique per process: a restarted pod keeps its instance id, but not the phones of its previous run.
        self.replica_id = f"{instance_id}#{uuid.uuid4().hex[:8]}"
        self.address = address
        self.directory = DeviceDirectory()
        self.reader = PresenceReader(reader_consumer, topic, self.directory, kafka)
        self.publisher = PresencePublisher(
            producer,
            topic,
            self.directory,
            replica_id=self.replica_id,
            address=address,
            refresh_interval=refresh_interval,
        )
        self.relay = RelayCaller(self.replica_id, relay_secret, tls=relay_tls)
        self.links = ReplicaLinks(
            replica_id=self.replica_id, directory=self.directory, relay=self.relay, presence=self.publisher
        )

    async def start(self, clients: list[AndroidCarrierClient], catch_up_timeout: float = 15.0) -> None:
        """Reads the presence topic up to its end (bounded: a slow read delays relays, not the service),
        then publishes this replica's phones. Call it once the producer has started."""
        for client in clients:
            self.reader.listeners.append(client.on_presence)
            self.publisher.register(client)
        await self.reader.start()
        try:
            async with asyncio.timeout(catch_up_timeout):
                await self.reader.caught_up.wait()
        except TimeoutError:
            log.warning(
                "device presence not read to its end within %gs; going on with %d phone(s) known",
                catch_up_timeout,
                len(self.directory),
            )
        await self.publisher.start()
        log.info("android replicas: this replica is %s at %s", self.replica_id, self.address)

    async def stop(self) -> None:
        """After the Android clients closed: their last records (tombstones) are written, then all stops."""
        await self.publisher.stop()
        await self.reader.stop()
        await self.relay.close()
