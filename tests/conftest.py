"""Fixtures shared by every layer: brokers and the running platform.

Integration tests run once per broker named in SMSGW_TEST_BROKERS (default
"tansu,kafka"): Tansu, the embedded dev broker, and Apache Kafka (KRaft, one
node), the reference. "testcontainers" may be added where a Docker engine runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from smsgw.brokers import RunningBroker, start_broker
from smsgw_dev.platform import Platform
from tests.integration.postgres import postgres  # noqa: F401  (session fixture: a throwaway PostgreSQL)

BROKERS = [b.strip() for b in os.environ.get("SMSGW_TEST_BROKERS", "tansu,kafka").split(",") if b.strip()]


@pytest.fixture(scope="session", params=BROKERS)
def broker(request, tmp_path_factory) -> Iterator[RunningBroker]:
    if request.param == "testcontainers":
        from smsgw.brokers import docker_available

        if not docker_available():
            pytest.skip("no Docker engine answers here; testcontainers is optional")
    log_path = tmp_path_factory.mktemp(f"broker-{request.param}") / "broker.log"
    running = start_broker(request.param, log_path=log_path)
    yield running
    running.stop()


def unique_prefix(tag: str) -> str:
    return f"t{uuid.uuid4().hex[:8]}-{tag}."


async def start_platform(broker: RunningBroker, run_dir: Path, tag: str, **kwargs) -> Platform:
    # The suites that predate API keys and TLS name their account in x-smsgw-account over
    # plaintext; test_auth.py and test_tls.py run the platform as make run does (keys, TLS).
    kwargs.setdefault("auth", "trusted-header")
    kwargs.setdefault("tls", False)
    platform = Platform.for_broker(broker, run_dir, topic_prefix=unique_prefix(tag), **kwargs)
    try:
        await platform.start()
    except Exception:
        platform.stop()
        raise
    return platform


@pytest.fixture(scope="session")
async def platform(broker, tmp_path_factory) -> AsyncIterator[Platform]:
    """All four services and the SMSC simulator, shared by the read-mostly end-to-end tests."""
    run_dir = tmp_path_factory.mktemp(f"platform-{broker.kind}")
    running = await start_platform(broker, run_dir, "shared", trace_file=str(run_dir / "spans.jsonl"))
    yield running
    running.stop()
