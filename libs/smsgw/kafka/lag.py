"""Consumer-group lag as an OpenTelemetry gauge: what each member still has to read, per partition.

A backlog that grows is the first sign that a service is too slow or stuck; it is also what
KEDA scales on (k8s/components/keda-lag-scaling). Each member reports the partitions it owns,
so summed over the pods it is the group's lag.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation


class LagSource(Protocol):
    """A consumer-group member that knows how far behind it is (PartitionedLoop, the dispatcher)."""

    group: str
    topic: str

    def lag(self) -> dict[int, int]:
        """Records behind the end the broker last reported, per owned partition."""
        ...


class ConsumerLag:
    def __init__(self, *loops: LagSource) -> None:
        self.loops = loops

    def instrument(self, meter: Meter) -> None:
        meter.create_observable_gauge(
            "smsgw_consumer_lag",
            callbacks=[self._observe],
            description="records of the topic this member has still to read (broker end minus next offset), "
            "per owned partition",
        )

    def _observe(self, _: CallbackOptions) -> Iterator[Observation]:
        for loop in self.loops:
            for partition, behind in loop.lag().items():
                yield Observation(behind, {"group": loop.group, "topic": loop.topic, "partition": str(partition)})
