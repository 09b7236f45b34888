"""A carrier whose bind is down is skipped from the first message, before any submit to it fails,
and gets traffic again once its bind is back: the connection is a health signal of its own.

A failover route lists `smsc-far` first and `smsc-sim` second. `smsc-far` is an SMPP carrier of
carrier-adapter whose address is a port on loopback where, at first, nothing listens: it cannot
bind. carrier-adapter reports that on smsgw.carrier-connections.v1; routing reads it and sends the
route's messages to smsc-sim, without one submit attempt to smsc-far (the health settings make
the submit outcomes alone unable to skip a carrier here). A TCP relay to the SMSC simulator then
opens on that port: smsc-far binds, is reported connected, and the route's next message goes to
it. The relay is closed with its connections: smsc-far is skipped again. Real processes, a real
broker, SMPP over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import grpc
import pytest

from smsgw.domain import status as st
from smsgw.v1 import accounts_pb2 as ac
from smsgw.v1 import accounts_pb2_grpc as ac_grpc
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_dev.platform import SMPP_ACCOUNTS, Platform
from tests.conftest import unique_prefix
from tests.integration.helpers import ACCOUNT, scraped_metrics, send_request, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

FAR = "+1415555078"
ROUTES = [
    {"name": "default", "carrier": "smsc-sim"},
    {"name": "far-first", "prefix": FAR, "carriers": ["smsc-far", "smsc-sim"]},
]
# Submit failures alone never make a carrier unhealthy here: what moves traffic is the connection.
HEALTH = {"min_attempts": 100_000}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Relay:
    """A TCP relay on loopback from `port` to the SMSC simulator; close() drops every connection."""

    def __init__(self, port: int, upstream: int) -> None:
        self.port, self.upstream = port, upstream
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        await self._server.wait_closed()


def _platform_with_far_carrier(far_port: int) -> type[Platform]:
    class WithFar(Platform):
        def carriers(self) -> list[dict]:
            far = {
                "name": "smsc-far",
                "kind": "smpp",
                "host": "127.0.0.1",
                "port": far_port,
                "system_id": "smsgw3",
                "password": SMPP_ACCOUNTS["smsgw3"],
            }
            return [*super().carriers(), far]

    return WithFar


async def _connected(platform: Platform, carrier: str) -> float | None:
    samples = await scraped_metrics(platform.metrics_port_of("routing"))
    return samples.get(("smsgw_carrier_connected", frozenset({("carrier", carrier)})))


async def _until_connected(platform: Platform, carrier: str, wanted: float, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (seen := await _connected(platform, carrier)) != wanted:
        assert asyncio.get_running_loop().time() < deadline, f"{carrier} connected={seen}, waited for {wanted}"
        await asyncio.sleep(0.2)


async def _sent_with(stub, to: str, count: int, label: str) -> list:
    ids = [
        (await stub.SendMessage(send_request(to=to, body=f"{label} {n}"), metadata=ACCOUNT)).message.id
        for n in range(count)
    ]
    wanted: set[int] = {st.SENT, st.DELIVERED}
    return list(await asyncio.gather(*(wait_for_status(stub, i, wanted, timeout=40) for i in ids)))


async def test_a_carrier_whose_bind_is_down_is_skipped_before_any_submit_fails_and_taken_back_once_bound(
    broker, tmp_path
):
    far_port = _free_port()
    platform = _platform_with_far_carrier(far_port).for_broker(
        broker,
        tmp_path,
        topic_prefix=unique_prefix("connections"),
        auth="trusted-header",
        tls=False,
        config_sections={"routes": ROUTES, "carrier_health": HEALTH},
        # A report a second (three missed: stale after 3 s), so the test's waits stay short.
        extra_env={"SMSGW_CONNECTION_REPORT_SECONDS": "1"},
    )
    relay = _Relay(far_port, platform.smsc_port or 0)
    try:
        await platform.start()
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            await _until_connected(platform, "smsc-far", 0.0, timeout=20)
            assert await _connected(platform, "smsc-sim") == 1.0

            skipped = await _sent_with(stub, f"{FAR}1", 5, "down")
            assert {m.carrier for m in skipped} == {"smsc-sim"}
            for message in skipped:
                history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=message.id), metadata=ACCOUNT)
                kinds = [e.event.WhichOneof("payload") for e in history.entries]
                assert "submit_attempt_failed" not in kinds and "message_rerouted" not in kinds, kinds
                routed = next(e.event.message_routed for e in history.entries if e.event.HasField("message_routed"))
                assert routed.carrier == "smsc-sim"
            admin = ac_grpc.AdminServiceStub(channel)
            explained = await admin.ExplainRoute(ac.ExplainRouteRequest(to=f"{FAR}1"), metadata=ACCOUNT)
            assert (explained.chosen_route, explained.chosen_carrier) == ("far-first", "smsc-sim")
            far = next(c for c in explained.carriers if c.carrier == "smsc-far")
            assert not far.healthy and far.outcomes == 0
            assert (far.replicas_reporting, far.replicas_connected) == (1, 0)

            # The relay opens: smsc-far binds (its reconnect backoff is at most 10 s) and takes traffic.
            await relay.open()
            await _until_connected(platform, "smsc-far", 1.0, timeout=30)
            back = await _sent_with(stub, f"{FAR}2", 3, "bound")
            assert {m.carrier for m in back} == {"smsc-far"}

            # The relay closes with its connections: skipped again, without waiting for failures.
            await relay.close()
            await _until_connected(platform, "smsc-far", 0.0, timeout=20)
            again = await _sent_with(stub, f"{FAR}3", 3, "down again")
            assert {m.carrier for m in again} == {"smsc-sim"}
    finally:
        with contextlib.suppress(AssertionError):
            await relay.close()
        platform.stop()
