"""A process killed (-9) in its consumer group is removed by the next process started in its place,
so that process gets the partitions at once instead of after the dead one's session timeout.

A child process joins a group on a real broker, records its member id in a state directory
(predecessor.MemberFile) and kills itself with SIGKILL: no LeaveGroup. Then a consumer joins the
same group, with a session timeout of 10 s. With remove_predecessor first, it is assigned every
partition within a few seconds; the control, a second group whose dead member is not removed,
takes about the session timeout (Apache Kafka; Tansu holds every join for half of it).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from smsgw.events.topics import TopicSpec
from smsgw.kafka.clients import ensure_topics, make_group_consumer
from smsgw.kafka.predecessor import MemberFile, remove_predecessor
from smsgw.settings import ServiceSettings
from smsgw.v1 import events_pb2 as ev
from tests.conftest import unique_prefix

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SESSION_MS = 10_000

_CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from smsgw.kafka.clients import make_group_consumer
    from smsgw.kafka.predecessor import MemberFile
    from smsgw.settings import ServiceSettings

    async def main():
        settings = ServiceSettings()
        group, topic, state = sys.argv[1], sys.argv[2], sys.argv[3]
        consumer = make_group_consumer(settings, group, settings.topic_prefix + topic)
        await consumer.start()
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200)
        MemberFile(state, settings.topic_prefix + group).remember(consumer)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


def _settings(broker, prefix: str) -> ServiceSettings:
    return ServiceSettings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=prefix,
        kafka_session_timeout_ms=SESSION_MS,
        kafka_idempotence=broker.supports_idempotence,
    )


def _killed_member(broker, prefix: str, group: str, state_dir) -> None:
    env = dict(
        os.environ,
        SMSGW_KAFKA_BOOTSTRAP=broker.bootstrap,
        SMSGW_TOPIC_PREFIX=prefix,
        SMSGW_KAFKA_SESSION_TIMEOUT_MS=str(SESSION_MS),
        SMSGW_KAFKA_IDEMPOTENCE="true" if broker.supports_idempotence else "false",
    )
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, group, "events", str(state_dir)], env=env, timeout=90, capture_output=True
    )
    assert child.returncode == -9, child.stderr.decode()[-2000:]


async def _seconds_to_assignment(settings: ServiceSettings, group: str) -> float:
    consumer = make_group_consumer(settings, group, settings.topic_prefix + "events")
    started = time.monotonic()
    await consumer.start()
    try:
        while len(consumer.assignment()) < 3:
            assert time.monotonic() - started < 60, "never assigned"
            await consumer.getmany(timeout_ms=100)
        return time.monotonic() - started
    finally:
        await consumer.stop()


async def test_the_next_process_removes_the_member_a_killed_one_left_and_joins_at_once(broker, tmp_path):
    prefix = unique_prefix("predecessor")
    settings = _settings(broker, prefix)
    spec = TopicSpec(name="events", value_type=ev.EventEnvelope, key="k", writers=("test",), partitions=3)
    await ensure_topics(broker.bootstrap, prefix, (spec,))
    group, control = f"g-{uuid.uuid4().hex[:6]}", f"c-{uuid.uuid4().hex[:6]}"
    state, control_state = tmp_path / "state", tmp_path / "control"
    await asyncio.to_thread(_killed_member, broker, prefix, group, state)
    await asyncio.to_thread(_killed_member, broker, prefix, control, control_state)
    member_file = MemberFile(state, prefix + group)
    assert member_file.read(), "the killed member recorded its id"

    started = time.monotonic()
    assert await remove_predecessor(member_file, settings.kafka_connection()) == "removed"
    removed = (time.monotonic() - started) + await _seconds_to_assignment(settings, group)
    waited = await _seconds_to_assignment(settings, control)
    print(f"assigned after {removed:.1f} s with the dead member removed, {waited:.1f} s without")
    assert not member_file.path.exists(), "done with: the next start does not send it again"
    if broker.kind == "tansu":
        # Tansu holds every JoinGroup for half the session timeout, dead member or not: the
        # removal is accepted, and the join takes that long either way.
        assert removed < SESSION_MS / 1000, removed
    else:
        assert removed < SESSION_MS / 1000 / 3, removed
        assert waited > removed + 3, (waited, removed)
    # Nothing recorded (a clean stop removed the file): nothing to do.
    assert await remove_predecessor(member_file, settings.kafka_connection()) == "none recorded"
