"""Calls each gRPC method received, as an OpenTelemetry counter: the request rate intake scales on
(k8s/components/keda-lag-scaling) and the traffic an operator sees per method. Health checks and
reflection are not counted: the kubelet's probes are not traffic."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from opentelemetry.metrics import CallbackOptions, Meter, Observation

_NOT_TRAFFIC = ("/grpc.health.", "/grpc.reflection.")


class RequestCounter:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def counter(self, method: str) -> Callable[[], None] | None:
        """What counts one call of `method` (called at the start of each; smsgw.grpcx.server
        wraps every method's handler with it once); None for health checks and reflection."""
        if method.startswith(_NOT_TRAFFIC):
            return None
        calls = self.calls

        def count() -> None:
            calls[method] += 1

        return count

    def instrument(self, meter: Meter) -> None:
        meter.create_observable_counter(
            "smsgw_grpc_requests",
            callbacks=[self._observe],
            description="gRPC calls received, by method (health and reflection not counted)",
        )

    def _observe(self, _: CallbackOptions) -> Iterator[Observation]:
        for method, count in sorted(self.calls.items()):
            yield Observation(count, {"method": method})
