"""One poison record never stops a partition: a record routing cannot handle is tried a few times,
then goes to the dead-letter topic with where it came from and why, and the messages behind it
go on. `smsgw dlq list` shows it; `smsgw dlq replay` puts it back (here it fails again and comes
back, being garbage). Real processes on each broker; the CLI as an operator runs it."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import pytest
from aiokafka import AIOKafkaProducer

from smsgw.domain import status as st
from smsgw.events.topics import MESSAGE_EVENTS
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.conftest import start_platform
from tests.integration.helpers import ACCOUNT, scraped_metrics, send_request, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

POISON = b"\xff\x00 not an EventEnvelope \xff"


def dlq(platform, *args: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "smsgw.cli",
            "dlq",
            "--bootstrap",
            platform.bootstrap,
            "--topic-prefix",
            platform.topic_prefix,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_a_poison_record_goes_to_the_dead_letters_and_the_messages_behind_it_go_on(broker, tmp_path):
    platform = await start_platform(broker, tmp_path, "dlq", android_phone=False)
    try:
        assert "no dead letters" in dlq(platform, "list")
        topic = platform.topic_prefix + MESSAGE_EVENTS.name
        producer = AIOKafkaProducer(bootstrap_servers=platform.bootstrap)
        await producer.start()
        try:
            # One in front of every partition: whatever partition the next message lands in.
            for partition in range(MESSAGE_EVENTS.partitions):
                await producer.send_and_wait(topic, POISON, key=f"poison-{partition}".encode(), partition=partition)
        finally:
            await producer.stop()

        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            sent = await stub.SendMessage(send_request(body="behind the poison"), metadata=ACCOUNT)
            # Five attempts (0.2 + 0.4 + 0.8 + 1.6 s apart) per partition, then it goes on.
            await wait_for_status(stub, sent.message.id, {st.DELIVERED}, timeout=90)

        listed = await _until_listed(platform, MESSAGE_EVENTS.partitions)
        lines = [line for line in listed.splitlines() if line.strip()]
        assert len(lines) == MESSAGE_EVENTS.partitions
        assert all("smsgw-routing" in line and f"{topic}/" in line and "DecodeError" in line for line in lines), lines
        assert {line.split()[4] for line in lines} == {f"key=poison-{p}" for p in range(MESSAGE_EVENTS.partitions)}
        # routing's /metrics counts them (the alertable sign that events were given up on).
        metrics = await scraped_metrics(platform.metrics_port_of("routing"))
        labels = frozenset({("group", "smsgw-routing"), ("topic", topic)})
        assert metrics[("smsgw_dead_lettered_total", labels)] == MESSAGE_EVENTS.partitions

        first = lines[0].split()[0]
        assert "replayed 1 dead letter(s)" in dlq(platform, "replay", "--offset", first)
        # Still garbage: handled again, and dead-lettered again.
        await _until_listed(platform, MESSAGE_EVENTS.partitions + 1)
    finally:
        platform.stop()


async def _until_listed(platform, count: int, timeout: float = 60.0) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        listed = dlq(platform, "list")
        if len([line for line in listed.splitlines() if line.strip() and "no dead letters" not in line]) >= count:
            return listed
        if loop.time() > deadline:
            raise AssertionError(f"fewer than {count} dead letters:\n{listed}")
        await asyncio.sleep(1.0)
