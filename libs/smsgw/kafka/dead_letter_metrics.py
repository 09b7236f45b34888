"""Records a consumer-group member gave up on, as an OpenTelemetry counter: each went to the
dead-letter topic (smsgw.dead-letters.v1; `smsgw dlq list|replay`) after its attempts. Any
increase means events a service could not process; the partition went on without them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation


class DeadLetteringLoop(Protocol):
    """A member that sends the records it cannot handle to the dead-letter topic (PartitionedLoop,
    carrier-adapter's Dispatcher)."""

    group: str
    topic: str
    dead_lettered: int


class DeadLettered:
    def __init__(self, *loops: DeadLetteringLoop) -> None:
        self.loops = loops

    def instrument(self, meter: Meter) -> None:
        meter.create_observable_counter(
            "smsgw_dead_lettered",
            callbacks=[self._observe],
            description="records of the topic this member could not process and sent to the dead-letter topic "
            "(smsgw dlq list)",
        )

    def _observe(self, _: CallbackOptions) -> Iterator[Observation]:
        for loop in self.loops:
            yield Observation(loop.dead_lettered, {"group": loop.group, "topic": loop.topic})
