"""Receipt text parsing, message-id normalisation, and deliver_sm interpretation."""

from __future__ import annotations

import pytest

from smsgw.domain.encoding import concat_udh, encode_gsm7, encode_ucs2
from smsgw.smpp import constants as c
from smsgw.smpp.inbound import from_deliver_sm
from smsgw.smpp.pdu import DeliverSm, tlv_cstr, tlv_u8
from smsgw.smpp.receipts import (
    DELIVRD,
    EXPIRED,
    MESSAGE_STATE_TO_STAT,
    REJECTD,
    UNDELIV,
    format_receipt_text,
    normalize_message_id,
    parse_receipt_text,
    stat_from_message_state,
)
from smsgw_carrier_adapter.smpp.client import SmppCarrierClient
from smsgw_carrier_adapter.smpp.config import SmppCarrier

pytestmark = pytest.mark.timeout(60)

# (receipt text as seen from various SMSCs, expected id, stat, err, text)
RECEIPT_CORPUS = [
    (
        "id:0123456789 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000 text:Hello",
        "0123456789",
        DELIVRD,
        "000",
        "Hello",
    ),
    (  # hex id, lower-case
        "id:a3f2b1c0 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:UNDELIV err:034 text:",
        "a3f2b1c0",
        UNDELIV,
        "034",
        "",
    ),
    (  # keys in odd case, underscores in date keys
        "ID:A3F2B1C0 SUB:001 DLVRD:000 Submit_Date:2401011200 Done_Date:2401011300 Stat:EXPIRED Err:000 Text:x",
        "A3F2B1C0",
        EXPIRED,
        "000",
        "x",
    ),
    (  # minimal: only id and stat
        "id:42 stat:DELIVRD",
        "42",
        DELIVRD,
        None,
        None,
    ),
    (  # full-word state, no text field
        "id:77 sub:1 dlvrd:1 submit date:2401011200 done date:2401011201 stat:DELIVERED err:0",
        "77",
        DELIVRD,
        "0",
        None,
    ),
    (  # text field containing things that look like keys
        "id:5 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:REJECTD err:0B text:id:9 stat:x",
        "5",
        REJECTD,
        "0B",
        "id:9 stat:x",
    ),
    (  # extra whitespace, dates with seconds
        "id:  1001   sub:001  dlvrd:001  submit date:240101120059  done date:240101120159  stat:DELIVRD  err:000 text:",
        "1001",
        DELIVRD,
        "000",
        "",
    ),
    (  # UUID-style id
        "id:6f1c2a8e-3b7d-4c1e-9a0f-1234567890ab stat:ACCEPTD err:000",
        "6f1c2a8e-3b7d-4c1e-9a0f-1234567890ab",
        "ACCEPTD",
        "000",
        None,
    ),
]


@pytest.mark.parametrize(("text", "message_id", "stat", "err", "body"), RECEIPT_CORPUS)
def test_parse_receipt_text(text: str, message_id: str, stat: str, err: str | None, body: str | None) -> None:
    receipt = parse_receipt_text(text)
    assert receipt is not None
    assert receipt.message_id == message_id
    assert receipt.stat == stat
    assert receipt.err == err
    assert receipt.text == body


def test_parse_receipt_text_dates_and_counts() -> None:
    receipt = parse_receipt_text(RECEIPT_CORPUS[0][0])
    assert receipt is not None
    assert (receipt.sub, receipt.dlvrd) == ("001", "001")
    assert (receipt.submit_date, receipt.done_date) == ("2401011200", "2401011201")


@pytest.mark.parametrize(
    "text",
    ["", "hello there", "stat:DELIVRD err:000", "id:123 sub:001 dlvrd:001", "receipted_message_id:1 stat:DELIVRD"],
)
def test_not_a_receipt(text: str) -> None:
    assert parse_receipt_text(text) is None


def test_format_then_parse() -> None:
    text = format_receipt_text(
        message_id="12", stat=DELIVRD, submit_date="2401011200", done_date="2401011201", text="a long message body here"
    )
    receipt = parse_receipt_text(text)
    assert receipt is not None
    assert (receipt.message_id, receipt.stat, receipt.err) == ("12", DELIVRD, "000")
    assert receipt.text == "a long message body "  # the first 20 characters


# Pairs that are the same SMSC message and must normalise to the same key.
SAME_ID = [
    ("2623", "2623"),
    ("0000002623", "2623"),  # decimal with zero padding
    ("A3F", "a3f"),  # hex, case
    ("00000A3F", "a3f"),  # hex with zero padding
    ("0x0A3F", "A3F"),  # 0x prefix
    ("A3F", "2623"),  # hex in the resp, decimal in the receipt text
    ("A0000001", "2684354561"),
    ("A0000001", "02684354561"),
    (" 42\x00", "42"),  # stray whitespace / NUL from a sloppy TLV
    ("6F1C2A8E-3B7D-4C1E-9A0F-1234567890AB", "6f1c2a8e-3b7d-4c1e-9a0f-1234567890ab"),  # opaque, case only
]

DIFFERENT_ID = [
    ("2623", "2624"),
    ("A3F", "A3E"),
    ("msg-1", "msg-01"),  # opaque ids are not numbers: zeros matter
]


@pytest.mark.parametrize(("a", "b"), SAME_ID)
def test_normalize_message_id_matches(a: str, b: str) -> None:
    assert normalize_message_id(a) == normalize_message_id(b)


@pytest.mark.parametrize(("a", "b"), DIFFERENT_ID)
def test_normalize_message_id_keeps_different_ids_apart(a: str, b: str) -> None:
    assert normalize_message_id(a) != normalize_message_id(b)


def test_normalize_message_id_canonical_form() -> None:
    assert normalize_message_id("00A3F") == "2623"
    assert normalize_message_id("000") == "0"
    assert normalize_message_id("") == ""


def test_normalize_message_id_with_explicit_radix() -> None:
    # An all-digit hex id is read as decimal unless the carrier is configured as hex.
    assert normalize_message_id("1234") == "1234"
    assert normalize_message_id("1234", radix=16) == normalize_message_id("4660")
    assert normalize_message_id("0001234", radix=10) == "1234"
    with pytest.raises(ValueError):
        normalize_message_id("12", radix=8)


def test_message_state_mapping() -> None:
    assert [MESSAGE_STATE_TO_STAT[i] for i in range(1, 9)] == [
        "ENROUTE",
        "DELIVRD",
        "EXPIRED",
        "DELETED",
        "UNDELIV",
        "ACCEPTD",
        "UNKNOWN",
        "REJECTD",
    ]
    assert stat_from_message_state(0) == "UNKNOWN"
    assert stat_from_message_state(99) == "UNKNOWN"


# --- deliver_sm -> InboundDeliver ---------------------------------------------------------


def test_text_receipt() -> None:
    pdu = DeliverSm(
        source_addr="447700900123",
        destination_addr="SMSGW",
        esm_class=c.ESM_CLASS_SMSC_DELIVERY_RECEIPT,
        short_message=(
            b"id:0000000042 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:UNDELIV err:034 text:hi"
        ),
    )
    inbound = from_deliver_sm(pdu)
    assert inbound.is_receipt
    assert inbound.receipted_message_id == "0000000042"
    assert inbound.message_id_key == "42"
    assert (inbound.state, inbound.error_code) == (UNDELIV, "034")
    assert (inbound.source, inbound.destination) == ("447700900123", "SMSGW")


def test_tlv_receipt_without_text() -> None:
    pdu = DeliverSm(
        esm_class=c.ESM_CLASS_SMSC_DELIVERY_RECEIPT,
        tlvs={
            c.TAG_RECEIPTED_MESSAGE_ID: tlv_cstr("A0000001"),
            c.TAG_MESSAGE_STATE: tlv_u8(8),
            c.TAG_NETWORK_ERROR_CODE: bytes((3, 0, 11)),
        },
    )
    inbound = from_deliver_sm(pdu)
    assert inbound.is_receipt
    assert inbound.receipted_message_id == "A0000001"
    assert inbound.message_id_key == normalize_message_id("2684354561")
    assert (inbound.state, inbound.error_code) == (REJECTD, "011")
    assert inbound.text is None


def test_tlv_wins_over_text_and_both_normalise_alike() -> None:
    pdu = DeliverSm(
        esm_class=c.ESM_CLASS_SMSC_DELIVERY_RECEIPT,
        short_message=b"id:2684354561 stat:UNKNOWN err:000",
        tlvs={c.TAG_RECEIPTED_MESSAGE_ID: tlv_cstr("A0000001"), c.TAG_MESSAGE_STATE: tlv_u8(2)},
    )
    inbound = from_deliver_sm(pdu)
    assert inbound.receipted_message_id == "A0000001"
    assert inbound.state == DELIVRD
    assert inbound.error_code == "000"
    assert inbound.raw["receipt_text"]["id"] == "2684354561"


def test_receipt_flagged_only_by_tlv() -> None:
    # Some SMSCs leave esm_class at 0 but still send receipted_message_id.
    pdu = DeliverSm(tlvs={c.TAG_RECEIPTED_MESSAGE_ID: b"7", c.TAG_MESSAGE_STATE: tlv_u8(2)})
    inbound = from_deliver_sm(pdu)
    assert inbound.is_receipt and inbound.receipted_message_id == "7" and inbound.state == DELIVRD


def test_mo_gsm7() -> None:
    pdu = DeliverSm(source_addr="447700900123", destination_addr="12345", short_message=encode_gsm7("Hi @ £5 {ok}"))
    inbound = from_deliver_sm(pdu)
    assert not inbound.is_receipt
    assert inbound.text == "Hi @ £5 {ok}"
    assert inbound.receipted_message_id is None and inbound.message_id_key is None


def test_mo_ucs2_part_with_udh() -> None:
    pdu = DeliverSm(
        esm_class=c.ESM_CLASS_UDHI,
        data_coding=c.DATA_CODING_UCS2,
        short_message=concat_udh(9, 2, 1) + encode_ucs2("Привет 👋"),
    )
    inbound = from_deliver_sm(pdu)
    assert inbound.text == "Привет 👋"
    assert inbound.raw["concat"] == {"reference": 9, "total": 2, "sequence": 1}


def test_mo_part_concat_from_udh8_udh16_and_sar() -> None:
    from smsgw.smpp.inbound import Concat
    from smsgw.smpp.pdu import tlv_u16

    udh8 = from_deliver_sm(DeliverSm(esm_class=c.ESM_CLASS_UDHI, short_message=concat_udh(9, 2, 1) + b"ab"))
    udh16 = from_deliver_sm(
        DeliverSm(esm_class=c.ESM_CLASS_UDHI, short_message=bytes((6, 8, 4, 0x12, 0x34, 3, 2)) + b"cd")
    )
    sar = from_deliver_sm(
        DeliverSm(
            short_message=b"ef",
            tlvs={
                c.TAG_SAR_MSG_REF_NUM: tlv_u16(0xBEEF),
                c.TAG_SAR_TOTAL_SEGMENTS: tlv_u8(4),
                c.TAG_SAR_SEGMENT_SEQNUM: tlv_u8(4),
            },
        )
    )
    assert (udh8.concat, udh8.text) == (Concat(reference=9, total=2, sequence=1), "ab")
    assert (udh16.concat, udh16.text) == (Concat(reference=0x1234, total=3, sequence=2), "cd")
    assert (sar.concat, sar.text) == (Concat(reference=0xBEEF, total=4, sequence=4), "ef")


@pytest.mark.parametrize("total, sequence", [(1, 1), (3, 0), (3, 4), (0, 0)])
def test_mo_with_void_sar_numbers_is_a_whole_message(total: int, sequence: int) -> None:
    inbound = from_deliver_sm(
        DeliverSm(
            short_message=b"hi",
            tlvs={
                c.TAG_SAR_MSG_REF_NUM: tlv_u8(1),
                c.TAG_SAR_TOTAL_SEGMENTS: tlv_u8(total),
                c.TAG_SAR_SEGMENT_SEQNUM: tlv_u8(sequence),
            },
        )
    )
    assert inbound.concat is None and inbound.text == "hi"


def test_mo_with_undecodable_gsm7_falls_back() -> None:
    inbound = from_deliver_sm(DeliverSm(short_message="café".encode("latin-1")))
    assert inbound.text == "café"


# --- per-carrier id radix: a corpus of (submit_sm_resp id, receipt id) pairs -------------------------


def _digits_only_hex_values(count: int) -> list[int]:
    """Message id values whose hex spelling has no letter: the ids auto-detection reads as decimal."""
    values: list[int] = []
    value = 0x10000000
    step = 0x10001  # spread over the range, not only the low digits
    while len(values) < count:
        value += step
        if f"{value:X}".isdigit():
            values.append(value)
    return values


_HEX_VALUES = _digits_only_hex_values(500) + [0x1, 0x10, 0x99, 0x100000, 0x0, 0x2623, 0xA3F, 0xFFFFFFFF]

# How each kind of carrier spells one id: (carrier config fields, submit_sm_resp spelling, receipt spelling).
_CARRIERS: dict[str, tuple[dict[str, int], object, object]] = {
    # Hex in both: the receipt TLV or text repeats the id, but with its own padding, case or prefix.
    "hex-both": ({"receipt_id_radix": 16}, lambda v: f"{v:X}", lambda v: f"0x{v:08x}"),
    "hex-both-padded": ({"receipt_id_radix": 16}, lambda v: f"{v:08X}", lambda v: f"{v:X}".lower()),
    # Hex in submit_sm_resp, decimal (Appendix B's 10 digits) in the receipt text: Kannel msg-id-type 0x02.
    "hex-submit-decimal-receipt": (
        {"submit_id_radix": 16, "receipt_id_radix": 10},
        lambda v: f"{v:08X}",
        lambda v: f"{v:010d}",
    ),
    # Decimal everywhere, zero-padded differently.
    "decimal-both": ({"receipt_id_radix": 10}, str, lambda v: f"{v:010d}"),
}


def _carrier(**radix: int):
    from smsgw_carrier_adapter.carriers import SmppCarrier
    from smsgw_carrier_adapter.smpp.client import SmppCarrierClient

    config = SmppCarrier(name="ids", system_id="smsgw", password="secret", **radix)
    return SmppCarrierClient(config, reports=None)  # type: ignore[arg-type]  # ids only: nothing is reported


@pytest.mark.parametrize("kind", list(_CARRIERS))
def test_radix_configured_pairs_match_for_every_id(kind: str) -> None:
    radix, submit_spelling, receipt_spelling = _CARRIERS[kind]
    carrier = _carrier(**radix)
    pairs = [(submit_spelling(v), receipt_spelling(v)) for v in _HEX_VALUES]  # type: ignore[operator]
    matched = sum(carrier.submit_id_key(s) == carrier.receipt_id_key(r) for s, r in pairs)
    assert matched == len(pairs)  # 100 %
    # ... and no two different messages share a key.
    assert len({carrier.submit_id_key(s) for s, _ in pairs}) == len(set(_HEX_VALUES))


@pytest.mark.parametrize("kind", ["hex-both", "hex-submit-decimal-receipt"])
def test_without_the_radix_digit_only_hex_ids_do_not_match(kind: str) -> None:
    # Why the setting exists: auto-detection reads "10010001" as decimal.
    _radix, submit_spelling, receipt_spelling = _CARRIERS[kind]
    carrier = _carrier()
    digits_only = _digits_only_hex_values(500)
    pairs = [(submit_spelling(v), receipt_spelling(v)) for v in digits_only]  # type: ignore[operator]
    matched = sum(carrier.submit_id_key(s) == carrier.receipt_id_key(r) for s, r in pairs)
    assert matched == 0


def test_submit_radix_defaults_to_the_receipt_radix() -> None:
    carrier = _carrier(receipt_id_radix=16)
    assert carrier.submit_id_key("10") == carrier.receipt_id_key("0x10") == "16"
    assert _carrier().submit_id_key("10") == "10"


async def test_a_receipt_that_cannot_be_matched_is_logged_by_its_fields_never_their_values(caplog):
    class Reports:
        async def on_receipt(self, *args, **kwargs):
            raise AssertionError("a receipt without an id matches no message")

    client = SmppCarrierClient(SmppCarrier(name="smsc", system_id="smsgw", password="secret"), Reports())
    # A receipt by its esm_class whose text has no id, quoting the body as receipts do.
    unmatched = from_deliver_sm(
        DeliverSm(esm_class=c.ESM_CLASS_SMSC_DELIVERY_RECEIPT, short_message=b"stat:DELIVRD text:your code is 4711")
    )
    assert unmatched.is_receipt and unmatched.receipted_message_id is None
    await client._deliver(unmatched)  # what the receiver session calls for each deliver_sm
    (warning,) = [r.getMessage() for r in caplog.records if "without a message id" in r.getMessage()]
    assert "short_message_hex" in warning
    assert "4711" not in warning and b"4711".hex() not in warning and "your code" not in warning


@pytest.mark.parametrize(
    "text",
    [
        "id:7 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000",
        "id:7 sub:001 dlvrd:001 submit_date:2401011200 done_date:2401011201 stat:DELIVRD err:000",
        "ID:7 SUB:001 DLVRD:001 SUBMIT DATE:2401011200 DONE DATE:2401011201 STAT:DELIVRD ERR:000",
        "id:7 sub:001 dlvrd:001 submitdate:2401011200 donedate:2401011201 stat:DELIVRD err:000",
    ],
)
def test_parse_receipt_text_dates_however_the_keys_are_written(text: str) -> None:
    # SMSCs write the date keys with a space, an underscore or nothing between the words, in any case.
    receipt = parse_receipt_text(text)
    assert receipt is not None
    assert (receipt.message_id, receipt.stat, receipt.err) == ("7", DELIVRD, "000")
    assert (receipt.submit_date, receipt.done_date) == ("2401011200", "2401011201")
