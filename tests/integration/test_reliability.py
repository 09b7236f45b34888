"""What a client was told is accepted is never lost: not when a service's local
state is wiped, and not when any one service is killed while messages flow."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from smsgw.domain import status as st
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.conftest import start_platform
from tests.integration.helpers import ACCOUNT, send_request, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
SERVICES = ("intake", "routing", "carrier-adapter", "receipt")


async def _answers(stub, ids):
    """Everything a client can read about these messages, as plain data."""
    messages = [MessageToDict(await stub.GetMessage(api.GetMessageRequest(id=i), metadata=ACCOUNT)) for i in ids]
    histories = [MessageToDict(await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=i), metadata=ACCOUNT))
                 for i in ids]
    listed = MessageToDict(await stub.ListMessages(api.ListMessagesRequest(page_size=1000), metadata=ACCOUNT))
    return messages, histories, listed


async def test_answers_are_identical_after_every_service_loses_its_local_state(broker, tmp_path):
    platform = await start_platform(broker, tmp_path, "rebuild")
    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            delivered = [(await stub.SendMessage(send_request(body=f"m{i}"), metadata=ACCOUNT)).message.id
                         for i in range(5)]
            held_request = send_request(body="held for later")
            held_request.send_at.FromDatetime(datetime.now(timezone.utc) + timedelta(hours=1))
            held = (await stub.SendMessage(held_request, metadata=ACCOUNT)).message.id
            for message_id in delivered:
                await wait_for_status(stub, message_id, {st.DELIVERED})
            await asyncio.sleep(3)  # let faust commit and write its changelogs
            before = await _answers(stub, delivered + [held])

        # Every service dies at once and its local state goes with it.
        for name in SERVICES:
            platform.kill(name)
        shutil.rmtree(platform.state_dir, ignore_errors=True)
        for name in SERVICES:
            platform.start_service(name)
        await asyncio.gather(*(platform.wait_serving(name, 120) for name in SERVICES))

        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            after = await _answers(stub, delivered + [held])
            assert after == before
            # routing rebuilt its table from the changelog: the held message is still held, and cancelable.
            canceled = await stub.CancelMessage(api.CancelMessageRequest(id=held), metadata=ACCOUNT)
            assert canceled.status == st.CANCELED
    finally:
        platform.stop()


async def test_killing_any_one_service_while_messages_flow_loses_no_accepted_message(broker, tmp_path):
    platform = await start_platform(broker, tmp_path, "chaos")
    accepted: list[str] = []
    refused = 0
    stop_sending = asyncio.Event()

    async def send_steadily(stub):
        nonlocal refused
        deadline = time.monotonic() + 150
        # Bounded in count and time.
        for i in range(600):
            if stop_sending.is_set() or time.monotonic() > deadline:
                return
            try:
                reply = await stub.SendMessage(send_request(body=f"chaos {i}"), metadata=ACCOUNT, timeout=5)
                accepted.append(reply.message.id)
            except grpc.aio.AioRpcError:
                refused += 1  # intake down or broker slow: not accepted, so not owed
            await asyncio.sleep(0.05)

    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            sender = asyncio.create_task(send_steadily(stub))
            for name in ("routing", "carrier-adapter", "receipt", "intake"):
                await asyncio.sleep(1.5)
                await platform.restart(name, hard=True, timeout=120)
            await asyncio.sleep(1.5)
            stop_sending.set()
            await sender

        assert len(accepted) >= 50, f"only {len(accepted)} accepted ({refused} refused)"
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            final = {}
            for message_id in accepted:
                message = await wait_for_status(stub, message_id, {st.DELIVERED}, timeout=120)
                final[message_id] = message.status
        assert set(final.values()) == {st.DELIVERED} and len(final) == len(accepted)
    finally:
        platform.stop()


async def test_receipts_that_overtake_their_submit_result_are_all_matched(broker, tmp_path):
    """The SMSC answers each submit with an immediate receipt (delay 0): many receipts reach
    receipt before the submit's correlation does. Every one must still be matched."""
    platform = await start_platform(broker, tmp_path, "race", dlr_delay=0.0)
    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            ids = await asyncio.gather(*(stub.SendMessage(send_request(body=f"race {i}"), metadata=ACCOUNT)
                                         for i in range(60)))
            finals = [await wait_for_status(stub, r.message.id, {st.DELIVERED}, timeout=60) for r in ids]
        assert len(finals) == 60
        early = platform.processes["receipt"].log_path.read_text().count("arrived before its submit")
        print(f"receipts that overtook their submit: {early} of 60")
    finally:
        platform.stop()
