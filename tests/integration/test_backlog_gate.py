"""Backpressure at acceptance: while routing works through a backlog of QUEUED messages at
`SMSGW_ADMISSION_BACKLOG`, NORMAL sends wait for room (and are refused QUEUE_FULL, nothing
accepted, when none comes in their time) while HIGH sends go on at once; a backlog that stands
still (routing down) holds nothing for long; every message accepted is delivered once."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from smsgw.grpcx.errors import error_info_of
from smsgw.v1 import message_pb2 as mp
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.conftest import start_platform
from tests.integration.helpers import ACCOUNT, scraped_metrics, send_request, smsc_submitted

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LIMIT = 50
HIGH = mp.MessagePriority.MESSAGE_PRIORITY_HIGH


def campaign(size: int, tag: str, priority: int = mp.MessagePriority.MESSAGE_PRIORITY_NORMAL) -> api.SendBatchRequest:
    return api.SendBatchRequest(
        messages=[send_request(to=f"+1415557{n:04d}", body=f"{tag} {n}", priority=priority) for n in range(size)]
    )


async def test_normal_sends_wait_for_routings_backlog_high_ones_do_not_and_nothing_is_lost(broker, tmp_path):
    platform = await start_platform(
        broker,
        tmp_path,
        "gate",
        extra_env={
            "SMSGW_ADMISSION_BACKLOG": str(LIMIT),
            "SMSGW_ADMISSION_WAIT_MS": "30000",
            # The second campaign's 3,000 appends at once take Tansu (one record a produce
            # batch) more than the default 5 s to confirm when CI's machine is busy.
            "SMSGW_APPEND_TIMEOUT_MS": "30000",
        },
    )
    accepted: set[str] = set()
    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)

            # 1. A campaign takes the backlog past the limit (it was empty: the batch goes on).
            # Far past it: routing must not work through it before the OTP below is answered
            # (with producers that send at once, 300 were routed that fast on Tansu in CI).
            first = await stub.SendBatch(campaign(1000, "first"), metadata=ACCOUNT)
            assert all(r.HasField("accepted") for r in first.results)
            accepted |= {r.accepted.message.id for r in first.results}
            # A NORMAL send now waits while routing works through it; an OTP does not.
            normal = stub.SendMessage(send_request(to="+14155550170", body="normal"), metadata=ACCOUNT)
            await asyncio.sleep(0.01)  # the NORMAL send reaches the gate first
            otp = await stub.SendMessage(
                send_request(to="+14155550171", body="otp 123456", priority=HIGH), metadata=ACCOUNT, timeout=10
            )
            accepted.add(otp.message.id)
            assert not normal.done(), "the NORMAL send was not held behind the campaign"
            accepted.add((await asyncio.wait_for(normal, 60)).message.id)

            # 2. No room within the call's own time: refused, nothing accepted; a HIGH send goes
            # on meanwhile (a batch mixing both: tests/unit/test_intake_mixed_batch.py, where
            # the timing is the test's own, not this machine's).
            # A backlog routing takes a while to work through even on an idle machine: three
            # batches at once, of HIGH messages (never held, so none waits for another; they count
            # in the backlog like any message).
            second = await asyncio.gather(
                *(stub.SendBatch(campaign(1000, f"second {k}", HIGH), metadata=ACCOUNT) for k in range(3))
            )
            for batch in second:
                assert all(r.HasField("accepted") for r in batch.results)
                accepted |= {r.accepted.message.id for r in batch.results}
            bulk = api.SendBatchRequest(messages=[send_request(to="+14155550172", body="bulk")])
            (refused,) = (await stub.SendBatch(bulk, metadata=ACCOUNT, timeout=0.5)).results
            assert (
                refused.error.reason == "QUEUE_FULL"
                and refused.error.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            )
            assert "nothing was accepted" in refused.error.message and "HIGH" in refused.error.message
            otp2 = await stub.SendMessage(
                send_request(to="+14155550173", body="otp 654321", priority=HIGH), metadata=ACCOUNT, timeout=10
            )
            accepted.add(otp2.message.id)
            with pytest.raises(grpc.aio.AioRpcError) as single:
                await stub.SendMessage(send_request(to="+14155550174", body="bulk"), metadata=ACCOUNT, timeout=0.5)
            assert single.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            info = error_info_of(single.value)
            assert info is not None and info.reason == "QUEUE_FULL" and int(info.metadata["backlog_limit"]) >= LIMIT

            metrics = await scraped_metrics(platform.metrics_port_of("intake"))
            held = {
                dict(labels)["outcome"]: value
                for (name, labels), value in metrics.items()
                if name == "smsgw_intake_sends_held_total"
            }
            assert held["accepted"] >= 1 and held["refused"] >= 2, held

            # 3. Routing down: its backlog stands still, and holds a send only until that shows.
            while (await scraped_metrics(platform.metrics_port_of("intake")))[
                ("smsgw_intake_routing_backlog", frozenset())
            ] >= LIMIT:
                await asyncio.sleep(0.1)  # the second campaign routed (bounded by the test's timeout)
            platform.kill("routing")
            third = await stub.SendBatch(campaign(100, "third"), metadata=ACCOUNT)
            assert all(r.HasField("accepted") for r in third.results)
            accepted |= {r.accepted.message.id for r in third.results}
            started = time.monotonic()
            late = await stub.SendMessage(send_request(to="+14155550175", body="late"), metadata=ACCOUNT, timeout=20)
            assert time.monotonic() - started < 10
            accepted.add(late.message.id)
            platform.start_service("routing")

        # Every accepted message reaches the SMSC once; the refused ones never.
        deadline = time.monotonic() + 180
        while len(submitted := await smsc_submitted(platform)) < len(accepted) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        bodies = [bytes.fromhex(s["user_data_hex"]).decode("latin-1") for s in submitted]
        assert "bulk" not in bodies  # refused: never accepted
        assert len(set(bodies)) == len(bodies), "a message reached the SMSC twice"
        assert len(submitted) == len(accepted), (len(submitted), len(accepted))
    finally:
        platform.stop()
