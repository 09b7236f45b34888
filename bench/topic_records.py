"""How many records a delivered message costs the broker, topic by topic.

The throughput issue asks for the count of records one message produces across every topic and
changelog, written down, so that what is derivable from the event log can be cut. A topic's end
offsets only grow (a compacted topic's too: compaction removes records, never offsets), so the
records written during a step are the sum of its partitions' end offsets after the step minus
before. The broker's own `__consumer_offsets` is counted too: every commit is records there.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def end_offsets(bootstrap: str) -> dict[str, int]:
    """Topic -> the sum of its partitions' end offsets (records ever written to it)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-topic-records")
    await admin.start()
    try:
        described = await admin.describe_topics()  # every topic, __consumer_offsets included
    finally:
        await admin.close()
    partitions = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="bench-topic-records")
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    totals: dict[str, int] = {}
    for tp, end in ends.items():
        totals[tp.topic] = totals.get(tp.topic, 0) + end
    return totals


def per_message(before: dict[str, int], after: dict[str, int], messages: int) -> dict[str, float]:
    """Records written per message between two `end_offsets`, by topic (topics with none left out),
    and their sum under "total" (without `__consumer_offsets`, which the broker writes itself for
    commits) and "commits" (that topic alone)."""
    if messages <= 0:
        return {}
    written = {topic: end - before.get(topic, 0) for topic, end in after.items()}
    out = {topic: round(n / messages, 2) for topic, n in sorted(written.items()) if n > 0}
    out["total"] = round(sum(n for t, n in written.items() if t != "__consumer_offsets") / messages, 2)
    out["commits"] = round(written.get("__consumer_offsets", 0) / messages, 2)
    return out
