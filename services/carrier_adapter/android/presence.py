"""Presence on Kafka: each carrier-adapter replica publishes the phones it holds to the
compacted topic smsgw.device-presence.v1 and reads the whole topic (every partition, no
group, from the beginning) into its DeviceDirectory.

Thin: what a record says and how records fold is directory.py. Works the same on
Apache Kafka and Tansu (the producer comes from smsgw.kafka.clients, idempotent or not
per settings; Tansu does not compact, which only means a longer log to read at start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from smsgw.kafka.connection import KafkaConnection
from smsgw.kafka.topic_reader import WholeTopicReader
from smsgw.v1 import device_relay_pb2 as dr

from .client import AndroidCarrierClient
from .directory import (
    STALE_AFTER_INTERVALS,
    DeviceDirectory,
    Presence,
    Tombstone,
    from_proto,
    presence_key,
    record_after_change,
    to_proto,
)
from .registry import RegisteredCarrier
from .state import DeviceState

log = logging.getLogger(__name__)

SESSION_HEADER = "smsgw-session"  # on a tombstone: the session it ends


def encode(record: Presence | Tombstone) -> tuple[bytes, bytes | None, list[tuple[str, bytes]]]:
    """Key, value and headers of a record (a tombstone has no value)."""
    key = record.key.encode()
    if isinstance(record, Tombstone):
        return key, None, [(SESSION_HEADER, record.session_id.encode())]
    return key, to_proto(record).SerializeToString(), []


def decode(key: bytes | None, value: bytes | None, headers) -> Presence | Tombstone:
    if value is None:
        account_id, _, device_id = (key or b"").decode().partition("/")
        session = next((v.decode() for k, v in headers or () if k == SESSION_HEADER), "")
        return Tombstone(account_id, device_id, session)
    return from_proto(dr.DevicePresence.FromString(value))


class PresenceReader(WholeTopicReader):
    """Reads every record of the presence topic into the directory, and tells listeners what changed."""

    def __init__(
        self, consumer: AIOKafkaConsumer, topic: str, directory: DeviceDirectory, kafka: KafkaConnection | str
    ):
        super().__init__(
            consumer,
            topic,
            kafka,
            lambda _tp, record: self.apply(decode(record.key, record.value, record.headers)),
            name="presence-reader",
            on_caught_up=lambda: log.info("device presence read: %d phone(s) known", len(self.directory)),
        )
        self.directory = directory
        self.listeners: list[Callable[[Presence], None]] = []

    def apply(self, record: Presence | Tombstone) -> None:
        if not self.directory.apply(record) or isinstance(record, Tombstone):
            return
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:
                log.exception("a presence listener failed on %s", record.key)


class PresencePublisher:
    """Writes what this replica's phones look like: at once when one changes (connects, disconnects,
    accepts or resolves a message), and every refresh interval while connected, so that a replica that
    dies without a tombstone is known gone after STALE_AFTER_INTERVALS intervals."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        directory: DeviceDirectory,
        *,
        replica_id: str,
        address: str,
        refresh_interval: float = 15.0,
        clock: Callable[[], float] = time.time,
    ):
        self._producer = producer
        self._topic = topic
        self._directory = directory
        self.replica_id = replica_id
        self.address = address
        self.refresh_interval = refresh_interval
        self._clock = clock
        self._clients: list[AndroidCarrierClient] = []
        self._due: dict[str, Presence | Tombstone] = {}  # key -> the latest record not yet written
        self._published: dict[str, Presence] = {}  # key -> what this replica last wrote
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def register(self, client: AndroidCarrierClient) -> None:
        self._clients.append(client)

    def changed(self, client: RegisteredCarrier, device: DeviceState) -> None:
        """A snapshot now: the record must say what the phone held at this moment, even if it is written later."""
        key = presence_key(client.account_id, device.device_id)
        now = self._clock()
        connected = None
        connection = device.connection
        if device.connected and connection is not None:
            connected = Presence(
                account_id=client.account_id,
                device_id=device.device_id,
                carrier=client.name,
                replica_id=self.replica_id,
                replica_address=self.address,
                session_id=connection.session_id,
                connected=True,
                outstanding=device.outstanding,
                pending=frozenset(device.accepted_ids),
                connected_at=connection.connected_at,
                seen_at=now,
                expires_at=now + STALE_AFTER_INTERVALS * self.refresh_interval,
            )
        last = self._published.get(key)
        if isinstance(queued := self._due.get(key), Presence):
            last = queued
        record = record_after_change(
            connected_presence=connected,
            account_id=client.account_id,
            device_id=device.device_id,
            last_published=last,
            pending=frozenset(device.accepted_ids),
            outstanding=device.outstanding,
            current=self._directory.get(client.account_id, device.device_id),
            now=now,
        )
        if record is not None:
            self._due[key] = record
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="presence-publisher")

    async def _run(self) -> None:
        next_refresh = time.monotonic() + self.refresh_interval
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the wake-up instead of
            # raising when a cancellation comes with it (stop() right after a phone let go), and
            # stop() then waited for ever for a task that went on running.
            try:
                async with asyncio.timeout(max(0.0, next_refresh - time.monotonic())):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if time.monotonic() >= next_refresh:
                next_refresh = time.monotonic() + self.refresh_interval
                self._refresh()
            await self.flush()

    def _refresh(self) -> None:
        for client in self._clients:
            for device in client.devices.values():
                if device.connected:
                    self.changed(client, device)

    async def flush(self) -> None:
        """Writes every due record; one that fails stays due and is tried again on the next wake-up."""
        while self._due:
            key, record = next(iter(self._due.items()))
            value_key, value, headers = encode(record)
            try:
                await self._producer.send_and_wait(self._topic, key=value_key, value=value, headers=headers)
            except Exception as exc:  # noqa: BLE001 - retried until written
                log.warning("presence of %s not written (%r); retrying", key, exc)
                await asyncio.sleep(min(1.0, self.refresh_interval))
                self._wake.set()
                return
            if self._due.get(key) is record:
                del self._due[key]
            if isinstance(record, Presence):
                self._published[key] = record
            else:
                self._published.pop(key, None)

    async def stop(self, timeout: float = 5.0) -> None:
        """Writes what is due (the tombstones of the phones this replica just let go), then stops."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.warning("presence records left unwritten at stop: %s; they go stale instead", sorted(self._due))
