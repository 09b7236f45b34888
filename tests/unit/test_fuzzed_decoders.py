"""What carriers and phones send us, fuzzed (hypothesis): every decoder of outside input either
answers or raises its own, documented error, never anything else. An exception of another kind
would end a session's reader (SMPP) or answer a provider 500 so that it retries a poison message
forever (HTTP callbacks).

Bounded: each property runs a fixed number of examples, with no deadline on this shared machine."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as s

from smsgw.http_provider import twilio_mapping as tm
from smsgw.smpp import constants as c
from smsgw.smpp.inbound import decode_text, from_deliver_sm
from smsgw.smpp.pdu import PDU_TYPES, DeliverSm, Pdu, PduError, SubmitSm, decode_pdu, encode_pdu
from smsgw.smpp.receipts import normalize_message_id, parse_receipt_text

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

COMMAND_IDS = sorted(PDU_TYPES) + [0x00000000, 0x80000000, 0x7FFFFFFF, 0xFFFFFFFF]


def _framed(command_id: int, status: int, sequence: int, body: bytes) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, status, sequence) + body


pdus = s.one_of(
    s.binary(max_size=600),  # anything at all, mostly a wrong length
    s.builds(
        _framed, s.sampled_from(COMMAND_IDS), s.integers(0, 2**32 - 1), s.integers(0, 2**32 - 1), s.binary(max_size=600)
    ),  # a consistent header over any body
)


def _decodes_or_refuses(data: bytes) -> Pdu | None:
    try:
        return decode_pdu(data)
    except PduError as error:
        assert error.status  # the status to answer with (generic_nack or the response's)
        return None


@FUZZ
@given(pdus)
def test_any_octets_decode_to_a_pdu_or_a_pdu_error(data):
    _decodes_or_refuses(data)


VALID = [
    encode_pdu(
        SubmitSm(
            sequence_number=7,
            source_addr="ACME",
            destination_addr="+14155550100",
            short_message=b"hello",
            data_coding=0,
            esm_class=0,
            tlvs={c.TAG_MESSAGE_PAYLOAD: b"x" * 10},
        )
    ),
    encode_pdu(
        DeliverSm(
            sequence_number=9,
            source_addr="447700900123",
            destination_addr="14155550000",
            esm_class=c.ESM_CLASS_UDHI,
            data_coding=c.DATA_CODING_UCS2,
            short_message=bytes([5, 0, 3, 42, 2, 1]) + "héllo".encode("utf-16-be"),
        )
    ),
]


@FUZZ
@given(s.sampled_from(VALID), s.lists(s.tuples(s.integers(0, 400), s.integers(0, 255)), max_size=8), s.integers(0, 400))
def test_a_real_pdu_with_octets_changed_or_cut_decodes_or_is_refused(valid, changes, cut):
    data = bytearray(valid)
    for position, value in changes:
        if 16 <= position < len(data):  # keep the header's length honest, change the body
            data[position] = value
    data = bytes(data[: max(16, len(data) - cut)])
    data = struct.pack(">I", len(data)) + data[4:]
    pdu = _decodes_or_refuses(data)
    if isinstance(pdu, DeliverSm):
        # What the session does with a deliver_sm next: interpret it (receipt or MO, any coding).
        deliver = from_deliver_sm(pdu)
        assert deliver.text is None or isinstance(deliver.text, str)
        assert deliver.message_id_key is None or isinstance(deliver.message_id_key, str)


@FUZZ
@given(s.integers(0, 255), s.binary(max_size=300))
def test_user_data_decodes_to_text_whatever_the_coding(data_coding, payload):
    assert isinstance(decode_text(data_coding, payload), str)


receipt_texts = s.one_of(
    s.text(max_size=400),
    s.builds(
        lambda i, st, rest: (
            f"id:{i} sub:001 dlvrd:001 submit date:2612031200 done date:2612031201 stat:{st} err:{rest} text:{rest}"
        ),
        s.text(max_size=80),
        s.text(max_size=12),
        s.text(max_size=40),
    ),
)


@FUZZ
@given(receipt_texts)
def test_receipt_text_parses_or_is_not_a_receipt(text):
    receipt = parse_receipt_text(text)
    if receipt is not None:
        assert isinstance(normalize_message_id(receipt.message_id), str)


@FUZZ
@given(
    s.one_of(
        s.text(max_size=200),
        # Found by this test: thousands of digits made int() raise (Python's 4,300-digit cap).
        s.builds(
            lambda digit, n, prefix: prefix + digit * n,
            s.sampled_from("07af"),
            s.integers(1, 6000),
            s.sampled_from(["", "0x", " "]),
        ),
    )
)
def test_any_message_id_normalises(message_id):
    assert isinstance(normalize_message_id(message_id), str)


@FUZZ
@given(s.one_of(s.none(), s.text(max_size=60)), s.one_of(s.none(), s.text(max_size=60), s.integers()))
def test_twilio_status_and_error_code_map_or_say_unknown(status, error_code):
    state = tm.delivery_state(status, error_code)
    assert state is None or isinstance(state, int)
    code = tm.parse_error_code(error_code)
    assert code is None or isinstance(code, int)
    if code is not None:
        assert isinstance(tm.describe_error(code), str)


@FUZZ
@given(s.one_of(s.none(), s.text(max_size=80)))
def test_a_retry_after_header_is_seconds_or_nothing(value):
    seconds = tm.parse_retry_after(value)
    assert seconds is None or seconds >= 0
