"""The Twilio carrier (adapter + callback server) against the Twilio simulator, over real HTTP on 127.0.0.1.

Given a simulator and the adapter's callback server, when a message is submitted,
then the answer, the status callbacks and what reaches CarrierReports are
checked. CarrierReports is our own interface (the dispatcher implements it):
here a recorder stands in for it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import aiohttp.web
import grpc
import pytest

from smsgw.brokers._base import free_port
from smsgw.domain import status as st
from smsgw.http_provider.twilio_signature import SIGNATURE_HEADER, compute_signature
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_carrier_adapter.carrier import CarrierUnavailable
from smsgw_carrier_adapter.twilio.callbacks import CallbackServer
from smsgw_carrier_adapter.twilio.client import TwilioCarrierClient
from smsgw_carrier_adapter.twilio.config import TwilioCarrier
from smsgw_dev.platform import Platform
from smsgw_dev.simulators.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, DeliveryRule, TwilioSimulator
from tests.conftest import start_platform
from tests.integration.helpers import ACCOUNT, send_request, wait_for_status

pytestmark = pytest.mark.timeout(60)

DS = ev.DeliveryState
CARRIER = "twilio-sim"
OUR_NUMBER = "+14155550199"
SID = re.compile(r"^SM[0-9a-f]{32}$")


@dataclass
class RecordedReports:
    """Records what a carrier reports; optionally refuses the first N receipts (to test retries)."""

    refuse_first: int = 0
    receipts: list[tuple] = field(default_factory=list)
    inbound: list[tuple] = field(default_factory=list)
    media: list[list[str]] = field(default_factory=list)  # media URLs of each inbound, in order
    refused: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_receipt(
        self, carrier: str, carrier_message_id: str, state: int, carrier_state: str = "", error: str = ""
    ) -> None:
        if self.refused < self.refuse_first:
            self.refused += 1
            raise RuntimeError("broker unavailable (simulated)")
        self.receipts.append((carrier, carrier_message_id, state, carrier_state, error))
        self.changed.set()

    async def on_inbound(
        self,
        carrier: str,
        source: str,
        destination: str,
        text: str,
        parts: int = 1,
        *,
        concat_reference: int = 0,
        part_number: int = 0,
        total_parts: int = 0,
        media_urls: Sequence[str] = (),
    ) -> None:
        self.inbound.append((carrier, source, destination, text, parts))
        self.media.append(list(media_urls))
        self.changed.set()

    async def wait(self, predicate, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Rig:
    simulator: TwilioSimulator
    server: CallbackServer
    client: TwilioCarrierClient
    reports: RecordedReports

    @property
    def config(self) -> TwilioCarrier:
        return self.client.config


@asynccontextmanager
async def rig(
    *, simulator: dict | None = None, carrier: dict | None = None, reports: RecordedReports | None = None
) -> AsyncIterator[Rig]:
    sim = TwilioSimulator(callback_delay=0.05, callback_retry_interval=0.1, **(simulator or {}))
    await sim.start()
    reports = reports or RecordedReports()
    port = free_port()
    config = TwilioCarrier.model_validate(
        {
            "name": CARRIER,
            "kind": "twilio",
            "base_url": sim.base_url,
            "account_sid": DEFAULT_ACCOUNT_SID,
            "auth_token": DEFAULT_AUTH_TOKEN,
            "from_number": OUR_NUMBER,
            "status_callback_base_url": f"http://127.0.0.1:{port}",
            "request_timeout": 5.0,
            **(carrier or {}),
        }
    )
    client = TwilioCarrierClient(config, reports)
    server = CallbackServer([client], host="127.0.0.1", port=port)
    await server.start()
    await client.start()
    try:
        yield Rig(sim, server, client, reports)
    finally:
        await client.close()
        await server.stop()
        await sim.stop()


class _WithMedia:
    """A DispatchCommand with media_urls, until the field exists in the generated stubs."""

    def __init__(self, command: cp.DispatchCommand, media_urls: list[str]):
        self._command = command
        self.media_urls = media_urls

    def __getattr__(self, name):
        return getattr(self._command, name)


def dispatch(to: str = "+14155550100", body: str = "hello", *, sender: str = "", media_urls=(), expires_in=None):
    command = cp.DispatchCommand(
        command_id=str(uuid.uuid4()),
        message_id=str(uuid.uuid4()),
        account_id="acct-test",
        carrier=CARRIER,
        to=to,
        content=ev.MessageContent(text=body),
        segments=1,
        sequence=2,
    )
    setattr(command, "from", sender)
    if expires_in is not None:
        command.expires_at.FromDatetime(datetime.now(UTC) + expires_in)
    if not media_urls:
        return command
    if "media_urls" in cp.DispatchCommand.DESCRIPTOR.fields_by_name:
        command.media_urls.extend(media_urls)
        return command
    return _WithMedia(command, list(media_urls))


def statuses_of(callbacks, sid):
    return [(c.params["MessageStatus"], c.http_status) for c in callbacks if c.params.get("MessageSid") == sid]


async def callbacks_for(simulator: TwilioSimulator, sid: str, count: int):
    """The status callbacks of `sid` and their answers, once `count` were answered (the receiver may record
    a report a moment before the simulator sees the answer)."""
    await simulator.wait_for_callbacks(lambda calls: len(statuses_of(calls, sid)) >= count)
    return statuses_of(simulator.callbacks, sid)


# --- submit -------------------------------------------------------------------------------------


async def test_accepted_message_gets_its_sid_then_a_delivered_receipt_via_the_signed_callback():
    async with rig() as r:
        result = await r.client.submit(dispatch(body="hello twilio", expires_in=timedelta(hours=1)))

        assert result.accepted and len(result.carrier_ids) == 1
        sid = result.carrier_ids[0]
        assert SID.match(sid)
        sent = r.simulator.messages[sid]
        assert (sent.to, sent.from_, sent.body) == ("+14155550100", OUR_NUMBER, "hello twilio")
        assert sent.status_callback == f"{r.config.status_callback_base_url}/callbacks/{CARRIER}/status"
        assert 3500 <= int(dict(sent.form)["ValidityPeriod"]) <= 3600

        await r.reports.wait(lambda rep: rep.receipts)
        assert r.reports.receipts == [(CARRIER, sid, DS.DELIVERY_STATE_DELIVERED, "delivered", "")]
        # "sent" was taken (2xx) but is not a delivery fact: nothing reported for it.
        assert await callbacks_for(r.simulator, sid, 2) == [("sent", 204), ("delivered", 204)]


@pytest.mark.parametrize(
    "sender_source,sender,sent_from",
    [
        ("configured", "+14155550111", OUR_NUMBER),  # the account's number, whatever the message says
        ("message", "+14155550111", "+14155550111"),
        ("message", "", OUR_NUMBER),
    ],
)
async def test_sender_source(sender_source, sender, sent_from):
    async with rig(carrier={"sender_source": sender_source}) as r:
        result = await r.client.submit(dispatch(sender=sender))
        assert r.simulator.messages[result.carrier_ids[0]].from_ == sent_from


async def test_messaging_service_without_from_number():
    service = "MG" + "1" * 32
    async with rig(carrier={"from_number": None, "messaging_service_sid": service}) as r:
        result = await r.client.submit(dispatch(sender="+14155550000"))
        message = r.simulator.messages[result.carrier_ids[0]]
        assert (message.from_, message.messaging_service_sid) == (None, service)
        await r.reports.wait(lambda rep: rep.receipts)


@pytest.mark.parametrize(
    "rule,state,error",
    [
        (DeliveryRule(r"^\+1415555067\d$", "undelivered", 30003), DS.DELIVERY_STATE_UNDELIVERABLE, "30003"),
        (DeliveryRule(r"^\+1415555067\d$", "undelivered", 30005), DS.DELIVERY_STATE_UNDELIVERABLE, "30005"),
        (DeliveryRule(r"^\+1415555067\d$", "undelivered", 30007), DS.DELIVERY_STATE_REJECTED, "30007"),
        (DeliveryRule(r"^\+1415555067\d$", "failed", 30008), DS.DELIVERY_STATE_REJECTED, "30008"),
    ],
)
async def test_undelivered_and_failed_reports_carry_twilio_error(rule, state, error):
    async with rig(simulator={"delivery_rules": [rule]}) as r:
        result = await r.client.submit(dispatch(to="+14155550672"))
        sid = result.carrier_ids[0]
        await r.reports.wait(lambda rep: rep.receipts)
        assert r.reports.receipts == [(CARRIER, sid, state, rule.status, error)]


@pytest.mark.parametrize(
    "simulator,to,code",
    [
        ({}, "+1415", "21211"),
        ({"invalid_pattern": r"^\+1415555000"}, "+14155550001", "21211"),
        ({"unsubscribed_pattern": r"^\+14155550002$"}, "+14155550002", "21610"),
        ({"landline_pattern": r"^\+14155550003$"}, "+14155550003", "21614"),
    ],
)
async def test_invalid_numbers_are_permanent_failures_with_the_twilio_code(simulator, to, code):
    async with rig(simulator=simulator) as r:
        result = await r.client.submit(dispatch(to=to))

        assert not result.accepted
        assert result.failure.carrier == CARRIER
        assert result.failure.error_code == 500 and result.failure.reason == "CARRIER_REJECTED"
        assert result.failure.carrier_error == code
        assert code in result.failure.message
        assert r.simulator.messages == {}


async def test_429_with_retry_after_waits_then_raises_unavailable_and_the_retry_succeeds():
    async with rig() as r:
        r.simulator.fail_next(1, status=429, retry_after=1)
        started = time.monotonic()
        with pytest.raises(CarrierUnavailable, match="429"):
            await r.client.submit(dispatch())
        assert time.monotonic() - started >= 0.95
        assert r.simulator.throttled == 1 and r.simulator.messages == {}

        result = await r.client.submit(dispatch())
        assert result.accepted and SID.match(result.carrier_ids[0])


async def test_after_a_429_other_submits_to_the_carrier_wait_too():
    async with rig(simulator={"throttle_every": 1, "retry_after": 1}) as r:
        first = asyncio.ensure_future(r.client.submit(dispatch()))
        async with asyncio.timeout(5):
            while r.client.paused_for == 0:  # until the 429 is in and the carrier paused
                await asyncio.sleep(0.01)
        r.simulator.throttle_every = 0
        paused_for = r.client.paused_for
        started = time.monotonic()
        second = await r.client.submit(dispatch())
        assert time.monotonic() - started >= paused_for - 0.05 > 0.5
        assert second.accepted
        with pytest.raises(CarrierUnavailable):
            await first


async def test_rate_limit_answers_429_above_the_limit():
    async with rig(simulator={"rate_limit": 2, "retry_after": 0}, carrier={"retry_after_default": 0}) as r:
        await r.client.submit(dispatch())
        await r.client.submit(dispatch())
        with pytest.raises(CarrierUnavailable, match="429"):
            await r.client.submit(dispatch())


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_unavailable_and_nothing_is_lost(status):
    async with rig() as r:
        r.simulator.fail_next(2, status=status)
        for _ in range(2):
            with pytest.raises(CarrierUnavailable, match=str(status)):
                await r.client.submit(dispatch())
        assert r.simulator.server_errors == 2
        assert (await r.client.submit(dispatch())).accepted


async def test_periodic_server_errors():
    async with rig(simulator={"error_every": 2}) as r:
        assert (await r.client.submit(dispatch())).accepted
        with pytest.raises(CarrierUnavailable):
            await r.client.submit(dispatch())
        assert (await r.client.submit(dispatch())).accepted


async def test_wrong_credentials_block_instead_of_failing_messages():
    async with rig(carrier={"auth_token": "not-the-token"}) as r:
        with pytest.raises(CarrierUnavailable, match="401"):
            await r.client.submit(dispatch())


async def test_provider_down_is_unavailable():
    async with rig() as r:
        await r.simulator.stop()
        with pytest.raises(CarrierUnavailable):
            await r.client.submit(dispatch())


async def test_the_provider_going_away_mid_traffic_and_coming_back_loses_and_duplicates_nothing():
    # Retried as the dispatcher does; a refused connection sent nothing, so it is not in doubt
    # and a retry cannot make a second message at the provider.
    async with rig() as r:
        in_doubt: set[str] = set()
        unavailable: set[str] = set()

        async def send(body: str) -> None:
            command = dispatch(body=body)
            for _ in range(200):
                try:
                    assert (await r.client.submit(command)).accepted
                    return
                except CarrierUnavailable as exc:
                    unavailable.add(body)
                    if exc.in_doubt:
                        in_doubt.add(body)
                    await asyncio.sleep(0.05)
            raise AssertionError(f"{body} never accepted")

        await asyncio.gather(*(send(f"before {n}") for n in range(10)))
        port = r.simulator.port
        await r.simulator.stop()
        waiting = [asyncio.create_task(send(f"during {n}")) for n in range(10)]
        await asyncio.sleep(0.5)
        assert not any(task.done() for task in waiting), "nothing can be accepted while the provider is away"
        r.simulator._requested_port = port  # the provider comes back at the same address
        await r.simulator.start()
        await asyncio.wait_for(asyncio.gather(*waiting), 20)

        created = Counter(m.body for m in r.simulator.messages.values())
        expected = {f"before {n}" for n in range(10)} | {f"during {n}" for n in range(10)}
        assert set(created) == expected, "every message reached the provider"
        assert {f"during {n}" for n in range(10)} <= unavailable
        assert not in_doubt, "a refused connection is not in doubt"
        assert set(created.values()) == {1}, f"created twice: {[b for b, n in created.items() if n > 1]}"


async def test_a_request_cut_off_after_it_was_sent_is_in_doubt():
    # A provider that takes the request and never answers: the client times out, the
    # message may exist there, and CarrierUnavailable says so.
    async def hang(request):
        await request.read()
        await asyncio.sleep(30)
        return aiohttp.web.Response()

    app = aiohttp.web.Application()
    app.router.add_post("/{tail:.*}", hang)
    runner = aiohttp.web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with rig(carrier={"base_url": f"http://127.0.0.1:{runner.addresses[0][1]}", "request_timeout": 0.3}) as r:
            with pytest.raises(CarrierUnavailable) as raised:
                await r.client.submit(dispatch())
            assert raised.value.in_doubt and raised.value.reason == "RESPONSE_TIMEOUT"
    finally:
        await runner.cleanup()


# --- callbacks ----------------------------------------------------------------------------------


async def _post(url: str, params: dict, signature: str | None) -> int:
    headers = {SIGNATURE_HEADER: signature} if signature is not None else {}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=params, headers=headers) as response:
            return response.status


async def test_a_callback_with_a_bad_or_missing_signature_is_refused_and_nothing_recorded():
    async with rig() as r:
        url = r.config.status_callback_url
        params = {
            "MessageSid": "SM" + "b" * 32,
            "MessageStatus": "delivered",
            "AccountSid": DEFAULT_ACCOUNT_SID,
            "To": "+14155550100",
            "From": OUR_NUMBER,
        }
        good = compute_signature(DEFAULT_AUTH_TOKEN, url, params)
        refused = [
            await _post(url, params, None),
            await _post(url, params, ""),
            await _post(url, params, compute_signature("wrong-token", url, params)),
            await _post(url, params, compute_signature(DEFAULT_AUTH_TOKEN, url + "?x=1", params)),
            await _post(url, {**params, "MessageStatus": "undelivered", "ErrorCode": "30003"}, good),
            await _post(url, {**params, "MessageSid": "SM" + "c" * 32}, good),
        ]
        assert refused == [403] * len(refused)
        assert r.reports.receipts == []

        # The same request, correctly signed, is taken.
        assert await _post(url, params, good) == 204
        assert r.reports.receipts == [(CARRIER, params["MessageSid"], DS.DELIVERY_STATE_DELIVERED, "delivered", "")]


async def test_signature_covers_the_query_string():
    async with rig() as r:
        url = r.config.status_callback_url + "?attempt=2"
        params = {"MessageSid": "SM" + "d" * 32, "MessageStatus": "delivered", "AccountSid": DEFAULT_ACCOUNT_SID}
        assert (
            await _post(url, params, compute_signature(DEFAULT_AUTH_TOKEN, r.config.status_callback_url, params)) == 403
        )
        assert await _post(url, params, compute_signature(DEFAULT_AUTH_TOKEN, url, params)) == 204
        assert len(r.reports.receipts) == 1


async def test_a_signed_callback_for_another_account_is_refused():
    async with rig() as r:
        url = r.config.status_callback_url
        params = {"MessageSid": "SM" + "e" * 32, "MessageStatus": "delivered", "AccountSid": "AC" + "9" * 32}
        assert await _post(url, params, compute_signature(DEFAULT_AUTH_TOKEN, url, params)) == 400
        assert r.reports.receipts == []


async def test_unknown_carrier_path_is_404():
    async with rig() as r:
        url = f"{r.config.status_callback_base_url}/callbacks/nobody/status"
        assert (
            await _post(url, {"MessageSid": "x"}, compute_signature(DEFAULT_AUTH_TOKEN, url, {"MessageSid": "x"}))
            == 404
        )


async def test_a_receipt_not_recorded_is_answered_500_and_taken_when_the_provider_retries():
    async with rig(reports=RecordedReports(refuse_first=1)) as r:
        sid = (await r.client.submit(dispatch())).carrier_ids[0]
        await r.reports.wait(lambda rep: rep.receipts)
        assert r.reports.receipts == [(CARRIER, sid, DS.DELIVERY_STATE_DELIVERED, "delivered", "")]
        assert await callbacks_for(r.simulator, sid, 3) == [("sent", 204), ("delivered", 500), ("delivered", 204)]


async def test_inbound_webhook_hands_the_mo_to_the_adapter():
    async with rig() as r:
        status = await r.simulator.send_inbound(
            source="+14155550123", destination=OUR_NUMBER, body="STOP please", url=r.config.inbound_url
        )
        assert status == 200
        assert r.reports.inbound == [(CARRIER, "+14155550123", OUR_NUMBER, "STOP please", 1)]

        long_text = "x" * 200
        await r.simulator.send_inbound(
            source="+14155550124",
            destination=OUR_NUMBER,
            body=long_text,
            media_urls=["https://example.invalid/a.jpg", "https://example.invalid/b.png"],
            url=r.config.inbound_url,
        )
        assert r.reports.inbound[-1] == (CARRIER, "+14155550124", OUR_NUMBER, long_text, 2)
        # An MMS keeps its media (MediaUrl0, MediaUrl1), in order; an SMS has none.
        assert r.reports.media == [[], ["https://example.invalid/a.jpg", "https://example.invalid/b.png"]]


async def test_inbound_webhook_with_a_bad_signature_is_refused():
    async with rig() as r:
        status = await r.simulator.send_inbound(
            source="+14155550123", destination=OUR_NUMBER, body="hi", url=r.config.inbound_url, auth_token="wrong-token"
        )
        assert status == 403
        assert r.reports.inbound == []


async def test_inbound_via_the_simulator_dev_endpoint():
    async with rig(simulator={}) as r:
        r.simulator.inbound_url = r.config.inbound_url
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{r.simulator.base_url}/_sim/inbound", data={"From": "+14155550125", "To": OUR_NUMBER, "Body": "yo"}
            ) as response:
                assert response.status == 200
                assert (await response.json())["status"] == 200
        assert r.reports.inbound == [(CARRIER, "+14155550125", OUR_NUMBER, "yo", 1)]


# --- MMS ----------------------------------------------------------------------------------------


async def test_mms_media_urls_are_passed_through():
    media = ["https://cdn.example.invalid/cat.jpg", "https://cdn.example.invalid/dog.png"]
    async with rig() as r:
        result = await r.client.submit(dispatch(body="look", media_urls=media))
        message = r.simulator.messages[result.carrier_ids[0]]
        assert message.media_urls == media
        assert message.resource()["num_media"] == "2"
        assert [v for k, v in message.form if k == "MediaUrl"] == media

        media_only = await r.client.submit(dispatch(body="", media_urls=media[:1]))
        assert r.simulator.messages[media_only.carrier_ids[0]].body == ""


async def test_media_to_a_carrier_without_mms_fails_without_sending():
    async with rig(carrier={"supports_mms": False}) as r:
        result = await r.client.submit(dispatch(media_urls=["https://cdn.example.invalid/cat.jpg"]))
        assert not result.accepted and result.failure.carrier_error == "MMS_NOT_SUPPORTED"
        assert r.simulator.messages == {}


# --- the simulator as a process ----------------------------------------------------------------


async def test_simulator_cli_prints_one_ready_line_and_stops_on_sigterm():
    proc = subprocess.Popen(  # noqa: ASYNC220 - the CLI as a user starts it; its output is read in a thread
        [sys.executable, "-m", "smsgw_dev.simulators.twilio", "--port", "0", "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        match = re.fullmatch(r"Twilio simulator listening on 127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        url = f"http://127.0.0.1:{match[1]}/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json"
        auth = {"Authorization": aiohttp.encode_basic_auth(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)}
        async with aiohttp.ClientSession() as session:
            form = {"To": "+14155550100", "From": OUR_NUMBER, "Body": "hi"}
            async with session.post(url, data=form, headers=auth) as response:
                assert response.status == 201
                body = await response.json()
                assert SID.match(body["sid"]) and body["status"] == "queued"
            async with session.post(url, data={**form, "To": "+1415"}, headers=auth) as response:
                assert response.status == 400
                assert await response.json() == {
                    "code": 21211,
                    "message": "The 'To' number +1415 is not a valid phone number.",
                    "more_info": "https://www.twilio.com/docs/errors/21211",
                    "status": 400,
                }
            async with session.post(url, data=form) as response:
                assert response.status == 401 and (await response.json())["code"] == 20003
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


# --- cross-check: the official Twilio helper library against the simulator -------------------


@pytest.mark.filterwarnings("ignore:.*(BasicAuth|'auth' parameter).*:DeprecationWarning")
async def test_official_twilio_library_speaks_to_the_simulator():
    twilio_rest = pytest.importorskip("twilio.rest")
    from twilio.base.exceptions import TwilioRestException
    from twilio.http.async_http_client import AsyncTwilioHttpClient

    async with rig() as r:

        class ToSimulator(AsyncTwilioHttpClient):
            async def request(self, method, url, *args, **kwargs):
                return await super().request(
                    method, url.replace("https://api.twilio.com", r.simulator.base_url), *args, **kwargs
                )

        http = ToSimulator()
        client = twilio_rest.Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, http_client=http)
        try:
            message = await client.messages.create_async(
                to="+14155550100",
                from_=OUR_NUMBER,
                body="from the official library",
                media_url=["https://cdn.example.invalid/a.jpg", "https://cdn.example.invalid/b.jpg"],
                status_callback=r.config.status_callback_url,
            )
            assert SID.match(message.sid) and message.status == "queued"
            assert message.to == "+14155550100" and message.num_media == "2"
            assert isinstance(message.date_created, datetime)
            assert r.simulator.messages[message.sid].media_urls == [
                "https://cdn.example.invalid/a.jpg",
                "https://cdn.example.invalid/b.jpg",
            ]

            # Its status callbacks reach our adapter, signed so that our verifier accepts them.
            await r.reports.wait(lambda rep: rep.receipts)
            assert r.reports.receipts == [(CARRIER, message.sid, DS.DELIVERY_STATE_DELIVERED, "delivered", "")]
            fetched = await client.messages(message.sid).fetch_async()
            assert fetched.status == "delivered"

            with pytest.raises(TwilioRestException) as refused:
                await client.messages.create_async(to="+1415", from_=OUR_NUMBER, body="x")
            assert (refused.value.status, refused.value.code) == (400, 21211)
            assert "not a valid phone number" in refused.value.msg
        finally:
            await http.close()


# --- the whole pipeline through the Twilio simulator (active once Platform runs it) -------------


@pytest.mark.skipif(
    "twilio_port" not in Platform.__dataclass_fields__, reason="Platform does not run the Twilio simulator yet"
)
async def test_pipeline_through_the_twilio_simulator(broker, tmp_path):
    """Given the platform with the Twilio simulator as carrier twilio-sim (routes +1415555077x), when
    messages are sent through the public API, then each reaches the status the simulator decides."""
    platform = await start_platform(broker, tmp_path, "twilio")
    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            cases = [
                ("+14155550770", "hello", [], st.DELIVERED, ""),
                ("+14155550771", "x" * 300, [], st.DELIVERED, ""),  # 2 segments, one Twilio id
                ("+14155550772", "mms", ["https://cdn.example.invalid/a.jpg"], st.DELIVERED, ""),
                ("+14155550778", "undelivered", [], st.UNDELIVERED, "30003"),
                ("+14155550776", "invalid number", [], st.FAILED, "21211"),
            ]
            for to, body, media, wanted, carrier_error in cases:
                reply = await stub.SendMessage(send_request(to=to, body=body, media_urls=media), metadata=ACCOUNT)
                message = await wait_for_status(stub, reply.message.id, {wanted}, timeout=30)
                assert message.carrier == "twilio-sim"
                assert carrier_error in message.error_message
                if wanted != st.FAILED:
                    assert SID.match(message.carrier_message_ids[0])
    finally:
        platform.stop()
