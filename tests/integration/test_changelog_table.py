"""A table change is on the broker when `written()` returns: the pipelines ack the events that
caused it only then, so a kill -9 after the commit cannot lose the state (a receipt correlation
was lost that way: faust's own flush before a commit gives up after 0.1 s without progress)."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from smsgw.platform import broker_env
from smsgw.settings import ServiceSettings
from smsgw.streams import ChangelogTable, make_app, start_app, stop_app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_changes_are_on_the_broker_when_written_returns(broker, tmp_path, monkeypatch):
    for name, value in broker_env(broker.kind).items():
        monkeypatch.setenv(name, value)
    settings = ServiceSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"ct{uuid.uuid4().hex[:8]}.",
                               state_dir=str(tmp_path / "state"), kafka_linger_ms=50)
    app = make_app(settings, "changelog-test", partitions=4)
    source = app.topic(settings.topic_prefix + "source", key_type=bytes, value_type=bytes, partitions=4)
    table = app.Table("states", partitions=4, key_type=bytes, value_type=bytes, default=None, use_partitioner=True)
    assert isinstance(table, ChangelogTable)

    @app.agent(source)
    async def idle(stream):  # a table needs an agent on a co-partitioned topic to be assigned
        async for _ in stream:
            pass

    await start_app(app)
    changelog = table.changelog_topic.get_topic_name()
    probe = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    await probe.start()
    try:
        partitions = [TopicPartition(changelog, p) for p in range(4)]
        before = sum((await probe.end_offsets(partitions)).values())
        for i in range(20):
            table[f"key-{i}".encode()] = f"value-{i}".encode()   # outside any event, as the pipelines do
        del table[b"key-0"]
        await table.written()
        # No waiting: a linger of 50 ms holds records in the producer, so only a written()
        # that really waited for the broker's acks lets these be counted at once.
        after = sum((await probe.end_offsets(partitions)).values())
        assert after - before == 21
        assert table._unwritten() == {}
    finally:
        await probe.stop()
        await stop_app(app)
