"""Every service scales out in its own way and scales in without losing or repeating a message:
three intake replicas take messages and share one PostgreSQL message store (their projectors a
consumer group), routing, carrier-adapter and receipt run as three consumer-group members each,
while a replica of each is added and removed under load. Every message the API accepted reaches
DELIVERED, every replica answers for every message, and the SMSC receives each exactly once."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import grpc
import pytest

from smsgw.domain import status as st
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.conftest import start_platform
from tests.integration.helpers import ACCOUNT, send_request, wait_for_status
from tests.integration.postgres import postgres  # noqa: F401  (session fixture)
from tests.integration.test_reliability import _diagnose

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

PREFIX = "scale "


async def submits_per_body(control_port: int) -> dict[str, int]:
    """How many times the SMSC received each of this test's messages (GET /submitted)."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{control_port}/submitted") as response:
        submitted = await response.json()
    counts: dict[str, int] = {}
    for m in submitted:
        body = bytes.fromhex(m["user_data_hex"]).decode(errors="replace")
        if body.startswith(PREFIX):
            counts[body] = counts.get(body, 0) + 1
    return counts


async def test_replicas_added_and_removed_under_load_lose_and_repeat_nothing(
    broker,
    tmp_path,
    postgres,  # noqa: F811
):
    platform = await start_platform(
        broker,
        tmp_path,
        "scale",
        replicas={"intake": 3, "routing": 3, "receipt": 3},
        carrier_adapter_replicas=3,
        extra_env={
            "SMSGW_PROJECTION_STORE": postgres.url(postgres.new_schema("scale")),
            "SMSGW_PROJECTION_SHARED": "true",
        },
    )
    accepted: list[str] = []
    refused = 0
    stop_sending = asyncio.Event()
    try:
        channels = [grpc.aio.insecure_channel(platform.address(name)) for name in platform.replica_names("intake")]
        stubs = [api_grpc.MessagingServiceStub(channel) for channel in channels]

        async def send_steadily():
            nonlocal refused
            deadline = time.monotonic() + 120
            for i in range(800):  # bounded in count and time
                if stop_sending.is_set() or time.monotonic() > deadline:
                    return
                try:
                    reply = await stubs[i % len(stubs)].SendMessage(
                        send_request(body=f"{PREFIX}{i}"), metadata=ACCOUNT, timeout=10
                    )
                    accepted.append(reply.message.id)
                except grpc.aio.AioRpcError:
                    refused += 1
                await asyncio.sleep(0.02)

        sender = asyncio.create_task(send_steadily())
        # Scale out, then in, while messages flow: a group member joins, another leaves (SIGTERM,
        # as a scale-in does), for routing and for receipt; a carrier-adapter replica and an
        # intake replica (its projector a member of the store's group; it takes no calls here)
        # join and leave again.
        await asyncio.sleep(2)
        added_routing = await platform.add_replica("routing")
        added_intake = await platform.add_replica("intake")
        await asyncio.sleep(2)
        platform.remove_replica("routing-2")
        added_receipt = await platform.add_replica("receipt")
        added_adapter = await platform.add_replica("carrier-adapter")
        await asyncio.sleep(2)
        platform.remove_replica("receipt-3")
        platform.remove_replica(added_intake)
        await asyncio.sleep(2)
        platform.remove_replica(added_adapter)
        await asyncio.sleep(2)
        stop_sending.set()
        await sender
        assert (added_routing, added_receipt, added_intake, added_adapter) == (
            "routing-4",
            "receipt-4",
            "intake-4",
            "carrier-adapter-4",
        )
        assert len(accepted) >= 100 and refused == 0, f"{len(accepted)} accepted, {refused} refused"

        for position, message_id in enumerate(accepted):
            # Each replica answers for every message, whichever projected it.
            stub = stubs[position % len(stubs)]
            try:
                final = await wait_for_status(stub, message_id, {st.DELIVERED}, timeout=120)
            except AssertionError as stuck:
                raise AssertionError(f"{stuck}\n{await _diagnose(stubs[0], broker, platform, message_id)}") from None
            assert final.status == st.DELIVERED
        counts = await submits_per_body(platform.smsc_control_port)
        assert len(counts) == len(accepted) and set(counts.values()) == {1}, {
            body: n for body, n in counts.items() if n != 1
        }
        for channel in channels:
            await channel.close()
    finally:
        platform.stop()
