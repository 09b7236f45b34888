"""`GET /metrics` for Prometheus, on every service that is given a port (SMSGW_METRICS_PORT).

Collectors read the service's own state when scraped (the counters it keeps anyway), so there is
no second bookkeeping to drift from it. Served by aiohttp on the service's event loop: that state
is read by the loop that changes it, never from another thread halfway through a change. The
series of every service: docs/metrics.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"


class MetricsEndpoint:
    """``GET /metrics`` on host:port (port 0: any free port, see ``port`` after start)."""

    def __init__(self, collectors: Iterable[Collector], *, service: str, host: str = "127.0.0.1", port: int = 0):
        self.registry = CollectorRegistry()
        for collector in collectors:
            self.registry.register(collector)
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

    async def _metrics(self, request: web.Request) -> web.Response:
        # The format the scraper asks for (Prometheus text or OpenMetrics), as prometheus_client's own server does.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})


async def start_metrics(run, settings, service: str, collectors: Iterable[Collector]) -> MetricsEndpoint | None:
    """Serves `collectors` on SMSGW_METRICS_PORT until the service stops (nothing when it is 0)."""
    if not settings.metrics_port:
        return None
    endpoint = MetricsEndpoint(collectors, service=service, host=settings.grpc_host, port=settings.metrics_port)
    await endpoint.start()
    run.on_close(endpoint.stop)
    return endpoint
