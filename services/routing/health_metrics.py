"""routing's view of each carrier's health on /metrics (smsgw.domain.carrier_health).

Per replica: each member judges from the messages of its own partitions, so replicas may
briefly disagree near a threshold; alert on the maximum over pods.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from smsgw.domain.carrier_health import CarrierHealth


class CarrierHealthMetrics:
    def __init__(self, health: CarrierHealth, carriers: Callable[[], frozenset[str]], clock=time.monotonic) -> None:
        self.health = health
        self.carriers = carriers  # every carrier the route table names, seen or not
        self.clock = clock

    def instrument(self, meter: Meter) -> None:
        meter.create_observable_gauge(
            "smsgw_carrier_healthy",
            callbacks=[self._healthy],
            description="1 while routing gives the carrier traffic, 0 while it skips it (failure ratios over the window)",
        )
        meter.create_observable_gauge(
            "smsgw_carrier_connected",
            callbacks=[self._connected],
            description="1 while a carrier-adapter replica reports a working connection to the carrier, 0 while the "
            "replicas reporting it are all disconnected (routing skips it); absent when none reports it",
        )
        meter.create_observable_gauge(
            "smsgw_carrier_failure_ratio",
            callbacks=[self._failure_ratio],
            description="share of the carrier's submit outcomes in routing's health window that failed",
        )
        meter.create_observable_gauge(
            "smsgw_carrier_undelivered_ratio",
            callbacks=[self._undelivered_ratio],
            description="share of the carrier's final receipts in routing's health window that were not DELIVERED",
        )

    def _each_carrier(self) -> Iterator[tuple[str, float]]:
        now = self.clock()
        for carrier in sorted(self.carriers() | set(self.health.carriers())):
            yield carrier, now

    def _healthy(self, _: CallbackOptions) -> Iterator[Observation]:
        for carrier, now in self._each_carrier():
            yield Observation(1.0 if self.health.healthy(carrier, now) else 0.0, {"carrier": carrier})

    def _connected(self, _: CallbackOptions) -> Iterator[Observation]:
        connections, now = self.health.connections, self.health.wall_clock()
        for carrier in connections.carriers():
            state = connections.state(carrier, now)
            if state.reporting:
                yield Observation(0.0 if state.disconnected else 1.0, {"carrier": carrier})

    def _failure_ratio(self, _: CallbackOptions) -> Iterator[Observation]:
        for carrier, now in self._each_carrier():
            yield Observation(self.health.failure_ratio(carrier, now)[0], {"carrier": carrier})

    def _undelivered_ratio(self, _: CallbackOptions) -> Iterator[Observation]:
        for carrier, now in self._each_carrier():
            yield Observation(self.health.undelivered_ratio(carrier, now)[0], {"carrier": carrier})
