"""routing: picks a carrier for each queued message and emits the dispatch command."""

from __future__ import annotations

import logging

from pydantic import Field

from smsgw import eventloop
from smsgw.domain.carrier_health import CarrierHealth, HealthSettings, load_health_section
from smsgw.domain.route_schema import load_route_section, load_routes
from smsgw.events.topics import ACCOUNT_EVENTS
from smsgw.grpcx.server import ServiceServer
from smsgw.kafka.carrier_connection_reader import CarrierConnectionReader
from smsgw.kafka.clients import make_reader, prepare_topics
from smsgw.kafka.dead_letter_metrics import DeadLettered
from smsgw.kafka.lag import ConsumerLag
from smsgw.kafka.predecessor import MemberFile
from smsgw.logs import configure_logging
from smsgw.metrics_endpoint import start_metrics
from smsgw.service import ServiceRun
from smsgw.settings import ServiceSettings
from smsgw.telemetry import setup_tracing

from .app import GROUP, RoutingWorker
from .applied_tables import AppliedRouteTables
from .decisions import DEFAULT_RECORD_RETENTION
from .health_metrics import CarrierHealthMetrics

log = logging.getLogger("smsgw.routing")


class RoutingSettings(ServiceSettings):
    grpc_port: int = 16052
    routes: str = Field(
        '{"routes": [{"prefix": "", "carrier": "smsc-sim"}]}',
        description='JSON route table {"routes": [...]} as in the configuration file\'s `routes` section '
        "(docs/routing.md); the file's section replaces it",
    )
    record_retention_seconds: float = Field(
        DEFAULT_RECORD_RETENTION,
        gt=0,
        description="how long a settled message's routing record is kept "
        "(what makes a MessageQueued read again harmless)",
    )


async def serve(settings: RoutingSettings) -> None:
    settings.log_effective("routing")
    table = settings.config_section("routes", load_route_section, replaces="routes")
    settings.refuse_development_defaults(
        "routing",
        ["SMSGW_ROUTES is the development table (everything to the SMSC simulator)"]
        if table is None and settings.routes == RoutingSettings.model_fields["routes"].default
        else [],
    )
    if table is None:
        try:
            table = load_routes(settings.routes)
        except ValueError as exc:  # pydantic's ValidationError and JSON's errors both are
            raise SystemExit(f"SMSGW_ROUTES: {exc}") from None
    health: HealthSettings = settings.config_section("carrier_health", load_health_section) or HealthSettings()
    provider = setup_tracing("routing", settings.trace_file)
    server = ServiceServer(host=settings.grpc_host, port=settings.grpc_port, service_names=[])
    run = ServiceRun.of("routing", server, settings, tracing=provider)
    try:
        await run.start()
        await prepare_topics(settings)
        worker = RoutingWorker(
            settings,
            table,
            record_retention=settings.record_retention_seconds,
            health=CarrierHealth(health),
            # A routing process killed here is removed from the group at once (scheduled sends on time).
            member_file=MemberFile(settings.state_dir, settings.topic_prefix + GROUP),
        )
        # The table applied through the admin API, if any, replaces the configuration's: read to
        # the end of the log before the first message is routed, then followed.
        applied = AppliedRouteTables(
            make_reader(settings),
            settings.topic(ACCOUNT_EVENTS),
            settings.kafka_connection(),
            use=lambda version: setattr(worker, "table", version.table),
        )
        await applied.start()
        run.on_close(applied.stop)
        await run.ready(applied.caught_up, "route tables read from the admin event log")
        # The carrier-adapter replicas' connections: a carrier none of them is connected to is skipped.
        connections = CarrierConnectionReader.of(settings, worker.health.connections)
        await connections.start()
        run.on_close(connections.stop)
        await run.ready(connections.caught_up, "carrier connections read")
        await start_metrics(
            run,
            settings,
            "routing",
            [
                ConsumerLag(worker.loop),
                DeadLettered(worker.loop),
                CarrierHealthMetrics(worker.health, lambda: worker.table.carrier_names),
            ],
        )
        # A broker error ends the loop and the process (non-zero): the events are read again.
        run.watch(worker.run(run.stop), "routing loop")
        await run.ready(worker.ready, "partitions assigned and their routing records loaded")
        log.info("routing has %d routes", len(worker.table.routes))
        await run.until_stopped()
    finally:
        await run.close()


def main() -> None:
    settings = RoutingSettings()
    configure_logging(settings.log_level, settings.log_format, "routing")
    eventloop.run(serve(settings), settings.event_loop, settings.gc_young_collection_seconds)


if __name__ == "__main__":
    main()
