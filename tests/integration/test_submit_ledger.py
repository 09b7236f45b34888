"""carrier-adapter killed with a submit at the SMSC and its answer not recorded: the submit ledger.

The SMSC simulator takes a submit_sm and never answers it (`/mute`), so the submit is certainly at
the carrier and certainly without an outcome when carrier-adapter is killed (SIGKILL). The replica
started after it reads the command again; the ledger tells it the attempt was made. Without the
ledger it would submit again unknowingly (the duplicate `make chaos` measured); with it, the
carrier's in_doubt policy decides, and what happened is on the message and in the metrics.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import grpc
import pytest

from smsgw.domain import status as st
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.conftest import start_platform
from tests.integration.helpers import ACCOUNT, scraped_metrics, send_request, smsc_submitted, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LONG_TEXT = ("The quick brown fox jumps over the lazy dog. " * 10)[:400]  # 3 GSM-7 parts


@pytest.fixture(scope="module")
async def platform(broker, tmp_path_factory):
    running = await start_platform(broker, tmp_path_factory.mktemp("ledger"), "ledger")
    yield running
    running.stop()


async def _mute_next_submit(platform, after: int = 0) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{platform.smsc_control_port}/mute", json={"after": after}) as response:
            assert response.status == 200, await response.text()


async def _submits_to(platform, number: str, count: int, timeout: float = 30.0) -> list[dict]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [s for s in await smsc_submitted(platform) if s["destination"] == number.lstrip("+")]
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.05)


async def _history(stub, message_id: str) -> list:
    history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=message_id), metadata=ACCOUNT)
    return [getattr(e.event, e.event.WhichOneof("payload")) for e in history.entries]


async def _killed_with_the_submit_unanswered(platform, stub, to: str, body: str, parts: int = 1) -> str:
    """Sends a message whose `parts`-th submit_sm the SMSC takes and never answers, waits until
    it has it, then kill -9 carrier-adapter and starts it again."""
    await _mute_next_submit(platform, after=parts - 1)
    reply = await stub.SendMessage(send_request(to=to, body=body), metadata=ACCOUNT)
    taken = await _submits_to(platform, to, parts)
    assert len(taken) == parts, f"the SMSC should have {parts} submit(s) to {to}: {taken}"
    await platform.restart("carrier-adapter", hard=True)
    return reply.message.id


async def test_a_submit_left_in_doubt_by_a_kill_is_reported_and_sent_again_by_a_retry_carrier(platform):
    async with grpc.aio.insecure_channel(platform.intake_address) as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        message_id = await _killed_with_the_submit_unanswered(platform, stub, "+14155550181", "in doubt, retry")

        final = await wait_for_status(stub, message_id, {st.DELIVERED}, timeout=90)
        assert final.carrier == "smsc-sim"
        # The one copy the guarantee allows (the carrier's answer was lost with the process) ...
        assert len(await _submits_to(platform, "+14155550181", 2, timeout=1)) == 2
        # ... and it is reported: on the message, and in the replica's metrics.
        failed = [p for p in await _history(stub, message_id) if type(p).__name__ == "SubmitAttemptFailed"]
        assert [(p.attempt, p.reason, p.in_doubt) for p in failed] == [(1, "ADAPTER_RESTARTED", True)]
        metrics = await scraped_metrics(platform.metrics_port)
        key = frozenset({("carrier", "smsc-sim"), ("policy", "retry")})
        assert metrics[("smsgw_carrier_restart_in_doubt_total", key)] == 1


async def test_an_at_most_once_carrier_fails_a_submit_left_in_doubt_by_a_kill_instead_of_resending(platform):
    async with grpc.aio.insecure_channel(platform.intake_address) as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        # smsc-sim-atmostonce (+1415555069x) has in_doubt: "fail".
        message_id = await _killed_with_the_submit_unanswered(platform, stub, "+14155550692", "in doubt, fail")

        final = await wait_for_status(stub, message_id, {st.FAILED}, timeout=90)
        assert (final.carrier, final.error_reason) == ("smsc-sim-atmostonce", "SUBMIT_IN_DOUBT")
        await asyncio.sleep(1.0)  # time for a (wrong) second submit
        assert len(await _submits_to(platform, "+14155550692", 2, timeout=0)) == 1
        failed = [p for p in await _history(stub, message_id) if type(p).__name__ == "SubmitAttemptFailed"]
        assert [(p.reason, p.in_doubt, p.HasField("retry_in")) for p in failed] == [("ADAPTER_RESTARTED", True, False)]


async def test_a_long_message_resumes_after_the_parts_taken_before_a_kill(platform):
    async with grpc.aio.insecure_channel(platform.intake_address) as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        # Part 1 answered, part 2 taken and never answered, then the kill.
        message_id = await _killed_with_the_submit_unanswered(platform, stub, "+14155550182", LONG_TEXT, parts=2)

        await wait_for_status(stub, message_id, {st.SENT, st.DELIVERED}, timeout=90)
        submits = await _submits_to(platform, "+14155550182", 4, timeout=5)
        # (reference, total, sequence) of each part the SMSC took: part 1 once (recorded on the ledger
        # before part 2 went out), part 2 twice (the one in doubt), part 3 once; one reference, so the
        # handset joins one message. Without the ledger all three went again under a new reference.
        concat = [tuple(s["concat"]) for s in submits]
        assert len({reference for reference, _total, _sequence in concat}) == 1, concat
        assert Counter(sequence for _reference, _total, sequence in concat) == {1: 1, 2: 2, 3: 1}, concat
