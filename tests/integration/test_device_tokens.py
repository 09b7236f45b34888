"""Android gateway phones' tokens issued through the admin API: an account event that every
carrier-adapter reads, bound to one account, one of its Android carriers and one device id,
usable on DeviceGatewayService only, revoked at once. Real processes on each broker; the phone
is the device simulator over real gRPC."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from smsgw.domain import status as st
from smsgw.grpcx.errors import error_info_of
from smsgw.v1 import accounts_pb2 as ac
from smsgw.v1 import accounts_pb2_grpc as ac_grpc
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_dev.platform import PHONE_NUMBER, PHONES_PREFIX
from smsgw_dev.simulators.android_device import AndroidDeviceSimulator
from tests.conftest import start_platform
from tests.integration.helpers import send_request, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CARRIER = "phones"  # the platform's Android carrier, of account "default"


@pytest.fixture(scope="module")
async def platform(broker, tmp_path_factory):
    # No configured phone: the only phones here are the ones given tokens below.
    running = await start_platform(
        broker, tmp_path_factory.mktemp(f"device-tokens-{broker.kind}"), "devtok", auth="api-keys", android_phone=False
    )
    yield running
    running.stop()


class Admin:
    def __init__(self, platform, channel: grpc.aio.Channel):
        self.stub = ac_grpc.AdminServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {platform.admin_key}"),)

    async def issue(self, account: str, device_id: str, carrier: str = CARRIER) -> ac.IssueDeviceTokenResponse:
        return await self.stub.IssueDeviceToken(
            ac.IssueDeviceTokenRequest(account_id=account, carrier=carrier, device_id=device_id),
            metadata=self.metadata,
            timeout=10,
        )

    async def revoke(self, token_id: str) -> ac.RevokeDeviceTokenResponse:
        return await self.stub.RevokeDeviceToken(
            ac.RevokeDeviceTokenRequest(token_id=token_id, reason="phone lost"), metadata=self.metadata, timeout=10
        )


def phone(platform, token: str, device_id: str) -> AndroidDeviceSimulator:
    return AndroidDeviceSimulator(
        platform.address("carrier-adapter"), token, device_id, phone_number=PHONE_NUMBER, delivery_delay=0.05
    )


async def connect_when_admitted(device: AndroidDeviceSimulator, timeout: float = 20.0) -> None:
    """The token reaches carrier-adapter through the log: retries UNAUTHENTICATED until then (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await device.connect()
            return
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAUTHENTICATED or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def refused(device: AndroidDeviceSimulator) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await device.connect()
    return error.value


async def test_an_issued_token_lets_its_phone_carry_the_accounts_messages_and_nothing_else(platform):
    key = await platform.api_key("default")
    async with platform.intake_channel() as channel:
        admin = Admin(platform, channel)
        issued = await admin.issue("default", "issued-pixel")
        assert issued.secret.startswith(f"sgd_{issued.token.id}_")
        assert (issued.token.account_id, issued.token.carrier, issued.token.device_id) == (
            "default",
            CARRIER,
            "issued-pixel",
        )
        device = phone(platform, issued.secret, "issued-pixel")
        try:
            await connect_when_admitted(device)
            messaging = api_grpc.MessagingServiceStub(channel)
            metadata = (("authorization", f"Bearer {key}"),)
            sent = await messaging.SendMessage(
                send_request(to=f"{PHONES_PREFIX}0123", body="via a phone"), metadata=metadata
            )
            await wait_for_status(messaging, sent.message.id, {st.DELIVERED}, metadata=metadata)
            assert sent.message.id in device.sent

            # The token opens DeviceGatewayService only: intake knows no such credential.
            with pytest.raises(grpc.aio.AioRpcError) as api_call:
                await messaging.ListMessages(
                    api.ListMessagesRequest(), metadata=(("authorization", f"Bearer {issued.secret}"),)
                )
            assert api_call.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # ...and it names its own device only.
            assert (await refused(phone(platform, issued.secret, "another-phone"))).code() == (
                grpc.StatusCode.UNAUTHENTICATED
            )
        finally:
            await device.close()


async def test_one_live_token_per_phone_and_another_accounts_carrier_stays_closed(platform):
    await platform.api_key("default")
    await platform.api_key("other-tenant")
    async with platform.intake_channel() as channel:
        admin = Admin(platform, channel)
        await admin.issue("default", "twice")
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await admin.issue("default", "twice")
        assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert error_info_of(again.value).reason == "DEVICE_TOKEN_EXISTS"
        assert "revoke it first" in again.value.details()

        # An admin may issue it, but carrier-adapter admits a phone only to a carrier of the token's account.
        foreign = await admin.issue("other-tenant", "intruder")
        await platform.wait_log("carrier-adapter", f"device token {foreign.token.id} of account 'other-tenant'", 20)
        assert (await refused(phone(platform, foreign.secret, "intruder"))).code() == grpc.StatusCode.UNAUTHENTICATED

        for bad, field in ((dict(device_id="bad id!"), "device_id"), (dict(carrier="Not A Carrier"), "carrier")):
            request = ac.IssueDeviceTokenRequest(account_id="default", carrier=CARRIER, device_id="ok")
            for name, value in bad.items():
                setattr(request, name, value)
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await admin.stub.IssueDeviceToken(request, metadata=admin.metadata, timeout=10)
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert invalid.value.details().startswith(f"{field}:")


async def test_revoking_ends_the_phones_stream_and_survives_a_restart(platform):
    await platform.api_key("default")
    async with platform.intake_channel() as channel:
        admin = Admin(platform, channel)
        kept = await admin.issue("default", "kept-phone")
        lost = await admin.issue("default", "lost-phone")
        device = phone(platform, lost.secret, "lost-phone")
        await connect_when_admitted(device)
        revoked = await admin.revoke(lost.token.id)
        assert revoked.token.HasField("revoked_at")
        deadline = time.monotonic() + 20
        while device.end_status is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await device.close()
        assert device.end_status is not None and device.end_status[0] == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in device.end_status[1]
        assert (await refused(phone(platform, lost.secret, "lost-phone"))).code() == grpc.StatusCode.UNAUTHENTICATED

        listed = await admin.stub.ListDeviceTokens(
            ac.ListDeviceTokensRequest(account_id="default"), metadata=admin.metadata, timeout=10
        )
        states = {t.id: t.HasField("revoked_at") for t in listed.tokens}
        assert states[kept.token.id] is False and states[lost.token.id] is True

    # The tokens are in the log, not in carrier-adapter's memory: a kill -9 keeps both decisions.
    await platform.restart("carrier-adapter")
    survivor = phone(platform, kept.secret, "kept-phone")
    try:
        await connect_when_admitted(survivor)
    finally:
        await survivor.close()
    assert (await refused(phone(platform, lost.secret, "lost-phone"))).code() == grpc.StatusCode.UNAUTHENTICATED
