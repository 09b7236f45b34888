"""Unit tests for smsgw.domain.phone (pure, no I/O)."""

from __future__ import annotations

import pytest

from smsgw.domain.errors import InvalidArgument, InvalidPhoneNumber, MissingField
from smsgw.domain.phone import normalize_e164


def test_docs_example_is_accepted():
    # +14155550100 is the example in our docs; it must stay valid whatever
    # phonenumbers' metadata says about fictional 555-01XX numbers.
    assert normalize_e164("+14155550100", field="to") == "+14155550100"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+442079460958", "+442079460958"),  # GB landline
        ("+447911123456", "+447911123456"),  # GB mobile
        ("+4915123456789", "+4915123456789"),  # DE mobile
        ("+33612345678", "+33612345678"),  # FR mobile
        ("+81312345678", "+81312345678"),  # JP
        ("+8613800138000", "+8613800138000"),  # CN mobile
        ("+5511912345678", "+5511912345678"),  # BR mobile
        ("+61412345678", "+61412345678"),  # AU mobile
        ("+919876543210", "+919876543210"),  # IN mobile
        ("+79123456789", "+79123456789"),  # RU mobile
    ],
)
def test_valid_numbers_of_several_countries(value, expected):
    assert normalize_e164(value, field="to") == expected


@pytest.mark.parametrize(
    "value",
    ["+1 (415) 555-0100", "+1-415-555-0100", "+1.415.555.0100", "  +14155550100  ", "+1 415 5550100"],
)
def test_visual_separators_and_surrounding_space_are_normalised_away(value):
    assert normalize_e164(value, field="to") == "+14155550100"


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_blank_is_missing_field(value):
    with pytest.raises(MissingField) as info:
        normalize_e164(value, field="to")
    assert info.value.field == "to"
    assert "to" in info.value.message
    assert info.value.reason == "MISSING_FIELD"


def assert_invalid(value: str, detail: str, *, field: str = "to") -> InvalidPhoneNumber:
    with pytest.raises(InvalidPhoneNumber) as info:
        normalize_e164(value, field=field)
    error = info.value
    assert error.field == field
    assert error.metadata == {"value": value, "detail": detail}
    assert error.message.startswith(f"{field}: {value!r} ")
    assert error.message.endswith("expected E.164 like +14155550100")
    return error


@pytest.mark.parametrize("value", ["4155550100", "(415) 555-0100", "14155550100"])
def test_missing_plus_asks_for_country_code(value):
    error = assert_invalid(value, "MISSING_COUNTRY_CODE")
    assert "country code" in error.message
    assert "'+'" in error.message


def test_international_prefix_00_hints_at_plus():
    error = assert_invalid("0014155550100", "MISSING_COUNTRY_CODE")
    assert "00" in error.message and "'+'" in error.message


@pytest.mark.parametrize(
    ("value", "bad_char"),
    [
        ("+1415555abcd", "a"),
        ("+1 800 FLOWERS", "F"),
        ("+14155550100 ext 12", "e"),
        ("+1415555#0100", "#"),
        ("+1+4155550100", "+"),
    ],
)
def test_letters_and_symbols_are_rejected(value, bad_char):
    error = assert_invalid(value, "NOT_A_NUMBER")
    assert repr(bad_char) in error.message


def test_non_ascii_digits_are_rejected():
    assert_invalid("+１４１５５５５０１００", "NOT_A_NUMBER")  # fullwidth digits


def test_plus_alone_is_not_a_number():
    assert_invalid("+", "NOT_A_NUMBER")


def test_too_short_names_field_value_and_country():
    error = assert_invalid("+1415", "TOO_SHORT")
    assert error.message == "to: '+1415' is too short for country code +1; expected E.164 like +14155550100"


def test_too_short_national_number():
    assert_invalid("+3912", "TOO_SHORT")


def test_too_long_for_country():
    error = assert_invalid("+141555501001234", "TOO_LONG")
    assert "too long" in error.message and "+1" in error.message


def test_too_long_for_e164():
    error = assert_invalid("+12345678901234567890", "TOO_LONG")
    assert "15 digits" in error.message


@pytest.mark.parametrize("value", ["+999123456789", "+0123456789"])
def test_invalid_country_code(value):
    error = assert_invalid(value, "INVALID_COUNTRY_CODE")
    assert "country code" in error.message


def test_local_only_number_asks_for_area_code():
    error = assert_invalid("+86101234", "LOCAL_ONLY")
    assert "area code" in error.message


def test_possible_but_unallocated_number_is_invalid_for_region():
    # Right length for +1, but 242-555 is not an allocated Bahamas range.
    error = assert_invalid("+12425550100", "INVALID_FOR_REGION")
    assert "not a valid number for country code +1" in error.message


def test_error_is_an_invalid_argument_with_product_code():
    error = assert_invalid("+1415", "TOO_SHORT")
    assert isinstance(error, InvalidArgument)
    assert error.code == 100
    assert error.reason == "INVALID_PHONE_NUMBER"


def test_field_name_is_used_in_the_error():
    error = assert_invalid("+1415", "TOO_SHORT", field="from")
    assert error.message.startswith("from: ")


def test_huge_value_is_truncated_in_message_and_metadata():
    value = "+1" + "x" * 10_000
    with pytest.raises(InvalidPhoneNumber) as info:
        normalize_e164(value, field="to")
    error = info.value
    assert len(error.message) < 300
    assert len(error.metadata["value"]) <= 65
    assert error.metadata["value"].startswith("+1xxx")
    assert error.metadata["detail"] == "NOT_A_NUMBER"


def test_a_remembered_verdict_still_names_the_field_of_each_call():
    # Verdicts are cached by number; the error must still say which field of *this* request is wrong.
    for field in ("to", "from", "to"):
        with pytest.raises(InvalidPhoneNumber) as raised:
            normalize_e164("+1 242 555 0100", field=field)
        assert raised.value.field == field
        assert str(raised.value).startswith(f"{field}: ")
    assert normalize_e164("+1 (415) 555-0100", field="to") == normalize_e164("+14155550100", field="from")


def test_long_inputs_are_judged_without_being_remembered():
    from smsgw.domain.phone import _verdict

    before = _verdict.cache_info().currsize
    with pytest.raises(InvalidPhoneNumber):
        normalize_e164("+1" + "-" * 200 + "4155550100" + "0" * 20, field="to")
    assert _verdict.cache_info().currsize == before


def test_numbers_are_masked_for_logs_and_sender_ids_are_not():
    from smsgw.domain.phone import masked

    assert masked("+14155550177") == "+1415*****77"
    assert masked("+447700900123") == "+4477******23"
    assert masked("14155550177") == "1415*****77"  # as some carriers write it (SMPP source_addr)
    assert masked("ACME") == "ACME"  # an alphanumeric sender id is not personal
    assert masked("") == ""


def test_short_codes_are_shown_and_the_shortest_numbers_still_hide_three_digits():
    from smsgw.domain.phone import masked

    # A short code is a business's published number: shown, like a sender id.
    assert masked("12345") == "12345"
    assert masked("876543") == "876543"
    # The shortest E.164 numbers (Niue: +683 and 4 digits) keep less of their start.
    assert masked("+6834001") == "+68***01"
    assert masked("68340012") == "683***12"
    # Not ASCII digits (Arabic-Indic): not a number we send to; returned as it is.
    assert masked("+١٤١٥٥٥٥٠١٧٧") == "+١٤١٥٥٥٥٠١٧٧"


def test_numbers_inside_text_are_masked_and_the_rest_is_left_alone():
    from smsgw.domain.phone import numbers_masked

    detail = "to: +14155550177 replied STOP; nothing was sent. They must reply START"
    assert numbers_masked(detail) == "to: +1415*****77 replied STOP; nothing was sent. They must reply START"
    assert numbers_masked("The 'To' number 447700900123 is not valid (21211)") == (
        "The 'To' number 4477******23 is not valid (21211)"
    )
    # Ids, codes and times are not glued-on digits of a number: left as they are.
    unchanged = "message 7f3a9c12345678 failed at 2026-01-01T10:00:00Z with 0x0000000B, sent to ACME"
    assert numbers_masked(unchanged) == unchanged
    assert numbers_masked("") == ""
