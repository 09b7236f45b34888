"""Carrier metrics scraped over real HTTP on 127.0.0.1, for each carrier kind.

Given a carrier client against its simulator (the Twilio simulator, simulated phones) and
the adapter's metrics endpoint, when traffic flows or the far side goes away, then /metrics,
parsed with prometheus_client's text parser, shows the session state and counters moving.
The last test scrapes the real carrier-adapter process of the platform.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from smsgw.domain import status as st
from smsgw.http_provider.twilio_signature import compute_signature
from smsgw.metrics_endpoint import MetricsEndpoint
from smsgw.v1 import device_gateway_pb2 as dg
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_carrier_adapter.carrier import CarrierUnavailable
from smsgw_carrier_adapter.metrics import CarrierCollector
from smsgw_dev.platform import PHONE_DEVICE_ID, PHONES_PREFIX
from smsgw_dev.simulators.twilio import DEFAULT_ACCOUNT_SID
from tests.integration.helpers import ACCOUNT, send_request, wait_for_status
from tests.integration.test_device_gateway import command, gateway
from tests.integration.test_twilio_adapter import CARRIER as TWILIO
from tests.integration.test_twilio_adapter import _post, callbacks_for, dispatch, rig

pytestmark = pytest.mark.timeout(60)

R = dg.SmsManagerResult
PHONES = "phones"


class Scrape(dict):
    """{(sample name, frozenset of labels): value} of one GET /metrics."""

    def __call__(self, name: str, **labels) -> float:
        return self[(name, frozenset(labels.items()))]


async def scrape(port: int) -> Scrape:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
    return Scrape(
        {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
    )


async def scrape_until(port: int, predicate, timeout: float = 5.0) -> Scrape:
    """Scrapes until predicate(scrape) holds (reports are recorded off the read loop)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape(port)
        if predicate(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.05)


@asynccontextmanager
async def metrics_of(*clients) -> AsyncIterator[int]:
    server = MetricsEndpoint([CarrierCollector(clients)], service="carrier-adapter", host="127.0.0.1", port=0)
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop()


# --- Twilio-compatible HTTP carrier -------------------------------------------------------------


async def test_twilio_carrier_up_down_and_counters_against_the_simulator():
    async with rig() as r, metrics_of(r.client) as port:
        m = await scrape(port)
        assert m("smsgw_carrier_info", carrier=TWILIO, kind="twilio") == 1
        assert m("smsgw_carrier_bound", carrier=TWILIO, session="api") == 1  # nothing failed yet
        assert m("smsgw_carrier_submits_total", carrier=TWILIO) == 0

        # Given an accepted message, then its submit, its TPS and (once its callbacks came) its receipt.
        sid = (await r.client.submit(dispatch())).carrier_ids[0]
        m = await scrape(port)
        assert m("smsgw_carrier_submits_total", carrier=TWILIO) == 1
        assert m("smsgw_carrier_tps", carrier=TWILIO) == pytest.approx(0.1)  # 1 accepted over 10 s
        assert m("smsgw_carrier_in_flight", carrier=TWILIO) == 0
        await callbacks_for(r.simulator, sid, 2)  # "sent", then "delivered"
        m = await scrape(port)
        assert m("smsgw_carrier_callbacks_accepted_total", carrier=TWILIO) == 2
        assert m("smsgw_carrier_receipts_total", carrier=TWILIO) == 1

        # A 429 with Retry-After: throttled and waited out; the provider answered, so still up.
        r.simulator.fail_next(1, status=429, retry_after=0.2)
        with pytest.raises(CarrierUnavailable, match="429"):
            await r.client.submit(dispatch())
        m = await scrape(port)
        assert m("smsgw_carrier_throttled_total", carrier=TWILIO) == 1
        assert m("smsgw_carrier_retry_after_waits_total", carrier=TWILIO) == 1
        assert m("smsgw_carrier_bound", carrier=TWILIO, session="api") == 1

        # A 503: down; the next answered request: up again.
        r.simulator.fail_next(1, status=503)
        with pytest.raises(CarrierUnavailable, match="503"):
            await r.client.submit(dispatch())
        m = await scrape(port)
        assert m("smsgw_carrier_bound", carrier=TWILIO, session="api") == 0
        assert m("smsgw_carrier_request_errors_total", carrier=TWILIO) == 1
        assert (await r.client.submit(dispatch(to="+1415"))).failure.carrier_error == "21211"  # refused for good
        m = await scrape(port)
        assert m("smsgw_carrier_bound", carrier=TWILIO, session="api") == 1
        assert m("smsgw_carrier_submit_failures_total", carrier=TWILIO) == 1

        # A callback with a bad signature is counted as rejected.
        params = {"MessageSid": "SM" + "f" * 32, "MessageStatus": "delivered", "AccountSid": DEFAULT_ACCOUNT_SID}
        url = r.config.status_callback_url
        assert await _post(url, params, compute_signature("wrong-token", url, params)) == 403
        assert (await scrape(port))("smsgw_carrier_callbacks_rejected_total", carrier=TWILIO) == 1

        # The provider goes away: down, and the failed request counted.
        await r.simulator.stop()
        with pytest.raises(CarrierUnavailable):
            await r.client.submit(dispatch())
        m = await scrape(port)
        assert m("smsgw_carrier_bound", carrier=TWILIO, session="api") == 0
        assert m("smsgw_carrier_request_errors_total", carrier=TWILIO) == 2
        assert m("smsgw_carrier_submits_total", carrier=TWILIO) == 5
        assert m("smsgw_carrier_in_flight", carrier=TWILIO) == 0


# --- Android phones -----------------------------------------------------------------------------


async def test_android_sessions_follow_the_phones_and_a_send_moves_the_counters():
    async with gateway() as gw, metrics_of(gw.client) as port:
        m = await scrape(port)
        assert m("smsgw_carrier_info", carrier=PHONES, kind="android") == 1
        assert {m("smsgw_carrier_bound", carrier=PHONES, session=d) for d in ("phone-a", "phone-b", "phone-c")} == {0}

        phone = await gw.phone("phone-a")
        m = await scrape(port)
        assert m("smsgw_carrier_bound", carrier=PHONES, session="phone-a") == 1
        assert m("smsgw_carrier_bound", carrier=PHONES, session="phone-b") == 0

        assert (await gw.client.submit(command())).accepted
        m = await scrape_until(port, lambda s: s("smsgw_carrier_receipts_total", carrier=PHONES) == 1)
        assert m("smsgw_carrier_receipts_total", carrier=PHONES) == 1  # its delivery report
        assert m("smsgw_carrier_submits_total", carrier=PHONES) == 1
        assert m("smsgw_carrier_commands_accepted_total", carrier=PHONES) == 1
        assert m("smsgw_carrier_sends_ok_total", carrier=PHONES) == 1
        assert m("smsgw_carrier_tps", carrier=PHONES) == pytest.approx(0.1)
        assert m("smsgw_carrier_in_flight", carrier=PHONES) == 0

        # A message the phone holds (accepted, not sent yet) is in flight.
        phone.send_gate.clear()
        held = asyncio.create_task(gw.client.submit(command()))
        m = await scrape_until(port, lambda s: s("smsgw_carrier_in_flight", carrier=PHONES) == 1)
        assert m("smsgw_carrier_in_flight", carrier=PHONES) == 1
        phone.send_gate.set()
        assert (await held).accepted

        await phone.send_mo("+14155550123", "hello gateway")
        m = await scrape_until(port, lambda s: s("smsgw_carrier_inbound_total", carrier=PHONES) == 1)
        assert m("smsgw_carrier_inbound_total", carrier=PHONES) == 1

        # The server notices a dropped stream a moment after the phone drops it.
        await phone.disconnect()
        m = await scrape_until(port, lambda s: s("smsgw_carrier_bound", carrier=PHONES, session="phone-a") == 0)
        assert m("smsgw_carrier_bound", carrier=PHONES, session="phone-a") == 0
        assert m("smsgw_carrier_reconnects_total", carrier=PHONES) == 0
        await phone.connect()
        m = await scrape_until(port, lambda s: s("smsgw_carrier_bound", carrier=PHONES, session="phone-a") == 1)
        assert m("smsgw_carrier_bound", carrier=PHONES, session="phone-a") == 1
        assert m("smsgw_carrier_reconnects_total", carrier=PHONES) == 1


async def test_android_throttling_failures_and_redispatch_are_counted():
    async with gateway(ack_timeout=30.0) as gw, metrics_of(gw.client) as port:
        await gw.phone(
            "phone-a",
            results={
                r"^\+1415555066": R.SMS_MANAGER_RESULT_ERROR_LIMIT_EXCEEDED,
                r"^\+1415555065": R.SMS_MANAGER_RESULT_ERROR_SHORT_CODE_NEVER_ALLOWED,
            },
        )
        with pytest.raises(CarrierUnavailable):  # Android's send limit, on the only phone
            await gw.client.submit(command(to="+14155550661"))
        assert not (await gw.client.submit(command(to="+14155550651"))).accepted  # refused for good
        m = await scrape(port)
        assert m("smsgw_carrier_throttled_total", carrier=PHONES) == 1
        assert m("smsgw_carrier_submit_failures_total", carrier=PHONES) == 1

        # A phone that takes a command and drops before accepting it: the message goes to another phone.
        silent = await gw.phone("phone-b", ack=False)
        task = asyncio.create_task(gw.client.submit(command()))
        async with asyncio.timeout(5):
            while not silent.received:
                await asyncio.sleep(0.01)
        await silent.disconnect()
        assert (await asyncio.wait_for(task, 10)).accepted
        m = await scrape(port)
        assert m("smsgw_carrier_redispatches_total", carrier=PHONES) == 1
        assert m("smsgw_carrier_commands_lost_total", carrier=PHONES) == 1
        assert m("smsgw_carrier_sends_ok_total", carrier=PHONES) == 1
        assert m("smsgw_carrier_submits_total", carrier=PHONES) == 4  # 2 refused, the lost one, its resend
        assert m("smsgw_carrier_bound", carrier=PHONES, session="phone-b") == 0


# --- the platform's carrier-adapter process -----------------------------------------------------


async def test_the_carrier_adapter_process_exposes_every_carrier_kind(platform):
    async with grpc.aio.insecure_channel(platform.intake_address) as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        # The phones carrier sends for account "default" only (Platform.carriers()).
        for to, account in (("+14155550770", ACCOUNT), (PHONES_PREFIX + "0123", (("x-smsgw-account", "default"),))):
            reply = await stub.SendMessage(send_request(to=to, body="metrics"), metadata=account)
            await wait_for_status(stub, reply.message.id, {st.DELIVERED}, timeout=30, metadata=account)
    m = await scrape(platform.metrics_port)
    kinds = {dict(labels)["carrier"]: dict(labels)["kind"] for name, labels in m if name == "smsgw_carrier_info"}
    assert kinds["smsc-sim"] == "smpp" and kinds["twilio-sim"] == "twilio" and kinds["phones"] == "android"
    assert m("smsgw_carrier_bound", carrier="twilio-sim", session="api") == 1
    assert m("smsgw_carrier_submits_total", carrier="twilio-sim") >= 1
    assert m("smsgw_carrier_bound", carrier="phones", session=PHONE_DEVICE_ID) == 1
    assert m("smsgw_carrier_sends_ok_total", carrier="phones") >= 1
    assert m("smsgw_carrier_bound", carrier="smsc-sim", session="transceiver") == 1
