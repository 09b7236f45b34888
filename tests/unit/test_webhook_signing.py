"""Webhook signatures: what a receiver can prove, and what it must refuse."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import pytest

from smsgw_receipt.webhooks.signing import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    InvalidSignature,
    MissingSignature,
    StaleTimestamp,
    sign,
    verify,
)

SECRET = "whsec-test-1"
BODY = b'{"event_id":"e1","type":"message.status","message":{"status":"DELIVERED"}}'
T = 1_790_000_000
DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def test_a_signed_body_verifies_and_yields_its_timestamp():
    headers = sign(SECRET, BODY, event_id="e1", now=T)
    assert headers[EVENT_ID_HEADER] == "e1" and headers[TIMESTAMP_HEADER] == str(T)
    assert verify(SECRET, headers, BODY, now=T + 5) == T


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, event_id="e1", now=T)[SIGNATURE_HEADER] == f"v1={expected}"


def test_header_names_are_case_insensitive():
    headers = {name.lower(): value for name, value in sign(SECRET, BODY, event_id="e1", now=T).items()}
    assert verify(SECRET, headers, BODY, now=T) == T


def test_another_secret_is_a_forgery():
    forged = sign("someone-else", BODY, event_id="e1", now=T)
    with pytest.raises(InvalidSignature):
        verify(SECRET, forged, BODY, now=T)


@pytest.mark.parametrize("tampered", [BODY.replace(b"DELIVERED", b"FAILED"), BODY + b" ", b""])
def test_a_tampered_body_is_refused(tampered):
    with pytest.raises(InvalidSignature):
        verify(SECRET, sign(SECRET, BODY, event_id="e1", now=T), tampered, now=T)


def test_re_dating_a_captured_delivery_breaks_its_signature():
    headers = sign(SECRET, BODY, event_id="e1", now=T)
    headers[TIMESTAMP_HEADER] = str(T + 3600)
    with pytest.raises(InvalidSignature):
        verify(SECRET, headers, BODY, now=T + 3600)


@pytest.mark.parametrize("age", [301, 86_400, -301])
def test_a_replay_outside_the_tolerance_is_stale(age):
    headers = sign(SECRET, BODY, event_id="e1", now=T)
    with pytest.raises(StaleTimestamp):
        verify(SECRET, headers, BODY, now=T + age)


@pytest.mark.parametrize("age", [0, 299, -299])
def test_within_the_tolerance_it_verifies(age):
    assert verify(SECRET, sign(SECRET, BODY, event_id="e1", now=T), BODY, now=T + age) == T


def test_the_tolerance_is_configurable():
    headers = sign(SECRET, BODY, event_id="e1", now=T)
    with pytest.raises(StaleTimestamp):
        verify(SECRET, headers, BODY, now=T + 31, tolerance=30)


@pytest.mark.parametrize("drop", [TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_missing_headers_are_refused(drop):
    headers = sign(SECRET, BODY, event_id="e1", now=T)
    del headers[drop]
    with pytest.raises(MissingSignature):
        verify(SECRET, headers, BODY, now=T)


@pytest.mark.parametrize(
    "timestamp, signature",
    [
        ("yesterday", "v1=00"),
        (str(T), "v0=abc"),
        (str(T), "sha256=abc"),
        (str(T), "v1=\u00e9\u00e9"),
        (str(T), ""),
    ],
)
def test_malformed_headers_are_refused_without_crashing(timestamp, signature):
    with pytest.raises((InvalidSignature, MissingSignature)):
        verify(SECRET, {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature}, BODY, now=T)


def test_one_matching_signature_among_several_is_enough_for_secret_rotation():
    good = sign(SECRET, BODY, event_id="e1", now=T)[SIGNATURE_HEADER]
    old = sign("old-secret", BODY, event_id="e1", now=T)[SIGNATURE_HEADER]
    headers = {TIMESTAMP_HEADER: str(T), SIGNATURE_HEADER: f"{old}, {good}"}
    assert verify(SECRET, headers, BODY, now=T) == T


def test_the_documented_python_snippet_agrees_with_sign():
    """The receivers' snippet in docs/webhooks.md, run as written (against real HTTP in tests/integration)."""
    match = re.search(r"<!-- snippet: verify-python -->\s*```python\n(.*?)```", DOC.read_text(), re.S)
    assert match, "docs/webhooks.md lost its verify-python snippet"
    namespace: dict = {}
    exec(compile(match.group(1), str(DOC), "exec"), namespace)
    verify_doc = namespace["verify_smsgw_webhook"]
    fresh = sign(SECRET, BODY, event_id="e1")
    assert verify_doc(SECRET, fresh, BODY) is True
    assert verify_doc(SECRET, fresh, BODY + b"x") is False
    assert verify_doc("wrong", fresh, BODY) is False
    assert verify_doc(SECRET, sign(SECRET, BODY, event_id="e1", now=T), BODY) is False  # years old: stale
    assert verify_doc(SECRET, {}, BODY) is False
