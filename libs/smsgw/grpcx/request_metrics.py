"""Calls each gRPC method received, as a Prometheus counter: the request rate intake scales on
(k8s/components/keda-lag-scaling) and the traffic an operator sees per method. Health checks and
reflection are not counted: the kubelet's probes are not traffic."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import grpc
from prometheus_client.core import CounterMetricFamily, Metric

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

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "smsgw_grpc_requests",
            "gRPC calls received, by method (health and reflection not counted)",
            labels=["method"],
        )
        for method, count in sorted(self.calls.items()):
            family.add_metric([method], count)
        yield family
