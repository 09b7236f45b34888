"""Presence on Kafka: each carrier-adapter replica publishes the phones it holds to the
compacted topic smsgw.device-presence.v1 and reads the whole topic (every partition, no
group, from the beginning) into its DeviceDirectory.

Thin: what a record says and how records fold is device_directory.py. Works the same on
Apache Kafka and Tansu (the producer comes from smsgw.kafka.clients, idempotent or not
per settings; Tansu does not compact, which only means a longer log to read at start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from smsgw.v1 import device_relay_pb2 as dr

from .device_directory import (
    STALE_AFTER_INTERVALS,
    DeviceDirectory,
    Presence,
    Tombstone,
    from_proto,
    presence_key,
    record_after_change,
    to_proto,
)

if TYPE_CHECKING:
    from .device_gateway import AndroidCarrierClient, DeviceState

log = logging.getLogger(__name__)

SESSION_HEADER = "smsgw-session"   # on a tombstone: the session it ends


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


class PresenceReader:
    """Reads every record of the presence topic into the directory, and tells listeners what changed."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str, directory: DeviceDirectory, bootstrap: str):
        self._consumer = consumer
        self._topic = topic
        self._bootstrap = bootstrap
        self.directory = directory
        self.listeners: list[Callable[[Presence], None]] = []
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self._consumer.start()
        partitions = await self._partitions()
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        ends = await self._consumer.end_offsets(partitions)
        self._task = asyncio.create_task(self._run(ends), name="presence-reader")

    async def _partitions(self, timeout: float = 30.0) -> list[TopicPartition]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        await admin.start()
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                (described,) = await admin.describe_topics([self._topic])
                numbers = sorted(p["partition"] for p in described.get("partitions") or ())
                if numbers and described.get("error_code", 0) == 0:
                    return [TopicPartition(self._topic, n) for n in numbers]
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"topic {self._topic} not found after {timeout:g}s; create it "
                                       f"(k8s/kafka-topics.yaml, or smsgw.kafka.clients.ensure_topics)")
                await asyncio.sleep(0.2)
        finally:
            await admin.close()

    async def _run(self, ends: dict[TopicPartition, int]) -> None:
        behind = {tp: end for tp, end in ends.items() if end > 0}
        if not behind:
            self.caught_up.set()
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=1000)
            for tp, records in batches.items():
                for record in records:
                    try:
                        self.apply(decode(record.key, record.value, record.headers))
                    except Exception:  # a record this version cannot read must not stop the directory
                        log.exception("skipping unreadable presence record %s@%s", tp, record.offset)
            if not self.caught_up.is_set():
                for tp in list(behind):
                    if await self._consumer.position(tp) >= behind[tp]:
                        del behind[tp]
                if not behind:
                    log.info("device presence read: %d phone(s) known", len(self.directory))
                    self.caught_up.set()

    def apply(self, record: Presence | Tombstone) -> None:
        if not self.directory.apply(record) or isinstance(record, Tombstone):
            return
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:
                log.exception("a presence listener failed on %s", record.key)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


class PresencePublisher:
    """Writes what this replica's phones look like: at once when one changes (connects, disconnects,
    accepts or resolves a message), and every refresh interval while connected, so that a replica that
    dies without a tombstone is known gone after STALE_AFTER_INTERVALS intervals."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, directory: DeviceDirectory, *, replica_id: str,
                 address: str, refresh_interval: float = 15.0, clock: Callable[[], float] = time.time):
        self._producer = producer
        self._topic = topic
        self._directory = directory
        self.replica_id = replica_id
        self.address = address
        self.refresh_interval = refresh_interval
        self._clock = clock
        self._clients: list[AndroidCarrierClient] = []
        self._due: dict[str, Presence | Tombstone] = {}     # key -> the latest record not yet written
        self._published: dict[str, Presence] = {}           # key -> what this replica last wrote
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def register(self, client: AndroidCarrierClient) -> None:
        self._clients.append(client)

    def changed(self, client: AndroidCarrierClient, device: DeviceState) -> None:
        """A snapshot now: the record must say what the phone held at this moment, even if it is written later."""
        key = presence_key(client.account_id, device.device_id)
        now = self._clock()
        connected = None
        if device.connected:
            connected = Presence(
                account_id=client.account_id, device_id=device.device_id, carrier=client.name,
                replica_id=self.replica_id, replica_address=self.address, session_id=device.connection.session_id,
                connected=True, outstanding=device.outstanding, pending=frozenset(device.accepted_ids),
                connected_at=device.connection.connected_at, seen_at=now,
                expires_at=now + STALE_AFTER_INTERVALS * self.refresh_interval)
        last = self._published.get(key)
        if isinstance(queued := self._due.get(key), Presence):
            last = queued
        record = record_after_change(
            connected_presence=connected, account_id=client.account_id, device_id=device.device_id,
            last_published=last, pending=frozenset(device.accepted_ids), outstanding=device.outstanding,
            current=self._directory.get(client.account_id, device.device_id), now=now)
        if record is not None:
            self._due[key] = record
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="presence-publisher")

    async def _run(self) -> None:
        next_refresh = time.monotonic() + self.refresh_interval
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_refresh - time.monotonic()))
            except asyncio.TimeoutError:
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
            except Exception as exc:
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
        except asyncio.TimeoutError:
            log.warning("presence records left unwritten at stop: %s; they go stale instead", sorted(self._due))
