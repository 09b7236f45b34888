"""bench/topic_records.py: the records a message costs each topic, counted from the broker's end offsets.

`make bench` prints these counts per delivered message (docs/benchmarks.md); this checks that the
count is what was written, on each dev broker, commits included where the broker keeps them.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from topic_records import end_offsets, per_message


async def test_the_records_written_to_each_topic_are_counted(broker):
    first, second = f"records-a-{uuid.uuid4().hex[:8]}", f"records-b-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(first, 3, 1), NewTopic(second, 1, 1)])
    finally:
        await admin.close()
    before = await end_offsets(broker.bootstrap)
    assert before.get(first) == 0 and before.get(second) == 0

    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        for i in range(12):  # spread over the three partitions by key
            await producer.send_and_wait(first, b"v", key=str(i).encode())
        for _ in range(5):
            await producer.send_and_wait(second, b"v")
    finally:
        await producer.stop()
    group = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=f"g-{uuid.uuid4().hex[:8]}")
    await group.start()
    try:
        group.assign([TopicPartition(second, 0)])
        await group.commit({TopicPartition(second, 0): OffsetAndMetadata(5, "")})
    finally:
        await group.stop()

    after = await end_offsets(broker.bootstrap)
    assert after[first] - before[first] == 12
    assert after[second] - before[second] == 5
    counted = per_message(before, after, messages=4)
    assert counted[first] == 3.0 and counted[second] == 1.25
    # Other tests may write meanwhile (the broker is shared): at least ours are in the total.
    assert counted["total"] >= 4.25
    if broker.kind == "kafka":  # Apache Kafka keeps commits as records of __consumer_offsets
        assert counted["commits"] > 0


def test_records_per_message_leaves_out_the_topics_that_did_not_grow():
    before = {"events": 10, "reports": 4, "__consumer_offsets": 100}
    after = {"events": 18, "reports": 4, "__consumer_offsets": 103, "new": 2}
    assert per_message(before, after, 2) == {
        "__consumer_offsets": 1.5,
        "events": 4.0,
        "new": 1.0,
        "total": 5.0,
        "commits": 1.5,
    }
    assert per_message(before, after, 0) == {}
