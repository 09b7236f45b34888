"""Calls each gRPC method received, as an OpenTelemetry counter: the request rate intake scales on
(k8s/components/keda-lag-scaling) and the traffic an operator sees per method. Health checks and
reflection are not counted: the kubelet's probes are not traffic."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import grpc
from opentelemetry.metrics import CallbackOptions, Meter, Observation

_NOT_TRAFFIC = ("/grpc.health.", "/grpc.reflection.")


class RequestCounter(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if not method.startswith(_NOT_TRAFFIC):
            self.calls[method] += 1
        return await continuation(handler_call_details)

    def instrument(self, meter: Meter) -> None:
        meter.create_observable_counter(
            "smsgw_grpc_requests",
            callbacks=[self._observe],
            description="gRPC calls received, by method (health and reflection not counted)",
        )

    def _observe(self, _: CallbackOptions) -> Iterator[Observation]:
        for method, count in sorted(self.calls.items()):
            yield Observation(count, {"method": method})
