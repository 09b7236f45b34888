"""`GET /metrics` for Prometheus, on every service that is given a port (SMSGW_METRICS_PORT).

A service's metrics are OpenTelemetry instruments on a MeterProvider of its own, read at each
scrape by OpenTelemetry's Prometheus reader (opentelemetry-exporter-prometheus) into a
prometheus_client registry of its own: nothing global, so services that share a process (tests)
never see each other's series. Most instruments are observable: their callbacks read the
service's own state when scraped (the counters it keeps anyway), so there is no second
bookkeeping to drift from it. Served by aiohttp on the service's event loop: the callbacks run on
the loop that changes that state, never from another thread halfway through a change. The series
of every service: docs/metrics.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from aiohttp import web
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"


class MetricSource(Protocol):
    """Something that reports metrics: it creates its instruments on the service's meter."""

    def instrument(self, meter: Meter) -> None:
        """Called once, before the first scrape."""
        ...


class MetricsEndpoint:
    """``GET /metrics`` on host:port (port 0: any free port, see ``port`` after start)."""

    def __init__(self, sources: Iterable[MetricSource], *, service: str, host: str = "127.0.0.1", port: int = 0):
        self.registry = CollectorRegistry()
        # No otel_scope_* labels: every series keeps the label set its alerts and panels select on.
        reader = PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
        self.provider = MeterProvider(
            metric_readers=[reader], resource=Resource.create({"service.name": service}), shutdown_on_exit=False
        )
        meter = self.provider.get_meter("smsgw")
        for source in sources:
            source.instrument(meter)
        self.service = service
        self.host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(METRICS_PATH, self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self._requested_port).start()
        self.port = self._runner.addresses[0][1]
        log.info("%s metrics on http://%s:%d%s", self.service, self.host, self.port, METRICS_PATH)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self.provider.shutdown()

    async def _metrics(self, request: web.Request) -> web.Response:
        # The format the scraper asks for (Prometheus text or OpenMetrics), as prometheus_client's own server does.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})


async def start_metrics(run, settings, service: str, sources: Iterable[MetricSource]) -> MetricsEndpoint | None:
    """Serves `sources` on SMSGW_METRICS_PORT until the service stops (nothing when it is 0)."""
    if not settings.metrics_port:
        return None
    endpoint = MetricsEndpoint(sources, service=service, host=settings.grpc_host, port=settings.metrics_port)
    await endpoint.start()
    run.on_close(endpoint.stop)
    return endpoint
