"""Priority lanes: a HIGH message (an OTP) sent while a campaign queues for a throttled carrier
goes to the SMSC ahead of the campaign, through every queue on the way (the adapter's parked
commands, the bind's window, its rate gate), with SMPP priority_flag 1; the campaign still
arrives whole."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from smsgw.domain import status as st
from smsgw.v1 import message_pb2 as mp
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.conftest import unique_prefix
from tests.integration.helpers import ACCOUNT, send_request, smsc_carrier_at, smsc_submitted, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MAX_TPS = 25.0
CAMPAIGN = 150  # six seconds of the carrier's rate


# A window of 10: the adapter's share for the carrier is then the setting below (20), not twice
# the dev platform's window of 50 (parking.carrier_shares).
ThrottledPlatform = smsc_carrier_at(MAX_TPS, window=10)


async def test_an_otp_sent_during_a_campaign_reaches_the_smsc_ahead_of_it(broker, tmp_path):
    platform = ThrottledPlatform.for_broker(
        broker,
        tmp_path,
        topic_prefix=unique_prefix("lanes"),
        auth="trusted-header",
        tls=False,
        android_phone=False,
        # A small share per carrier lane, so most of the campaign is parked (offsets only) and
        # the OTP must pass the parked commands too, not only the running ones.
        extra_env={"SMSGW_DISPATCH_MAX_IN_FLIGHT_PER_CARRIER": "20"},
    )
    try:
        await platform.start()
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            batch = api.SendBatchRequest(
                messages=[send_request(to=f"+1415556{n:04d}", body=f"campaign {n}") for n in range(CAMPAIGN)]
            )
            campaign = await stub.SendBatch(batch, metadata=ACCOUNT)
            assert all(r.HasField("accepted") for r in campaign.results)
            first = campaign.results[0].accepted.message.id
            # The campaign under way: the rest of it queues for the carrier's rate.
            deadline = time.monotonic() + 60
            while len(await smsc_submitted(platform)) < 10:
                assert time.monotonic() < deadline, "the campaign did not start"
                await asyncio.sleep(0.05)
            sent_at = time.monotonic()
            otp = await stub.SendMessage(
                send_request(to="+14155550199", body="otp 424242", priority=mp.MessagePriority.MESSAGE_PRIORITY_HIGH),
                metadata=ACCOUNT,
            )
            assert otp.message.priority == mp.MessagePriority.MESSAGE_PRIORITY_HIGH
            await wait_for_status(stub, otp.message.id, {st.SENT, st.DELIVERED}, timeout=30)
            otp_took = time.monotonic() - sent_at
            for result in campaign.results:
                await wait_for_status(stub, result.accepted.message.id, {st.SENT, st.DELIVERED}, timeout=60)
            normal = await stub.GetMessage(api.GetMessageRequest(id=first), metadata=ACCOUNT)
            assert normal.priority == mp.MessagePriority.MESSAGE_PRIORITY_NORMAL  # unset reads NORMAL
        submits = [s for s in await smsc_submitted(platform) if s["system_id"] == "smsgw"]
        texts = [bytes.fromhex(s["user_data_hex"]).decode() for s in submits]
        assert texts.count("otp 424242") == 1 and sum(t.startswith("campaign ") for t in texts) == CAMPAIGN
        otp_at = texts.index("otp 424242")
        behind = sum(1 for t in texts[otp_at:] if t.startswith("campaign "))
        # Without lanes the OTP waits for the whole rest of the campaign (~130 messages, 5 s);
        # with them, for the one submit holding the gate at most and its own token.
        assert behind >= CAMPAIGN // 2, f"only {behind} campaign messages went after the OTP: {texts}"
        assert otp_took < 2.0, f"the OTP took {otp_took:.2f}s to be SENT"
        flags = {t: s["priority_flag"] for t, s in zip(texts, submits, strict=True)}
        assert flags["otp 424242"] == 1 and flags["campaign 0"] == 0
    finally:
        platform.stop()
