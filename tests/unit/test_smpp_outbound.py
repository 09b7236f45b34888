"""submit_sm PDUs per long-message mode: part counts agree with plan_segments, and each form reassembles."""

from __future__ import annotations

import pytest
import smpplib.smpp

from smsgw.domain.encoding import decode_gsm7, decode_ucs2, parse_concat_udh, plan_segments
from smsgw.smpp import constants as c
from smsgw.smpp.outbound import LONG_MESSAGE_MODES, build_submits
from smsgw.smpp.pdu import SubmitSm, decode_pdu, encode_pdu, tlv_int

pytestmark = pytest.mark.timeout(60)

# Bodies around every boundary the splitter has: single/multi limits, escape pairs and
# surrogate pairs that straddle a part boundary, the intake's 10-part ceiling.
TEXTS = [
    "hi",
    "x" * 160,
    "x" * 161,
    "x" * 306,
    "x" * 307,
    "{" * 80,  # 160 septets in escape pairs
    "x" * 152 + "€" + "y" * 10,  # escape pair that would straddle the 153 boundary
    "я" * 70,
    "я" * 71,
    "я" * 66 + "😀" + "я" * 10,  # surrogate pair that would straddle the 67 boundary
    "Привет, мир! 👋🏽 " * 5,
    ("The quick brown fox jumps over the lazy dog. " * 40)[:1530],  # 10 parts
]


def decode(data_coding: int, octets: bytes) -> str:
    return decode_ucs2(octets) if data_coding == c.DATA_CODING_UCS2 else decode_gsm7(octets)


def build(text: str, mode: str, reference: int = 0x1234) -> list[SubmitSm]:
    message = build_submits(
        source="SMSGW",
        destination="+447700900123",
        text=text,
        registered_delivery=True,
        long_message=mode,  # type: ignore[arg-type]  # invalid modes too, on purpose
        reference=reference,
    )
    assert message.segments == plan_segments(text).segments
    # Every PDU survives the strict encoder and decodes to itself.
    for pdu in message.pdus:
        assert decode_pdu(encode_pdu(pdu)) == pdu
    return message.pdus


@pytest.mark.parametrize("mode", ["udh", "sar"])
@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_parts_sent_equal_plan_segments(text: str, mode: str) -> None:
    assert len(build(text, mode)) == plan_segments(text).segments


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_udh_parts_reassemble(text: str) -> None:
    pdus = build(text, "udh")
    if len(pdus) == 1:
        assert pdus[0].esm_class == 0 and decode(pdus[0].data_coding, pdus[0].short_message) == text
        return
    joined = b""
    for sequence, pdu in enumerate(pdus, start=1):
        assert pdu.esm_class == c.ESM_CLASS_UDHI and not pdu.tlvs
        parsed = parse_concat_udh(pdu.short_message)
        assert parsed is not None
        reference, total, seq, rest = parsed
        assert (reference, total, seq) == (0x34, len(pdus), sequence)  # the low 8 bits of the reference
        joined += rest
    assert decode(pdus[0].data_coding, joined) == text


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_sar_parts_reassemble(text: str) -> None:
    pdus = build(text, "sar")
    if len(pdus) == 1:
        assert not pdus[0].tlvs and decode(pdus[0].data_coding, pdus[0].short_message) == text
        return
    joined = b""
    for sequence, pdu in enumerate(pdus, start=1):
        assert pdu.esm_class == 0  # no UDH in the payload: the SMSC builds it from the TLVs
        assert len(pdu.tlvs[c.TAG_SAR_MSG_REF_NUM]) == 2
        assert len(pdu.tlvs[c.TAG_SAR_TOTAL_SEGMENTS]) == len(pdu.tlvs[c.TAG_SAR_SEGMENT_SEQNUM]) == 1
        assert tlv_int(pdu.tlvs[c.TAG_SAR_MSG_REF_NUM]) == 0x1234
        assert tlv_int(pdu.tlvs[c.TAG_SAR_TOTAL_SEGMENTS]) == len(pdus)
        assert tlv_int(pdu.tlvs[c.TAG_SAR_SEGMENT_SEQNUM]) == sequence
        # Each part is a whole string of characters in its own right (no split escape/surrogate).
        decode(pdu.data_coding, pdu.short_message)
        joined += pdu.short_message
    assert decode(pdus[0].data_coding, joined) == text


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_payload_is_one_submit_with_the_whole_text(text: str) -> None:
    pdus = build(text, "payload")
    assert len(pdus) == 1
    [pdu] = pdus
    assert pdu.esm_class == 0
    if plan_segments(text).segments == 1:
        assert not pdu.tlvs and decode(pdu.data_coding, pdu.short_message) == text
    else:
        assert pdu.short_message == b"" and set(pdu.tlvs) == {c.TAG_MESSAGE_PAYLOAD}
        assert decode(pdu.data_coding, pdu.tlvs[c.TAG_MESSAGE_PAYLOAD]) == text
        assert pdu.payload == pdu.tlvs[c.TAG_MESSAGE_PAYLOAD]


def test_single_part_is_the_same_in_every_mode() -> None:
    forms = {mode: build("short and sweet", mode) for mode in LONG_MESSAGE_MODES}
    assert forms["udh"] == forms["sar"] == forms["payload"]


def test_addresses_and_coding() -> None:
    [pdu] = build("Привет", "udh")
    assert (pdu.destination_addr, pdu.dest_addr_ton, pdu.dest_addr_npi) == ("447700900123", 1, 1)
    assert (pdu.source_addr, pdu.source_addr_ton, pdu.source_addr_npi) == ("SMSGW", 5, 0)
    assert pdu.data_coding == c.DATA_CODING_UCS2 and pdu.registered_delivery == 1


def test_rejects_unknown_mode_and_empty_text() -> None:
    with pytest.raises(ValueError):
        build("x", "binary")
    with pytest.raises(ValueError):
        build("", "udh")


class _Client:
    """The bits of an smpplib client that its PDU factory touches (strict about TLVs)."""

    sequence = 0
    allow_unknown_opt_params = False

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


def test_smpplib_reads_our_sar_and_payload_tlvs() -> None:
    # An independent decoder must find the TLVs where the spec puts them.
    sar = build("s" * 200, "sar")
    theirs = [smpplib.smpp.parse_pdu(encode_pdu(pdu), client=_Client()) for pdu in sar]
    assert [(p.sar_msg_ref_num, p.sar_total_segments, p.sar_segment_seqnum) for p in theirs] == [
        (0x1234, 2, 1),
        (0x1234, 2, 2),
    ]
    assert b"".join(p.short_message for p in theirs) == b"s" * 200 and theirs[0].esm_class == 0
    [payload] = build("p" * 200, "payload")
    [theirs_payload] = [smpplib.smpp.parse_pdu(encode_pdu(payload), client=_Client())]
    assert theirs_payload.message_payload == b"p" * 200
    assert not theirs_payload.short_message


def test_the_validity_goes_out_as_smpp_absolute_time_in_utc() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from smsgw.smpp.outbound import absolute_time

    at = datetime(2026, 12, 4, 9, 30, 5, 730_000, tzinfo=UTC)
    assert absolute_time(at) == "261204093005700+"
    assert absolute_time(at.astimezone(timezone(timedelta(hours=-5)))) == "261204093005700+", "always UTC"
    message = build_submits(
        source="+14155550000",
        destination="+14155550100",
        text="x" * 200,
        registered_delivery=True,
        long_message="udh",
        reference=1,
        expires_at=at,
    )
    assert [pdu.validity_period for pdu in message.pdus] == ["261204093005700+"] * 2
    encoded = decode_pdu(encode_pdu(message.pdus[0]))
    assert isinstance(encoded, SubmitSm) and encoded.validity_period == "261204093005700+"
    assert all(p.validity_period == "" for p in build("no validity", "udh")), "the SMSC's default"
