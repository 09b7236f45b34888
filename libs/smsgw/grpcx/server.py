"""The gRPC server every service runs: health, reflection, graceful stop.

Health starts NOT_SERVING and a service flips it to SERVING only once its
consumers joined and its state is restored; on SIGTERM it goes NOT_SERVING
first so load balancers drain it, then stops with a grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .malformed import refusing_malformed
from .request_metrics import RequestCounter
from .tls import TlsFiles

log = logging.getLogger(__name__)


class ServiceServer:
    """A gRPC server with health and reflection, plaintext or TLS.

    With TLS, `health_port` (if given) serves grpc.health.v1 alone in plaintext: Kubernetes'
    gRPC probes cannot speak TLS, and health says nothing a client could abuse. `mtls_port` (if
    given, with a client CA in `tls`) serves every service again to clients with a certificate
    from that CA only: other services' calls (smsgw.grpcx.tls).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        service_names: Iterable[str],
        tls: TlsFiles | None = None,
        health_port: int | None = None,
        mtls_port: int | None = None,
        options: Iterable[tuple[str, int]] = (),
    ):
        #: Calls by method, for the service's /metrics (smsgw.metrics_endpoint).
        self.requests = RequestCounter()
        # No interceptors: grpc.aio runs each one per call (~22-29 µs of CPU a unary call for
        # these two, bench/grpc_unary.py); every handler is wrapped once instead, as registered.
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0), *options])
        self._registrar = _WrappingRegistrar(self.server, self._wrap)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._registrar)
        self.service_names = tuple(service_names)
        # Reflection asks for the grpc.aio server itself (it picks its servicer by the type), so
        # its one method is registered unwrapped: not counted (as before), and bytes that are not
        # its request get grpc's own INTERNAL.
        reflection.enable_server_reflection(
            self.service_names + (health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        if tls is None:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        else:
            self.port = self.server.add_secure_port(f"{host}:{port}", tls.credentials())
        self.address = f"{host}:{self.port}"
        self.tls = tls is not None
        self.mtls_port: int | None = None
        if mtls_port is not None:
            if tls is None:
                raise ValueError("an mTLS port needs TLS with a client CA")
            credentials = tls.requiring_client_certificates().credentials()
            self.mtls_port = self.server.add_secure_port(f"{host}:{mtls_port}", credentials)
        self.health_server: grpc.aio.Server | None = None
        if health_port is not None:
            self.health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            self.health_port = self.health_server.add_insecure_port(f"{host}:{health_port}")

    def add(self, register: Callable[[grpc.aio.Server], object]) -> None:
        """Registers a service (e.g. a generated `add_*Servicer_to_server`), each method counted and
        refusing requests that do not decode (smsgw.grpcx.malformed)."""
        register(self._registrar)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return refusing_malformed(method, handler, self.requests.counter(method))

    async def start(self) -> None:
        await self.set_serving(False)
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("",) + self.service_names:
            await self.health.set(name, status)

    async def stop(self, grace: float = 5.0) -> None:
        await self.set_serving(False)
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)


class _WrappingRegistrar:
    """What a generated `add_*Servicer_to_server` is given in place of the server: the server's
    two public ways to register handlers, each handler wrapped once by `wrap(method, handler)`."""

    def __init__(self, server: grpc.aio.Server, wrap: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]):
        self._server = server
        self._wrap = wrap

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_WrappedGeneric(h, self._wrap) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        wrapped = {name: self._wrap(f"/{service}/{name}", handler) for name, handler in handlers.items()}
        self._server.add_registered_method_handlers(service, wrapped)


class _WrappedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose method handlers are wrapped the first time each is asked for."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap):
        self._inner = inner
        self._wrap = wrap
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        try:
            return self._wrapped[method]
        except KeyError:
            handler = self._inner.service(handler_call_details)
            wrapped = None if handler is None else self._wrap(method, handler)
            if len(self._wrapped) < 1000:  # a generic handler may be asked for any name a client sends
                self._wrapped[method] = wrapped
            return wrapped


def public_server_options(
    *, max_message_bytes: int, max_concurrent_streams: int, keepalive_seconds: float, max_connection_age_seconds: float
) -> list[tuple[str, int]]:
    """Limits for a port the internet talks to: message size, streams per connection, keepalive
    (dead peers are found and dropped), and a maximum connection age (clients reconnect, so load
    spreads over new replicas; a stream cut by it ends UNAVAILABLE and is resumed by cursor)."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_concurrent_streams", max_concurrent_streams),
        ("grpc.keepalive_time_ms", int(keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Clients may ping (keepalive) every 10 s at most, also between calls.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_connection_age_ms", int(max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", 300_000),
    ]


def stop_event_on_signals() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def announce_ready(ready_file: str, address: str) -> None:
    if ready_file:
        Path(ready_file).write_text(address)
