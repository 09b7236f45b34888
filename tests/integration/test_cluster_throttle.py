"""A carrier's rate limit holds for the whole cluster: with three carrier-adapter replicas bound
to one SMSC, the SMSC still sees at most the carrier's `max_tps`, not three times it. Each
replica takes the share of the limit that its partitions are of the dispatch topic."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from smsgw.domain import status as st
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.conftest import unique_prefix
from tests.integration.helpers import ACCOUNT, send_request, smsc_carrier_at, smsc_submitted, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MAX_TPS = 20.0
MESSAGES = 120


ThrottledPlatform = smsc_carrier_at(MAX_TPS)


async def test_three_replicas_send_a_carrier_no_more_than_its_max_tps_together(broker, tmp_path):
    platform = ThrottledPlatform.for_broker(
        broker,
        tmp_path,
        topic_prefix=unique_prefix("throttle"),
        auth="trusted-header",
        tls=False,
        carrier_adapter_replicas=3,
        android_phone=False,
    )
    try:
        await platform.start()
        for name in platform.adapter_replicas:
            await platform.wait_log(name, "this replica takes 4/12 of each", timeout=60)
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            started = time.monotonic()
            sent = await asyncio.gather(
                *(stub.SendMessage(send_request(body=f"paced {n}"), metadata=ACCOUNT) for n in range(MESSAGES))
            )
            await asyncio.gather(
                *(wait_for_status(stub, s.message.id, {st.SENT, st.DELIVERED}, timeout=90) for s in sent)
            )
            took = time.monotonic() - started
        submits = sorted(
            s["received_at"]
            for s in await smsc_submitted(platform)
            if s["system_id"] == "smsgw" and bytes.fromhex(s["user_data_hex"]).startswith(b"paced")
        )
        assert len(submits) == MESSAGES
        busiest = max(sum(1 for t in submits if start <= t < start + 1.0) for start in submits)
        # Each replica's bucket lets one submit through at once on top of its share.
        assert busiest <= MAX_TPS + 3, f"{busiest} submits in one second (limit {MAX_TPS} for all replicas)"
        overall = (len(submits) - 1) / (submits[-1] - submits[0])
        assert overall <= MAX_TPS * 1.1, overall
        assert took >= (MESSAGES - 3) / MAX_TPS * 0.9, "not three times the limit"
    finally:
        platform.stop()
