"""Twilio statuses and error codes, as our delivery states and submit outcomes (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from smsgw.http_provider import twilio_mapping as tm
from smsgw.v1 import events_pb2 as ev

pytestmark = pytest.mark.timeout(60)

DS = ev.DeliveryState


@pytest.mark.parametrize(
    "status,error,state",
    [
        ("delivered", "", DS.DELIVERY_STATE_DELIVERED),
        ("DELIVERED", None, DS.DELIVERY_STATE_DELIVERED),
        ("read", "", DS.DELIVERY_STATE_DELIVERED),
        ("undelivered", "30003", DS.DELIVERY_STATE_UNDELIVERABLE),
        ("undelivered", "30005", DS.DELIVERY_STATE_UNDELIVERABLE),
        ("undelivered", "30006", DS.DELIVERY_STATE_UNDELIVERABLE),
        ("undelivered", "30008", DS.DELIVERY_STATE_UNDELIVERABLE),
        ("undelivered", "", DS.DELIVERY_STATE_UNDELIVERABLE),
        ("undelivered", "30007", DS.DELIVERY_STATE_REJECTED),  # filtered by the carrier
        ("undelivered", 30004, DS.DELIVERY_STATE_REJECTED),
        ("failed", "30001", DS.DELIVERY_STATE_REJECTED),
        ("canceled", "", DS.DELIVERY_STATE_DELETED),
    ],
)
def test_final_statuses_are_delivery_facts(status, error, state):
    assert tm.delivery_state(status, error) == state


@pytest.mark.parametrize(
    "status", ["queued", "accepted", "scheduled", "sending", "sent", "receiving", "received", "", None, "bogus"]
)
def test_other_statuses_are_not_reported(status):
    assert tm.delivery_state(status, "30003") is None


@pytest.mark.parametrize(
    "value,code",
    [
        ("21211", 21211),
        (21610, 21610),
        (" 30007 ", 30007),
        ("", None),
        (None, None),
        ("abc", None),
        ("0", None),
        (True, None),
    ],
)
def test_parse_error_code(value, code):
    assert tm.parse_error_code(value) == code


@pytest.mark.parametrize(
    "http_status,code,disposition",
    [
        (201, None, tm.SubmitDisposition.ACCEPTED),
        (200, None, tm.SubmitDisposition.ACCEPTED),
        (400, 21211, tm.SubmitDisposition.PERMANENT),  # invalid To
        (400, 21610, tm.SubmitDisposition.PERMANENT),  # unsubscribed
        (400, 21614, tm.SubmitDisposition.PERMANENT),  # not a mobile number
        (400, 21612, tm.SubmitDisposition.PERMANENT),
        (400, None, tm.SubmitDisposition.PERMANENT),
        (400, 99999, tm.SubmitDisposition.PERMANENT),
        (400, 21611, tm.SubmitDisposition.TEMPORARY),  # sender queue overflow
        (400, 20429, tm.SubmitDisposition.TEMPORARY),
        (429, 20429, tm.SubmitDisposition.TEMPORARY),
        (429, None, tm.SubmitDisposition.TEMPORARY),
        (500, 20500, tm.SubmitDisposition.TEMPORARY),
        (502, None, tm.SubmitDisposition.TEMPORARY),
        (503, 20503, tm.SubmitDisposition.TEMPORARY),
        (401, 20003, tm.SubmitDisposition.TEMPORARY),  # our credentials: never the message's fault
        (404, 20404, tm.SubmitDisposition.TEMPORARY),
    ],
)
def test_classify_submit(http_status, code, disposition):
    assert tm.classify_submit(http_status, code) is disposition


def test_submit_failure_keeps_twilio_code_as_carrier_error():
    failure = tm.submit_failure("twilio", 400, 21211, "The 'To' number +1 is not a valid phone number.")
    assert failure.carrier == "twilio"
    assert failure.error_code == 500
    assert failure.reason == "CARRIER_REJECTED"
    assert failure.carrier_error == "21211"
    assert "21211" in failure.message and "invalid 'To' phone number" in failure.message
    assert "not a valid phone number" in failure.message
    assert tm.submit_failure("twilio", 400, None).carrier_error == "HTTP 400"


def test_describe_error():
    assert tm.describe_error(30007) == "Twilio error 30007 (filtered by the carrier (carrier violation))"
    assert tm.describe_error(12345) == "Twilio error 12345"
    assert tm.describe_error(None) == "no error code"
    assert tm.error_url(21211) == "https://www.twilio.com/docs/errors/21211"


def test_parse_retry_after():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert tm.parse_retry_after("3", now) == 3.0
    assert tm.parse_retry_after(" 1.5 ", now) == 1.5
    assert tm.parse_retry_after("-4", now) == 0.0
    assert tm.parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert tm.parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert tm.parse_retry_after(bad, now) is None
