"""DeviceGatewayService: the stream each Android phone holds open (hello, commands, reports)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from datetime import timedelta
from typing import cast

import grpc

from smsgw.grpcx.malformed import refuse_if_malformed
from smsgw.v1 import device_gateway_pb2 as dg
from smsgw.v1 import device_gateway_pb2_grpc as dg_grpc

from .client import AndroidCarrierClient
from .registry import DeviceAuthError, DeviceRegistry
from .state import DeviceConnection, DeviceState

log = logging.getLogger(__name__)

TOKEN_METADATA = "x-smsgw-device-token"
SERVICE_NAME = dg.DESCRIPTOR.services_by_name["DeviceGatewayService"].full_name
CONNECT = f"/{SERVICE_NAME}/Connect"


class DeviceGatewayServicer(dg_grpc.DeviceGatewayServiceServicer):
    """Thin: authenticates the stream, then moves frames between it and the phone's carrier client."""

    def __init__(self, registry: DeviceRegistry):
        self.registry = registry

    async def Connect(self, request_iterator, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        metadata_token = metadata.get(TOKEN_METADATA)
        if metadata_token is not None and not self.registry.knows(metadata_token):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"unknown device token in metadata {TOKEN_METADATA}; check the token configured in "
                f"the app against the device_tokens of the account's Android carrier",
            )
        if metadata_token is not None:
            # Headers now tell the phone its metadata token passed; a phone that waits for them
            # before writing hello sees a refusal as UNAUTHENTICATED, not as a failed write.
            await context.send_initial_metadata(())
        hello = await self._read_hello(context)
        if hello is None:
            return
        if (
            metadata_token is not None
            and hello.device_token
            and not hmac.compare_digest(metadata_token.encode(), hello.device_token.encode())
        ):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"hello.device_token and metadata {TOKEN_METADATA} differ; send one token",
            )
        token = hello.device_token or metadata_token
        if not token:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"no device token: put it in hello.device_token (or metadata {TOKEN_METADATA})",
            )
            return  # abort raises; this says so to the type checker
        try:
            carrier, device = self.registry.authenticate(token, hello.device_id)
        except DeviceAuthError as exc:
            log.warning("refused a phone from %s: %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            return
        # The registry holds the clients of Android carriers only (registry.RegisteredCarrier).
        client = cast(AndroidCarrierClient, carrier)
        if client.closed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"carrier {client.name} is shutting down; reconnect")
        connection = DeviceConnection(device.device_id, context.peer())
        client.attach(device, connection, hello)
        try:
            await self._serve(client, device, connection, context)
        finally:
            client.detach(device, connection)
        if connection.close_code is not None:
            await context.abort(connection.close_code, connection.close_details)

    async def _read_hello(self, context) -> dg.DeviceHello | None:
        try:
            first = await asyncio.wait_for(context.read(), self.registry.hello_timeout)
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no hello within {self.registry.hello_timeout:g}s; the first frame must be hello",
            )
        if first is grpc.aio.EOF:
            return None
        await refuse_if_malformed(first, context, CONNECT)
        if first.WhichOneof("frame") != "hello":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"the first frame must be hello, not {first.WhichOneof('frame')}"
            )
        return first.hello

    async def _serve(
        self, client: AndroidCarrierClient, device: DeviceState, connection: DeviceConnection, context
    ) -> None:
        welcome = dg.DeviceWelcome(session_id=connection.session_id)
        welcome.ping_interval.FromTimedelta(timedelta(seconds=self.registry.ping_interval))
        welcome.keepalive_timeout.FromTimedelta(timedelta(seconds=self.registry.keepalive_timeout))
        welcome.server_time.GetCurrentTime()
        await context.write(dg.ConnectResponse(welcome=welcome))
        tasks = [
            asyncio.create_task(self._write_loop(connection, context)),
            asyncio.create_task(self._read_loop(client, device, connection, context)),
            asyncio.create_task(self._ping_loop(connection)),
            asyncio.create_task(connection.closed.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.info("%s: stream of phone %s ended: %r", client.name, device.device_id, task.exception())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _write_loop(connection: DeviceConnection, context) -> None:
        while True:
            frame = await connection.queue.get()
            await context.write(frame)

    @staticmethod
    async def _read_loop(
        client: AndroidCarrierClient, device: DeviceState, connection: DeviceConnection, context
    ) -> None:
        while True:
            frame = await context.read()
            if frame is grpc.aio.EOF:
                return
            await refuse_if_malformed(frame, context, CONNECT)
            connection.last_heard = time.monotonic()
            client.on_frame(device, connection, frame)

    async def _ping_loop(self, connection: DeviceConnection) -> None:
        ping_id = 0
        tick = min(self.registry.ping_interval, self.registry.keepalive_timeout / 2)
        last_ping = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            silent = now - connection.last_heard
            if silent > self.registry.keepalive_timeout:
                connection.close(
                    grpc.StatusCode.UNAVAILABLE,
                    f"nothing heard from device {connection.device_id} for {silent:.0f}s; reconnect",
                )
                return
            if now - last_ping >= self.registry.ping_interval - 1e-3:
                ping_id += 1
                ping = dg.ServerPing(ping_id=ping_id)
                ping.sent_at.GetCurrentTime()
                connection.write(dg.ConnectResponse(ping=ping))
                last_ping = now


def add_device_gateway(server: grpc.aio.Server, registry: DeviceRegistry) -> DeviceGatewayServicer:
    """Registers smsgw.v1.DeviceGatewayService on the carrier-adapter's gRPC server (before it starts)."""
    servicer = DeviceGatewayServicer(registry)
    dg_grpc.add_DeviceGatewayServiceServicer_to_server(servicer, server)
    return servicer
