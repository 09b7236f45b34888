"""One carrier down must not stop the others.

Given the platform with the Twilio simulator stopped, when messages go to Twilio and then
to the SMSC, then the SMSC's are delivered while Twilio's wait (SENDING, retried, never
failed), and Twilio's are delivered once it is back. A restart of the adapter meanwhile
sends none of the SMSC's messages twice.
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
from tests.integration.helpers import ACCOUNT, send_request, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_a_carrier_that_is_down_holds_only_its_own_messages(broker, tmp_path):
    platform = await start_platform(broker, tmp_path, "outage")
    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            platform.kill("twilio-simulator")
            waiting = [
                (await stub.SendMessage(send_request(to="+14155550771", body=f"held {n}"), metadata=ACCOUNT)).message.id
                for n in range(5)
            ]
            # Let the Twilio commands reach the adapter first, so they are ahead of the others.
            for message_id in waiting:
                await wait_for_status(stub, message_id, {st.SENDING}, timeout=30)
            flowing = [
                (await stub.SendMessage(send_request(body=f"flows {n}"), metadata=ACCOUNT)).message.id
                for n in range(20)
            ]

            delivered = await asyncio.gather(*(wait_for_status(stub, m, {st.DELIVERED}, timeout=40) for m in flowing))
            assert {m.carrier for m in delivered} == {"smsc-sim"}
            for message_id in waiting:
                message = await stub.GetMessage(api.GetMessageRequest(id=message_id), metadata=ACCOUNT)
                assert message.status == st.SENDING, "held, neither failed nor dropped"
            history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=waiting[0]), metadata=ACCOUNT)
            attempts = [
                e.event.submit_attempt_failed
                for e in history.entries
                if e.event.WhichOneof("payload") == "submit_attempt_failed"
            ]
            assert attempts and attempts[0].reason == "NOT_CONNECTED" and not attempts[0].in_doubt

            # kill -9 of the adapter while Twilio's commands hold the partitions' commits: the
            # restarted adapter reads those partitions from the held offsets again, and must skip
            # the SMSC's commands it had finished (the commit's metadata names them), not
            # submit them a second time.
            await platform.restart("carrier-adapter")
            platform.start_service("twilio-simulator")
            back = await asyncio.gather(*(wait_for_status(stub, m, {st.DELIVERED}, timeout=60) for m in waiting))
            assert {m.carrier for m in back} == {"twilio-sim"}

            submits = Counter(
                bytes.fromhex(m["user_data_hex"]).decode("latin-1") for m in await _smsc_submits(platform)
            )
            bodies = [f"flows {n}" for n in range(20)]
            if broker.keeps_commit_metadata:
                assert {body: submits[body] for body in bodies} == dict.fromkeys(bodies, 1)
            else:
                # Tansu drops commit metadata (test_brokers.py): the SMSC's messages that sat
                # behind Twilio's in a partition go out again. Nothing is lost.
                assert all(submits[body] >= 1 for body in bodies)
    finally:
        platform.stop()


async def _smsc_submits(platform) -> list[dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{platform.smsc_control_port}/submitted") as response:
            assert response.status == 200
            return await response.json()
