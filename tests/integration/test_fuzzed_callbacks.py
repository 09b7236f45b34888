"""Twilio's callbacks, fuzzed (hypothesis) over real HTTP on loopback: signed requests with hostile
forms (any field names and values, repeated fields, control characters, huge values) and unsigned
raw bodies (invalid UTF-8, broken encodings) are answered 2xx or 4xx, never 500: a 500 tells the
provider to retry, and a request that always fails would be retried for days. What is recorded goes
through the real Dispatcher's report encoding (the broker is replaced by a list here, because the
property is about the HTTP server and the protobuf it builds, not about Kafka)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as s

from smsgw.http_provider.twilio_signature import SIGNATURE_HEADER, compute_signature
from smsgw.v1 import carrier_pb2 as cp
from smsgw_carrier_adapter.reports import ReportWriter
from smsgw_dev.simulators.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN
from tests.integration.test_twilio_adapter import CARRIER, rig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


class RecordedProducer:
    """The Dispatcher's producer: keeps what it would send (encoded, as it would go out)."""

    def __init__(self) -> None:
        self.records: list[bytes] = []

    async def send_and_wait(self, topic, key=None, value=None, headers=None):
        self.records.append(value)


def recording_dispatcher() -> tuple[ReportWriter, RecordedProducer]:
    """The real report writer as a carrier's reports sink, its records kept in a list."""
    producer = RecordedProducer()
    return ReportWriter(producer, "reports", "fuzz"), producer


NAMES = s.one_of(
    s.sampled_from(
        [
            "MessageSid",
            "SmsSid",
            "MessageStatus",
            "SmsStatus",
            "ErrorCode",
            "From",
            "To",
            "Body",
            "NumSegments",
            "NumMedia",
            "MediaUrl0",
            "MediaUrl1",
            "MediaUrl9",
            "AccountSid",
        ]
    ),
    s.text(max_size=20),
)
VALUES = s.one_of(
    s.text(s.characters(exclude_categories=["Cs"]), max_size=300),  # any character a form can carry
    s.sampled_from(
        [
            "delivered",
            "undelivered",
            "failed",
            "sent",
            "queued",
            "30003",
            "-1",
            "1e400",
            "9" * 5000,
            DEFAULT_ACCOUNT_SID,
            "https://169.254.169.254/latest",
            "\x00",
            "\u202e",
        ]
    ),
    s.builds(lambda char, n: char * n, s.sampled_from("x9\u00e9\U0001f600"), s.integers(1000, 60_000)),
)
forms = s.lists(s.tuples(NAMES, VALUES), max_size=25)
raw_bodies = s.one_of(
    s.binary(max_size=2000),
    s.sampled_from([b"Body=%FF%FE&MessageSid=x", b"%", b"a=%zz", b"\xff\xfe=\x00", b"=" * 5000]),
)


async def test_hostile_callbacks_get_an_answer_never_a_500():
    reports, producer = recording_dispatcher()
    async with rig(reports=reports) as r:
        loop = asyncio.get_running_loop()
        base = r.config.status_callback_base_url
        statuses: list[int] = []

        async def post(path: str, body: bytes, signature: str | None) -> int:
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            if signature is not None:
                headers[SIGNATURE_HEADER] = signature
            async with aiohttp.ClientSession() as http, http.post(base + path, data=body, headers=headers) as answer:
                return answer.status

        def run(path: str, body: bytes, signature: str | None) -> int:
            status = asyncio.run_coroutine_threadsafe(post(path, body, signature), loop).result(30)
            statuses.append(status)
            return status

        paths = s.sampled_from([f"/callbacks/{CARRIER}/status", f"/callbacks/{CARRIER}/inbound"])

        @FUZZ
        @given(paths, forms)
        def signed_forms_are_answered(path, fields):
            params: dict[str, list[str]] = {}
            for name, value in fields:
                params.setdefault(name, []).append(value)
            signature = compute_signature(DEFAULT_AUTH_TOKEN, base + path, params)
            status = run(path, urlencode(fields).encode(), signature)
            assert status in (200, 204, 400, 413), (status, fields[:3])

        @FUZZ
        @given(paths, raw_bodies)
        def raw_bodies_are_answered(path, body):
            assert run(path, body, "bm90IGEgc2lnbmF0dXJl") in (400, 403, 413)

        await asyncio.to_thread(signed_forms_are_answered)
        await asyncio.to_thread(raw_bodies_are_answered)
        # The server is still up, and still records a good callback.
        good = {"MessageSid": "SMfuzz", "MessageStatus": "delivered", "AccountSid": DEFAULT_ACCOUNT_SID}
        path = f"/callbacks/{CARRIER}/status"
        assert (
            await post(path, urlencode(good).encode(), compute_signature(DEFAULT_AUTH_TOKEN, base + path, good)) == 204
        )
    assert 204 in statuses and 200 in statuses  # the fuzzing reached the recording path of both
    last = cp.CarrierReport()
    last.ParseFromString(producer.records[-1])
    assert last.carrier_message_id == "smfuzz" or last.carrier_message_id == "SMfuzz"
