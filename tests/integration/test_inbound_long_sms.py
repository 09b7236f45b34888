"""End to end: a long SMS from a handset, delivered by the SMSC in parts, reaches the account as ONE
inbound message on WatchInbound, whatever the parts' form and order; one that never becomes whole
arrives after the reassembly timeout, marked incomplete.

Given the platform runs (all services as processes, a real broker, the SMSC simulator over real SMPP)
with a 4 s reassembly timeout, when the simulator's control API delivers a long MO part by part,
then WatchInbound shows one message per MO.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import grpc
import pytest

from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.conftest import start_platform

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REASSEMBLY_TIMEOUT = 4.0
ACCOUNT = (("x-smsgw-account", "default"),)
OUR_NUMBER = "+14155550000"  # unlisted in SMSGW_NUMBERS: the default account's
LONG_TEXT = "".join(f"{n:03d} part of a long reply " for n in range(16))  # 400 GSM characters: 3 parts


@pytest.fixture(scope="module")
async def platform(broker, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(f"long-mo-{broker.kind}")
    running = await start_platform(
        broker, run_dir, "longmo", extra_env={"SMSGW_MO_REASSEMBLY_TIMEOUT": str(REASSEMBLY_TIMEOUT)}
    )
    yield running
    running.stop()


@pytest.fixture
async def stub(platform):
    async with grpc.aio.insecure_channel(platform.intake_address) as channel:
        yield api_grpc.MessagingServiceStub(channel)


async def handset_sends(
    platform, sender: str, text: str, long_message: str, parts: list[int], reference: int | None = None
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{platform.smsc_control_port}/mo",
            json={
                "from": sender.lstrip("+"),
                "to": OUR_NUMBER.lstrip("+"),
                "text": text,
                "long_message": long_message,
                "parts": parts,
                "reference": reference,
            },
        ) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["parts"] == 3


async def messages_from(call, sender: str, *, first_within: float, then_quiet_for: float) -> list[api.InboundMessage]:
    """Every inbound message from ``sender``: the first must come within ``first_within`` seconds,
    and the stream is watched ``then_quiet_for`` seconds more, so a second one would be seen."""
    found: list[api.InboundMessage] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + first_within
    while True:
        try:
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                update = await call.read()
        except TimeoutError:
            return found
        if update.HasField("message") and getattr(update.message, "from") == sender:
            if not found:
                deadline = loop.time() + then_quiet_for
            found.append(update.message)


async def watching(stub):
    call = stub.WatchInbound(api.WatchInboundRequest(), metadata=ACCOUNT)
    await call.read()  # the starting cursor: the stream is live
    return call


async def test_a_three_part_udh_sms_arrives_as_one_message(platform, stub):
    call = await watching(stub)
    await handset_sends(platform, "+447700900301", LONG_TEXT, "udh", [1, 2, 3])
    (message,) = await messages_from(call, "+447700900301", first_within=20, then_quiet_for=1.5)
    assert message.body == LONG_TEXT and message.parts == 3 and list(message.missing_parts) == []
    assert message.to == OUR_NUMBER and message.carrier == "smsc-sim" and message.keyword == ""
    call.cancel()


async def test_sar_parts_out_of_order_and_repeated_arrive_as_one_message(platform, stub):
    call = await watching(stub)
    # Part 2 twice, as an SMSC redelivering it; the last part first.
    await handset_sends(platform, "+447700900302", LONG_TEXT, "sar", [3, 2, 2, 1])
    (message,) = await messages_from(call, "+447700900302", first_within=20, then_quiet_for=1.5)
    assert message.body == LONG_TEXT and message.parts == 3 and list(message.missing_parts) == []
    call.cancel()


async def test_a_message_missing_a_part_arrives_after_the_timeout_marked_incomplete(platform, stub):
    call = await watching(stub)
    sent_at = time.monotonic()
    await handset_sends(platform, "+447700900303", LONG_TEXT, "udh16", [3, 1])
    (message,) = await messages_from(call, "+447700900303", first_within=REASSEMBLY_TIMEOUT + 20, then_quiet_for=1.5)
    waited = time.monotonic() - sent_at
    assert waited >= REASSEMBLY_TIMEOUT - 0.5, f"emitted after {waited:.1f}s, before the timeout"
    assert list(message.missing_parts) == [2] and message.parts == 3
    assert message.body == LONG_TEXT[:153] + LONG_TEXT[306:]  # parts 1 and 3, in order
    call.cancel()


async def test_parts_meet_across_restarts_and_a_backlog_older_than_the_timeout(platform, stub, broker, request):
    """A part is durable once acknowledged: neither carrier-adapter nor receipt holds it only in
    memory. Parts that waited in the backlog longer than the timeout, behind a held part that is
    "overdue" when receipt starts again, still complete the message instead of splitting it in two.
    (receipt decides timeouts only once its backlog is read; here the backlog is short enough to be
    read before the first timer tick anyway, so this shows the outcome, not that guard alone.)"""
    if broker.kind == "tansu":
        # Seen twice in about eight full CI runs, never alone and never on Apache Kafka: after the
        # kill -9s, nothing from this sender reached WatchInbound within 60 s on Tansu. Not yet
        # diagnosed (the message now carries both services' log tails); Tansu is the fallback
        # broker (make run uses Kafka), whose known faults are in docs/brokers.md.
        request.applymarker(pytest.mark.xfail(strict=False, reason="intermittent on Tansu 0.6.0 after kill -9s"))
    call = await watching(stub)
    await handset_sends(platform, "+447700900304", LONG_TEXT, "udh", [2], reference=77)
    await asyncio.sleep(1.0)  # acknowledged to the SMSC and held by receipt within milliseconds
    platform.kill("receipt")  # kill -9: its table lives on in the changelog
    await platform.restart("carrier-adapter")  # kill -9, then start again
    await handset_sends(platform, "+447700900304", LONG_TEXT, "udh", [3, 1], reference=77)
    await asyncio.sleep(REASSEMBLY_TIMEOUT + 1.0)  # parts 3 and 1 wait in the backlog, part 2 is "overdue"
    platform.start_service("receipt")
    await platform.wait_serving("receipt", 90)
    found = await messages_from(call, "+447700900304", first_within=60, then_quiet_for=REASSEMBLY_TIMEOUT + 2)
    logs = "\n".join(f"--- {name}:\n{platform.processes[name].log_tail(40)}" for name in ("receipt", "carrier-adapter"))
    assert len(found) == 1, f"{len(found)} messages from +447700900304 (wanted 1)\n{logs}"
    (message,) = found
    assert message.body == LONG_TEXT and list(message.missing_parts) == []
    call.cancel()
