"""Prometheus metrics of the carrier-adapter: each carrier's connection state and traffic.

Read from the carrier clients when scraped: every client answers ``metrics()`` with a
CarrierMetrics snapshot of the counters it keeps anyway (carrier_metrics.py), so there is
no second bookkeeping to drift from them; served by smsgw.metrics_endpoint. What each metric
counts per carrier kind: docs/metrics.md.

Every series is labelled by ``carrier``; ``smsgw_carrier_info{carrier, kind}`` (always 1)
gives each carrier's kind, to join on (``* on(carrier) group_left(kind) smsgw_carrier_info``)
without changing the label sets the SMPP series have always had.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .carrier_metrics import COMMON_COUNTERS, EXTRA_COUNTERS, EXTRA_GAUGES, CarrierMetrics

log = logging.getLogger(__name__)

__all__ = ["CarrierCollector", "DispatchCollector"]

PREFIX = "smsgw_carrier_"


class CarrierCollector:
    """A prometheus_client collector over every client that has ``metrics()``."""

    def __init__(self, clients: Iterable) -> None:
        self.clients = list(clients)

    def snapshots(self) -> list[tuple[str, CarrierMetrics]]:
        return [(client.name, client.metrics()) for client in self.clients if hasattr(client, "metrics")]

    def collect(self) -> Iterator[Metric]:
        snapshots = self.snapshots()
        info = GaugeMetricFamily(
            f"{PREFIX}info", "always 1: the carrier's kind (smpp, twilio, android)", labels=["carrier", "kind"]
        )
        bound = GaugeMetricFamily(
            f"{PREFIX}bound",
            "1 when the carrier session is up: SMPP bind bound, phone "
            "stream attached, HTTP provider answering its last request",
            labels=["carrier", "session"],
        )
        tps = GaugeMetricFamily(
            f"{PREFIX}tps",
            "per second over the last 10 s: submit_sm admitted (SMPP), "
            "submits accepted (HTTP), messages sent by phones (Android)",
            labels=["carrier"],
        )
        in_flight = GaugeMetricFamily(
            f"{PREFIX}in_flight", "submits handed to the carrier and not answered yet", labels=["carrier"]
        )
        counters = {
            name: CounterMetricFamily(f"{PREFIX}{name}", help_text, labels=["carrier"])
            for name, help_text in COMMON_COUNTERS.items()
        }
        extra_counters: dict[str, CounterMetricFamily] = {}
        extra_gauges: dict[str, GaugeMetricFamily] = {}
        for carrier, m in snapshots:
            info.add_metric([carrier, m.kind], 1.0)
            for session, up in m.sessions.items():
                bound.add_metric([carrier, session], 1.0 if up else 0.0)
            tps.add_metric([carrier], m.current_tps)
            in_flight.add_metric([carrier], m.in_flight)
            for name, family in counters.items():
                family.add_metric([carrier], getattr(m, name))
            for name, value in m.extra_counters.items():
                if name not in extra_counters:
                    extra_counters[name] = CounterMetricFamily(
                        f"{PREFIX}{name}", EXTRA_COUNTERS[name], labels=["carrier"]
                    )
                extra_counters[name].add_metric([carrier], value)
            for name, level in m.extra_gauges.items():
                if name not in extra_gauges:
                    extra_gauges[name] = GaugeMetricFamily(f"{PREFIX}{name}", EXTRA_GAUGES[name], labels=["carrier"])
                extra_gauges[name].add_metric([carrier], level)
        yield info
        yield bound
        yield tps
        yield in_flight
        yield from extra_gauges.values()
        yield from counters.values()
        yield from extra_counters.values()


class DispatchCollector:
    """How many commands each carrier has running and parked on this replica (the dispatcher's
    CarrierParking): a carrier at its share with a growing parked count is down or slower than
    its traffic."""

    def __init__(self, dispatcher) -> None:
        self.dispatcher = dispatcher

    def collect(self) -> Iterator[Metric]:
        parking = self.dispatcher.parking
        carriers = sorted(set(self.dispatcher.carriers) | parking.carriers())
        running = GaugeMetricFamily(
            f"{PREFIX}commands_running",
            "dispatch commands being submitted or retried now (at most max_in_flight_per_carrier)",
            labels=["carrier"],
        )
        parked = GaugeMetricFamily(
            f"{PREFIX}commands_parked",
            "dispatch commands waiting for a place in the carrier's share; read again from the topic once it drains",
            labels=["carrier"],
        )
        for carrier in carriers:
            running.add_metric([carrier], parking.active(carrier))
            parked.add_metric([carrier], parking.parked(carrier))
        yield running
        yield parked
        yield CounterMetricFamily(
            f"{PREFIX}command_copies_skipped",
            "dispatch commands read a second time under "
            "the same id (routing published them again after a crash) and not submitted again",
            value=self.dispatcher.copies_skipped,
        )
