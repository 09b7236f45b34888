"""The gRPC server every service runs: health, reflection, graceful stop.

Health starts NOT_SERVING and a service flips it to SERVING only once its
consumers joined and its state is restored; on SIGTERM it goes NOT_SERVING
first so load balancers drain it, then stops with a grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

log = logging.getLogger(__name__)


class ServiceServer:
    def __init__(self, *, host: str, port: int, service_names: Iterable[str]):
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = tuple(service_names)
        reflection.enable_server_reflection(
            self.service_names + (health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        self.address = f"{host}:{self.port}"

    def add(self, register: Callable[[grpc.aio.Server], None]) -> None:
        register(self.server)

    async def start(self) -> None:
        await self.set_serving(False)
        await self.server.start()

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("",) + self.service_names:
            await self.health.set(name, status)

    async def stop(self, grace: float = 5.0) -> None:
        await self.set_serving(False)
        await self.server.stop(grace)


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
