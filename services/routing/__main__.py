"""routing: picks a carrier for each queued message and emits the dispatch command."""

from __future__ import annotations

import logging

from pydantic import Field

from smsgw import eventloop
from smsgw.domain.routes import RouteTable
from smsgw.grpcx.server import ServiceServer
from smsgw.kafka.clients import prepare_topics
from smsgw.kafka.lag import ConsumerLag
from smsgw.logs import configure_logging
from smsgw.metrics_endpoint import start_metrics
from smsgw.service import ServiceRun
from smsgw.settings import ServiceSettings
from smsgw.telemetry import setup_tracing

from .app import RoutingWorker
from .decisions import DEFAULT_RECORD_RETENTION

log = logging.getLogger("smsgw.routing")


class RoutingSettings(ServiceSettings):
    grpc_port: int = 16052
    routes: str = Field(
        '{"routes": [{"prefix": "", "carrier": "smsc-sim"}]}',
        description="JSON route table: longest prefix wins, empty prefix is the default",
    )
    record_retention_seconds: float = Field(
        DEFAULT_RECORD_RETENTION,
        gt=0,
        description="how long a settled message's routing record is kept "
        "(what makes a MessageQueued read again harmless)",
    )


async def serve(settings: RoutingSettings) -> None:
    settings.log_effective("routing")
    settings.refuse_development_defaults(
        "routing",
        ["SMSGW_ROUTES is the development table (everything to the SMSC simulator)"]
        if settings.routes == RoutingSettings.model_fields["routes"].default
        else [],
    )
    table = RouteTable.parse(settings.routes)
    provider = setup_tracing("routing", settings.trace_file)
    server = ServiceServer(host=settings.grpc_host, port=settings.grpc_port, service_names=[])
    run = ServiceRun("routing", server, ready_file=settings.ready_file, tracing=provider)
    try:
        await run.start()
        await prepare_topics(settings)
        worker = RoutingWorker(settings, table, record_retention=settings.record_retention_seconds)
        await start_metrics(run, settings, "routing", [ConsumerLag(worker.loop)])
        # A broker error ends the loop and the process (non-zero): the events are read again.
        run.watch(worker.run(run.stop), "routing loop")
        await run.ready(worker.ready, "partitions assigned and their routing records loaded")
        log.info("routing has %d routes", len(table.routes))
        await run.until_stopped()
    finally:
        await run.close()


def main() -> None:
    settings = RoutingSettings()
    configure_logging(settings.log_level, settings.log_format, "routing")
    eventloop.run(serve(settings), settings.event_loop)


if __name__ == "__main__":
    main()
