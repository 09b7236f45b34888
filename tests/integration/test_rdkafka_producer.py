"""The services' producer (smsgw.kafka.rdkafka_producer: librdkafka behind aiokafka's producer API)
on a real broker: acknowledged records carry their metadata, land where aiokafka's producers put
the same keys, keep their keys and headers; flush and stop wait for the acks; a producer that cannot
reach the cluster fails with aiokafka's errors, as the services expect."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, ProducerClosed

from smsgw.brokers import free_port
from smsgw.events.topics import TopicSpec
from smsgw.kafka.clients import ensure_topics, make_producer
from smsgw.kafka.rdkafka_producer import RdKafkaProducer
from smsgw.settings import ServiceSettings
from smsgw.v1 import events_pb2 as ev
from smsgw_dev.platform import broker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
PARTITIONS = 6


@pytest.fixture
async def settings(broker, monkeypatch):
    for name, value in broker_env(broker.kind).items():
        monkeypatch.setenv(name, value)
    prefix = f"rdk{uuid.uuid4().hex[:8]}."
    spec = TopicSpec(
        name="t", value_type=ev.EventEnvelope, key="k", writers=("test",), description="t", partitions=PARTITIONS
    )
    await ensure_topics(broker.bootstrap, prefix, (spec,))
    return ServiceSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix)


async def _read(settings: ServiceSettings, count: int) -> list:
    consumer = AIOKafkaConsumer(
        settings.topic_prefix + "t", bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list = []
    deadline = time.monotonic() + 30
    try:
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def test_records_are_acknowledged_with_their_place_and_land_where_aiokafka_puts_their_keys(settings):
    topic = settings.topic_prefix + "t"
    producer = make_producer(settings)
    await producer.start()
    try:
        acks = [
            await producer.send(topic, value=b"v%d" % n, key=b"key-%d" % n, headers=[("trace", b"t%d" % n)])
            for n in range(300)
        ]
        written = await asyncio.gather(*acks)
        last = await producer.send_and_wait(topic, value=b"last", key=b"key-last")
    finally:
        await producer.stop()
    assert len({(m.partition, m.offset) for m in written}) == 300, "every record has its own place"
    assert all(m.topic == topic and m.topic_partition.partition == m.partition for m in written)
    # aiokafka's producer (as the tools and tests write) puts the same keys on the same partitions.
    reference = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await reference.start()
    try:
        theirs = [await reference.send_and_wait(topic, value=b"ref", key=b"key-%d" % n) for n in range(0, 300, 10)]
    finally:
        await reference.stop()
    assert [m.partition for m in theirs] == [written[n].partition for n in range(0, 300, 10)]
    records = await _read(settings, 301 + len(theirs))
    by_value = {r.value: r for r in records}
    assert by_value[b"v7"].key == b"key-7" and list(by_value[b"v7"].headers) == [("trace", b"t7")]
    assert (by_value[b"v7"].partition, by_value[b"v7"].offset) == (written[7].partition, written[7].offset)
    assert by_value[b"last"].offset == last.offset


async def test_flush_and_stop_wait_for_every_ack_and_a_stopped_producer_refuses(settings):
    topic = settings.topic_prefix + "t"
    producer = make_producer(settings)
    await producer.start()
    acks = [await producer.send(topic, value=b"f%d" % n, key=b"k%d" % n) for n in range(200)]
    await producer.flush()
    assert all(ack.done() and ack.exception() is None for ack in acks)
    more = [await producer.send(topic, value=b"s%d" % n, key=b"k%d" % n) for n in range(200)]
    await producer.stop()
    assert all(ack.done() and ack.exception() is None for ack in more), "stop waits for the acks"
    with pytest.raises(ProducerClosed):
        await producer.send(topic, value=b"late")
    assert len(await _read(settings, 400)) == 400


async def test_a_cluster_out_of_reach_fails_with_aiokafkas_errors():
    nobody = f"127.0.0.1:{free_port()}"
    producer = RdKafkaProducer({"bootstrap.servers": nobody, "message.timeout.ms": 1000}, start_timeout=1.0)
    with pytest.raises(KafkaError) as refused:
        await producer.start()
    assert isinstance(refused.value, (KafkaTimeoutError, KafkaConnectionError)), refused.value
