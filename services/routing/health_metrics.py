"""routing's view of each carrier's health on /metrics (smsgw.domain.carrier_health).

Per replica: each member judges from the messages of its own partitions, so replicas may
briefly disagree near a threshold; alert on the maximum over pods.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from smsgw.domain.carrier_health import CarrierHealth


class CarrierHealthMetrics:
    def __init__(self, health: CarrierHealth, carriers: Callable[[], frozenset[str]], clock=time.monotonic) -> None:
        self.health = health
        self.carriers = carriers  # every carrier the route table names, seen or not
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        healthy = GaugeMetricFamily(
            "smsgw_carrier_healthy",
            "1 while routing gives the carrier traffic, 0 while it skips it (failure ratios over the window)",
            labels=["carrier"],
        )
        ratio = GaugeMetricFamily(
            "smsgw_carrier_failure_ratio",
            "share of the carrier's submit outcomes in routing's health window that failed",
            labels=["carrier"],
        )
        undelivered = GaugeMetricFamily(
            "smsgw_carrier_undelivered_ratio",
            "share of the carrier's final receipts in routing's health window that were not DELIVERED",
            labels=["carrier"],
        )
        now = self.clock()
        for carrier in sorted(self.carriers() | set(self.health.carriers())):
            share, _ = self.health.failure_ratio(carrier, now)
            healthy.add_metric([carrier], 1.0 if self.health.healthy(carrier, now) else 0.0)
            ratio.add_metric([carrier], share)
            undelivered.add_metric([carrier], self.health.undelivered_ratio(carrier, now)[0])
        yield healthy
        yield ratio
        yield undelivered
