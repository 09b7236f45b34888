"""routing: picks a carrier for each queued message and emits the dispatch command."""

from __future__ import annotations

import asyncio
import logging

from pydantic import Field

from smsgw import eventloop
from smsgw.domain.routes import RouteTable
from smsgw.grpcx.server import ServiceServer, announce_ready, stop_event_on_signals
from smsgw.kafka.clients import ensure_topics
from smsgw.settings import ServiceSettings, configure_logging
from smsgw.telemetry import setup_tracing

from .app import RoutingWorker
from .decisions import DEFAULT_RECORD_RETENTION

log = logging.getLogger("smsgw.routing")


class RoutingSettings(ServiceSettings):
    grpc_port: int = 16052
    routes: str = Field('{"routes": [{"prefix": "", "carrier": "smsc-sim"}]}',
                        description="JSON route table: longest prefix wins, empty prefix is the default")
    record_retention_seconds: float = Field(DEFAULT_RECORD_RETENTION, gt=0,
                                            description="how long a settled message's routing record is kept "
                                                        "(what makes a MessageQueued read again harmless)")


async def serve(settings: RoutingSettings) -> None:
    settings.log_effective("routing")
    settings.refuse_development_defaults("routing", [
        "SMSGW_ROUTES is the development table (everything to the SMSC simulator)"]
        if settings.routes == RoutingSettings.model_fields["routes"].default else [])
    table = RouteTable.parse(settings.routes)
    provider = setup_tracing("routing", settings.trace_file)
    server = ServiceServer(host=settings.grpc_host, port=settings.grpc_port, service_names=[])
    stop = stop_event_on_signals()
    await server.start()
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix)
    worker = RoutingWorker(settings, table, record_retention=settings.record_retention_seconds)
    running = asyncio.create_task(worker.run(stop))
    # Ready once the group gave this member its partitions and their records are loaded; no
    # deadline (a long changelog takes its time: the kubelet's startup probe decides).
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not running.done():
        await server.set_serving(True)
        announce_ready(settings.ready_file, server.address)
        log.info("routing serving on %s with %d routes", server.address, len(table.routes))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
    ready.cancel()
    await server.set_serving(False)
    stop.set()
    try:
        await running   # a broker error ends the process (non-zero): the events are read again
    finally:
        await server.stop(grace=2.0)
        provider.shutdown()


def main() -> None:
    settings = RoutingSettings()
    configure_logging(settings.log_level)
    eventloop.run(serve(settings))


if __name__ == "__main__":
    main()
