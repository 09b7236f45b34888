"""X-Twilio-Signature: Twilio's documented example, URL/port variants, and refusals."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from smsgw.http_provider.twilio_signature import compute_signature, signing_string, url_variants, verify_signature

pytestmark = pytest.mark.timeout(60)

# The example in Twilio's webhook security docs.
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
DOC_TOKEN = "12345"
DOC_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_documented_example_vector():
    assert compute_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    assert verify_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


def test_signed_string_is_url_then_sorted_name_value_pairs():
    assert signing_string("https://x/y", {"b": "2", "a": "1", "C": "3"}) == "https://x/yC3a1b2"


def test_parameter_order_and_container_do_not_matter():
    shuffled = list(reversed(list(DOC_PARAMS.items())))
    assert compute_signature(DOC_TOKEN, DOC_URL, shuffled) == DOC_SIGNATURE
    assert compute_signature(DOC_TOKEN, DOC_URL, MultiDict(shuffled)) == DOC_SIGNATURE


def test_repeated_names_sign_every_value_sorted():
    params = MultiDict([("MediaUrl", "https://b/2.jpg"), ("To", "+1"), ("MediaUrl", "https://a/1.jpg")])
    assert signing_string("u", params) == "uMediaUrlhttps://a/1.jpgMediaUrlhttps://b/2.jpgTo+1"
    assert compute_signature("t", "u", params) == compute_signature(
        "t", "u", {"MediaUrl": ["https://a/1.jpg", "https://b/2.jpg"], "To": "+1"}
    )


@pytest.mark.parametrize(
    "url,variants",
    [
        ("https://a.example/x?y=1", ("https://a.example/x?y=1", "https://a.example:443/x?y=1")),
        ("https://a.example:443/x", ("https://a.example:443/x", "https://a.example/x")),
        ("http://127.0.0.1:8080/cb", ("http://127.0.0.1:8080/cb", "http://127.0.0.1/cb")),
        ("http://[::1]/cb", ("http://[::1]/cb", "http://[::1]:80/cb")),
    ],
)
def test_url_variants_with_and_without_port(url, variants):
    assert url_variants(url) == variants


def test_signature_accepted_whether_or_not_the_default_port_was_signed():
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert verify_signature(DOC_TOKEN, with_port, DOC_PARAMS, DOC_SIGNATURE)
    signed_with_port = compute_signature(DOC_TOKEN, with_port, DOC_PARAMS)
    assert verify_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS, signed_with_port)


@pytest.mark.parametrize(
    "signature",
    [None, "", "   ", "0/KCTR6DLpKmkAf8muzZqo1nDgQ", "1/KCTR6DLpKmkAf8muzZqo1nDgQ=", "ünicode", DOC_SIGNATURE.lower()],
)
def test_missing_or_wrong_signatures_are_refused(signature):
    assert not verify_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS, signature)


def test_anything_changed_breaks_the_signature():
    assert not verify_signature("54321", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)
    assert not verify_signature(DOC_TOKEN, DOC_URL.replace("foo=1", "foo=2"), DOC_PARAMS, DOC_SIGNATURE)
    assert not verify_signature(DOC_TOKEN, DOC_URL.replace("https", "http"), DOC_PARAMS, DOC_SIGNATURE)
    assert not verify_signature(DOC_TOKEN, DOC_URL, {**DOC_PARAMS, "Digits": "1235"}, DOC_SIGNATURE)
    assert not verify_signature(DOC_TOKEN, DOC_URL, {**DOC_PARAMS, "Extra": "x"}, DOC_SIGNATURE)
    assert not verify_signature("", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


def test_agrees_with_the_official_twilio_helper_library():
    validator = pytest.importorskip("twilio.request_validator").RequestValidator
    params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "delivered", "Body": "héllo ✓", "To": "+14155550100"}
    url = "http://127.0.0.1:8080/callbacks/twilio/status?x=1"
    ours = compute_signature("tok", url, params)
    assert validator("tok").compute_signature(url, params) == ours
    assert validator("tok").validate(url, params, ours)
