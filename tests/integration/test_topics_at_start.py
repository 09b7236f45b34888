"""A service never makes a topic with the broker's defaults unless told to: by default it waits for
the topics (made in production by k8s/base/kafka-topics.yaml with their replication and config), saying
which are missing, and serves once they are there; SMSGW_CREATE_TOPICS=true makes them (a
development cluster). Real processes on each broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from smsgw.events.topics import ALL_TOPICS
from smsgw.kafka.clients import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def start_routing(broker, tmp_path: Path, prefix: str, **env: str) -> tuple[subprocess.Popen, Path, Path]:
    ready, log = tmp_path / "ready", tmp_path / "routing.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "smsgw_routing"],
        env=dict(
            os.environ,
            SMSGW_ENVIRONMENT="development",
            SMSGW_KAFKA_BOOTSTRAP=broker.bootstrap,
            SMSGW_KAFKA_IDEMPOTENCE="true" if broker.supports_idempotence else "false",
            SMSGW_TOPIC_PREFIX=prefix,
            SMSGW_GRPC_PORT="0",
            SMSGW_STATE_DIR=str(tmp_path / "state"),
            SMSGW_READY_FILE=str(ready),
            SMSGW_KAFKA_SESSION_TIMEOUT_MS="6000",
            **env,
        ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return process, ready, log


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"routing exited before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout}s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


async def topics_with(broker, prefix: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        return {name for name in await admin.list_topics() if name.startswith(prefix)}
    finally:
        await admin.close()


async def test_a_service_waits_for_its_topics_and_creates_none(broker, tmp_path):
    prefix = f"tw{uuid.uuid4().hex[:8]}."
    process, ready, log = start_routing(broker, tmp_path, prefix, SMSGW_LOG_FORMAT="json")
    try:
        wait_for(lambda: "waiting for topics" in log.read_text(), 60, "warning about missing topics", process, log)
        # ...as a JSON line, as a log pipeline reads them (SMSGW_LOG_FORMAT=json).
        (waiting,) = [json.loads(line) for line in log.read_text().splitlines() if "waiting for topics" in line][:1]
        assert (waiting["level"], waiting["service"]) == ("WARNING", "routing")
        assert prefix + ALL_TOPICS[0].name in waiting["message"]
        assert not ready.exists()
        assert await topics_with(broker, prefix) == set()  # nothing made with the broker's defaults
        await ensure_topics(broker.bootstrap, prefix)  # what the KafkaTopic resources do in production
        wait_for(ready.exists, 90, "SERVING once the topics exist", process, log)
    finally:
        process.terminate()
        process.wait(30)


async def test_told_to_it_makes_the_topics_with_their_partitions(broker, tmp_path):
    prefix = f"tc{uuid.uuid4().hex[:8]}."
    process, ready, log = start_routing(broker, tmp_path, prefix, SMSGW_CREATE_TOPICS="true")
    try:
        wait_for(ready.exists, 90, "SERVING", process, log)
        assert await topics_with(broker, prefix) == {prefix + spec.name for spec in ALL_TOPICS}
    finally:
        process.terminate()
        process.wait(30)
