"""Admission rules: every bad input names its field, says why, and what is valid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from smsgw.domain import errors as de
from smsgw.v1 import message_pb2 as mp
from smsgw_intake.admission import AdmissionPolicy, SendCommand, admit

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def cmd(**kw):
    base = dict(to="+14155550100", sender="+14155550000", body="hello")
    base.update(kw)
    return SendCommand(**base)


def test_valid_request_becomes_message_queued():
    queued = admit(cmd(metadata={"order": "42"}), now=NOW)
    assert queued.to == "+14155550100"
    assert getattr(queued, "from") == "+14155550000"
    assert queued.content.text == "hello"
    assert queued.segments == 1 and queued.encoding == mp.Encoding.GSM7
    assert queued.expires_at.ToDatetime(tzinfo=UTC) == NOW + timedelta(hours=48)
    assert not queued.HasField("send_at")
    assert len(queued.request_fingerprint) == 64


def test_unicode_body_is_ucs2_and_counts_parts():
    queued = admit(cmd(body="😀" * 40), now=NOW)
    assert queued.encoding == mp.Encoding.UCS2 and queued.segments == 2


@pytest.mark.parametrize(
    "kwargs, error, field, words",
    [
        (dict(to=""), de.MissingField, "to", "to"),
        (dict(to="4155550100"), de.InvalidPhoneNumber, "to", "country code"),
        (dict(to="+1415"), de.InvalidPhoneNumber, "to", "too short"),
        (dict(to="+1 415 CALL ME"), de.InvalidPhoneNumber, "to", "to"),
        (dict(body=""), de.EmptyBody, "body", "must not be empty"),
        (dict(body="a" * 1531), de.BodyTooLong, "body", "11 SMS parts"),
        (dict(body="€" * 800), de.BodyTooLong, "body", "limit is 10 parts"),
        (dict(body="ж" * 671), de.BodyTooLong, "body", "UCS2"),
        (dict(sender="not a valid sender!!"), de.InvalidArgument, "from", "alphanumeric"),
        (dict(send_at=NOW - timedelta(hours=1)), de.InvalidSchedule, "send_at", "in the past"),
        (dict(send_at=NOW + timedelta(days=40)), de.InvalidSchedule, "send_at", "35 days"),
        (dict(validity_period=timedelta(seconds=5)), de.InvalidArgument, "validity_period", "out of range"),
        (dict(status_callback_url="ftp://x"), de.InvalidArgument, "status_callback_url", "https URL"),
        (dict(status_callback_url="http://example.com/cb"), de.InvalidArgument, "status_callback_url", "https URL"),
        (
            dict(status_callback_url="https://169.254.169.254/latest/meta-data"),
            de.InvalidArgument,
            "status_callback_url",
            "non-public address",
        ),
        (dict(metadata={"k": "v" * 300}), de.InvalidArgument, "metadata[k]", "at most 256"),
        (dict(idempotency_key="k" * 200), de.InvalidArgument, "idempotency_key", "at most 128"),
    ],
)
def test_bad_input_is_refused_with_field_and_reason(kwargs, error, field, words):
    with pytest.raises(error) as info:
        admit(cmd(**kwargs), now=NOW)
    assert info.value.field == field
    assert words in info.value.message
    assert info.value.code == 100


def test_body_at_the_limit_is_accepted():
    assert admit(cmd(body="a" * 1530), now=NOW).segments == 10


def test_alphanumeric_sender_and_default_sender():
    assert getattr(admit(cmd(sender="ACME"), now=NOW), "from") == "ACME"
    assert (
        getattr(admit(cmd(sender=""), now=NOW, policy=AdmissionPolicy(default_sender="+442071838750")), "from")
        == "+442071838750"
    )


def test_future_send_at_is_kept_and_validity_counts_from_it():
    at = NOW + timedelta(hours=2)
    queued = admit(cmd(send_at=at, validity_period=timedelta(hours=1)), now=NOW)
    assert queued.send_at.ToDatetime(tzinfo=UTC) == at
    assert queued.expires_at.ToDatetime(tzinfo=UTC) == at + timedelta(hours=1)


def test_send_at_within_clock_skew_means_now():
    assert not admit(cmd(send_at=NOW - timedelta(seconds=30)), now=NOW).HasField("send_at")


def test_fingerprint_differs_when_content_differs():
    assert admit(cmd(body="a"), now=NOW).request_fingerprint != admit(cmd(body="b"), now=NOW).request_fingerprint
    assert (
        admit(cmd(body="a"), now=NOW).request_fingerprint
        == admit(cmd(body="a"), now=NOW + timedelta(seconds=5)).request_fingerprint
    )


def test_media_and_tags_are_kept_and_validated():
    from smsgw.domain.routes import CarrierCapabilities, Route, RouteTable

    capabilities = CarrierCapabilities(
        RouteTable((Route("", "smpp"), Route("+44", "mms-http"))), frozenset({"mms-http"})
    )
    queued = admit(
        cmd(to="+447911123456", media_urls=("https://example.com/a.jpg",), tags=("promo", "q4")),
        now=NOW,
        capabilities=capabilities,
    )
    assert list(queued.media_urls) == ["https://example.com/a.jpg"] and list(queued.tags) == ["promo", "q4"]
    with pytest.raises(de.InvalidArgument) as refused:
        admit(cmd(media_urls=("https://example.com/a.jpg",)), now=NOW, capabilities=capabilities)
    assert refused.value.field == "media_urls" and refused.value.metadata["detail"] == "MMS_NOT_SUPPORTED"
    assert "mms-http" in refused.value.message and "smpp" in refused.value.message
    with pytest.raises(de.InvalidArgument) as bad_url:
        admit(cmd(to="+447911123456", media_urls=("file:///etc/passwd",)), now=NOW, capabilities=capabilities)
    assert bad_url.value.field == "media_urls[0]"
    with pytest.raises(de.InvalidArgument) as bad_tag:
        admit(cmd(tags=(" padded",)), now=NOW)
    assert bad_tag.value.field == "tags[0]"


def test_smart_encoding_sends_the_gsm7_look_alike_and_records_the_parts_it_saved():
    typed = "Your code: \u201c4829\u201d \u2014 valid 10 min. " + "x" * 50  # 89 characters
    exact = admit(cmd(body=typed), now=NOW)
    assert exact.content.text == typed and exact.segments == 2 and exact.segments_before_smart_encoding == 0
    smart = admit(cmd(body=typed), now=NOW, smart_encoding=True)
    assert smart.content.text.startswith('Your code: "4829" - valid')
    assert smart.segments == 1 and smart.encoding == exact.encoding - 1  # UCS2 -> GSM7
    assert smart.segments_before_smart_encoding == 2
    # The idempotency fingerprint is the request's, not the replaced text's.
    assert smart.request_fingerprint == exact.request_fingerprint
    # Nothing to replace: the text and the fields as without the option.
    plain = admit(cmd(body="plain"), now=NOW, smart_encoding=True)
    assert plain.content.text == "plain" and plain.segments_before_smart_encoding == 0


def test_smart_encoding_can_bring_a_text_under_the_part_limit():
    typed = "\u201c" + "x" * 600 + "\u201d"  # 602 characters: 9 UCS-2 parts, 4 GSM-7 ones
    with pytest.raises(de.BodyTooLong):
        admit(cmd(body=typed), now=NOW, policy=AdmissionPolicy(max_segments=5))
    sent = admit(cmd(body=typed), now=NOW, policy=AdmissionPolicy(max_segments=5), smart_encoding=True)
    assert sent.segments == 4 and sent.segments_before_smart_encoding == 9


def test_priority_is_kept_and_an_unknown_value_is_refused_naming_the_valid_ones():
    high = mp.MessagePriority.MESSAGE_PRIORITY_HIGH
    assert admit(cmd(priority=high), now=NOW).priority == high
    assert admit(cmd(), now=NOW).priority == mp.MessagePriority.MESSAGE_PRIORITY_UNSPECIFIED
    # Same content, another lane: another request for the idempotency check; unset keeps the
    # fingerprint requests had before priorities existed.
    assert admit(cmd(priority=high), now=NOW).request_fingerprint != admit(cmd(), now=NOW).request_fingerprint
    # (the fingerprint of cmd() before the priority field, computed with that code)
    assert admit(cmd(), now=NOW).request_fingerprint == (
        "12041d073370ead55c0aea18d26840e631a55ef25f6578412fc0e77dc6844306"
    )
    with pytest.raises(de.InvalidArgument) as refused:
        admit(cmd(priority=7), now=NOW)
    assert refused.value.field == "priority"
    assert "MESSAGE_PRIORITY_HIGH" in str(refused.value) and "MESSAGE_PRIORITY_NORMAL" in str(refused.value)
