"""routing forgets a settled message's record after its retention (a tombstone on the changelog)
and keeps a held one: its table holds a window of messages, not every message ever routed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from smsgw.domain.routes import Route, RouteTable
from smsgw.events.envelope import encode, new_event
from smsgw.events.topics import MESSAGE_EVENTS, ROUTING_RECORDS_CHANGELOG
from smsgw.kafka.clients import ensure_topics
from smsgw.settings import ServiceSettings
from smsgw.v1 import events_pb2 as ev
from smsgw_dev.platform import broker_env
from smsgw_routing.app import RoutingWorker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def queued(message_id: str, send_at: datetime | None = None) -> ev.EventEnvelope:
    payload = ev.MessageQueued(to="+14155550100", content=ev.MessageContent(text="x"), segments=1)
    payload.expires_at.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    if send_at is not None:
        payload.send_at.FromDatetime(send_at)
    return new_event(payload, service="intake", producer="test", message_id=message_id, account_id="acct", sequence=1)


async def test_a_settled_record_is_tombstoned_after_its_retention_and_a_held_one_stays(broker, tmp_path, monkeypatch):
    for name, value in broker_env(broker.kind).items():
        monkeypatch.setenv(name, value)
    settings = ServiceSettings(
        kafka_bootstrap=broker.bootstrap, topic_prefix=f"rt{uuid.uuid4().hex[:8]}.", state_dir=str(tmp_path / "state")
    )
    await ensure_topics(broker.bootstrap, settings.topic_prefix)
    worker = RoutingWorker(settings, RouteTable((Route("", "smsc-sim"),)), record_retention=2.0)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(worker.ready.wait(), 60)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    changelog = AIOKafkaConsumer(
        settings.topic(ROUTING_RECORDS_CHANGELOG),
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await producer.start()
    await changelog.start()
    try:
        for envelope in (queued("sent-now"), queued("held", send_at=datetime.now(UTC) + timedelta(hours=1))):
            await producer.send_and_wait(
                settings.topic(MESSAGE_EVENTS), key=envelope.message_id.encode(), value=encode(envelope)
            )
        written: list[tuple[bytes, bytes | None]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        # Both records written, then the dispatched one's tombstone (2 s later), never the held one's.
        while (b"sent-now", None) not in written and loop.time() < deadline:
            for records in (await changelog.getmany(timeout_ms=500)).values():
                written += [(r.key, r.value) for r in records]
        keys = [key for key, _ in written]
        assert b"sent-now" in keys and b"held" in keys
        assert (b"sent-now", None) in written, f"no tombstone for the dispatched message: {written}"
        assert worker.record("sent-now") is None and worker.record("held") is not None
        await asyncio.sleep(1.0)
        assert worker.record("held") is not None and (b"held", None) not in written
    finally:
        await changelog.stop()
        await producer.stop()
        stop.set()
        await running
