"""Prometheus metrics of the carrier-adapter: each carrier's connection state and traffic.

Read from the carrier clients when scraped (a custom collector), so there is no second
bookkeeping to drift from the clients' own counters.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .smpp_carrier import SmppCarrierClient


class CarrierCollector:
    def __init__(self, clients: Iterable) -> None:
        self.clients = list(clients)

    def collect(self):
        bound = GaugeMetricFamily("smsgw_carrier_bound", "1 when the carrier session is bound/connected",
                                  labels=["carrier", "session"])
        tps = GaugeMetricFamily("smsgw_carrier_tps", "submits per second over the last 10 s", labels=["carrier"])
        window = GaugeMetricFamily("smsgw_carrier_window_in_use", "submits awaiting the carrier's answer",
                                   labels=["carrier"])
        counters = {
            name: CounterMetricFamily(f"smsgw_carrier_{name}", help_text, labels=["carrier"])
            for name, help_text in (
                ("submits", "submit requests put on the wire (parts and retries)"),
                ("submit_failures", "submit requests refused or unanswered"),
                ("throttled", "submit requests answered with a throttling status"),
                ("reconnects", "sessions re-established after a loss"),
                ("receipts", "delivery receipts received"),
            )
        }
        for client in self.clients:
            if not isinstance(client, SmppCarrierClient):
                continue
            stats = client.client.stats()
            for session, is_bound in stats.bound.items():
                bound.add_metric([client.name, session], 1.0 if is_bound else 0.0)
            tps.add_metric([client.name], stats.current_tps)
            window.add_metric([client.name], stats.window_in_use)
            for name, family in counters.items():
                family.add_metric([client.name], getattr(stats, f"{name}_total"))
        yield bound
        yield tps
        yield window
        yield from counters.values()


def serve_metrics(clients, host: str, port: int) -> CollectorRegistry:
    """Starts /metrics on host:port (a background thread) and returns its registry."""
    registry = CollectorRegistry()
    registry.register(CarrierCollector(clients))
    start_http_server(port, addr=host, registry=registry)
    return registry
