"""faust-streaming apps for the services that keep keyed state (routing, receipt).

Built by a factory (never a module-level app) and started inside the service's
own asyncio loop next to its gRPC server, so health can say SERVING only once
the app joined its group and restored its tables from their changelogs.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import faust

from smsgw.settings import ServiceSettings

log = logging.getLogger(__name__)


def make_app(settings: ServiceSettings, app_id: str, *, partitions: int = 12) -> faust.App:
    app_id = settings.topic_prefix + app_id
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id,
        datadir=str(Path(settings.state_dir) / app_id),
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",  # tables are rebuilt from their changelog topics at start
        topic_partitions=partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_ms / 1000,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=1,
        stream_buffer_maxsize=4096,
        web_enabled=False,
        autodiscover=False,
        processing_guarantee="at_least_once",
        key_serializer="raw",
        value_serializer="raw",
    )


async def start_app(app: faust.App, timeout: float = 60.0) -> None:
    """Starts the app and waits until its partitions are assigned and tables recovered."""
    await app.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        assigned = bool(app.consumer.assignment())
        recovered = app.tables.recovery.completed.is_set() if app.tables else True
        if assigned and recovered and not app.rebalancing:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{app.conf.id}: not ready after {timeout}s (assigned={assigned}, recovered={recovered})")
        await asyncio.sleep(0.05)


async def stop_app(app: faust.App) -> None:
    await app.stop()
