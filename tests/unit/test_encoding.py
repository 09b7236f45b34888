"""Unit tests for smsgw.domain.encoding (pure, no I/O)."""

from __future__ import annotations

import random

import pytest

from smsgw.domain.encoding import (
    MAX_SEGMENTS,
    Encoding,
    SegmentPlan,
    choose_encoding,
    concat_udh,
    decode_gsm7,
    decode_ucs2,
    encode_gsm7,
    encode_ucs2,
    parse_concat_udh,
    plan_segments,
    split_encoded,
)

# Written out independently of the module's table so a typo there is caught here.
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = "\f^{}\\[~]|€"
EMOJI = "😀"  # U+1F600: one character, two UTF-16 code units


def septets(part: bytes) -> int:
    return len(part)


def utf16_units(part: bytes) -> int:
    return len(part) // 2


# --- choose_encoding ------------------------------------------------------------


def test_basic_table_has_127_characters_and_they_are_all_gsm7():
    assert len(GSM_BASIC) == 127  # 128 codes minus the escape
    assert len(set(GSM_BASIC)) == 127
    assert choose_encoding(GSM_BASIC) is Encoding.GSM7


@pytest.mark.parametrize("ch", list(GSM_EXTENSION))
def test_extension_characters_are_gsm7(ch):
    assert choose_encoding(ch) is Encoding.GSM7


@pytest.mark.parametrize("ch", ["ç", "`", "á", "ê", "\t", "\u00a0", "Б", "中", EMOJI, "\x1b"])
def test_characters_outside_gsm_force_ucs2(ch):
    assert choose_encoding("hello " + ch) is Encoding.UCS2


def test_decomposed_accent_is_not_normalised_to_gsm():
    # 'e' + COMBINING ACUTE looks like 'é' but is two code points; no silent NFC.
    assert choose_encoding("e\u0301") is Encoding.UCS2


def test_encoding_is_a_str_enum():
    assert Encoding.GSM7 == "GSM7" and Encoding.UCS2 == "UCS2"


# --- GSM7 encode / decode -----------------------------------------------------------


def test_basic_table_encodes_to_its_code_points():
    encoded = encode_gsm7(GSM_BASIC)
    assert list(encoded) == [code for code in range(128) if code != 0x1B]


def test_known_septet_values():
    assert encode_gsm7("@£$") == b"\x00\x01\x02"
    assert encode_gsm7("\n\r") == b"\x0a\x0d"
    assert encode_gsm7("Ç") == b"\x09"
    assert encode_gsm7("A a") == b"\x41\x20\x61"
    assert encode_gsm7("¡¿§à") == b"\x40\x60\x5f\x7f"


def test_extension_characters_encode_as_escape_pairs():
    assert encode_gsm7(GSM_EXTENSION) == bytes(
        [
            0x1B,
            0x0A,
            0x1B,
            0x14,
            0x1B,
            0x28,
            0x1B,
            0x29,
            0x1B,
            0x2F,
            0x1B,
            0x3C,
            0x1B,
            0x3D,
            0x1B,
            0x3E,
            0x1B,
            0x40,
            0x1B,
            0x65,
        ]
    )


def test_round_trip_every_gsm_character():
    text = GSM_BASIC + GSM_EXTENSION
    assert decode_gsm7(encode_gsm7(text)) == text
    for ch in text:
        assert decode_gsm7(encode_gsm7(ch)) == ch


def test_encode_gsm7_rejects_non_gsm_character():
    with pytest.raises(ValueError, match="position 2"):
        encode_gsm7("ab`")


def test_decode_gsm7_unknown_escape_falls_back_to_basic_character():
    assert decode_gsm7(b"\x1b\x41") == "A"


def test_decode_gsm7_double_escape_is_space_and_dangling_escape_dropped():
    assert decode_gsm7(b"\x1b\x1bA") == " A"
    assert decode_gsm7(b"A\x1b") == "A"


def test_decode_gsm7_rejects_octets_above_7f():
    with pytest.raises(ValueError):
        decode_gsm7(b"A\x80")
    with pytest.raises(ValueError):
        decode_gsm7(b"\x1b\xff")


# --- UCS2 encode / decode -----------------------------------------------------------


def test_ucs2_is_utf16_big_endian_with_surrogate_pairs():
    assert encode_ucs2("Aé") == b"\x00\x41\x00\xe9"
    assert encode_ucs2(EMOJI) == b"\xd8\x3d\xde\x00"


@pytest.mark.parametrize("text", ["", "Привет", "中文短信", EMOJI * 3, "mixed é € 😀 ok"])
def test_ucs2_round_trip(text):
    assert decode_ucs2(encode_ucs2(text)) == text


def test_decode_ucs2_rejects_odd_length():
    with pytest.raises(ValueError):
        decode_ucs2(b"\x00\x41\x00")


# --- plan_segments / split_encoded: GSM7 --------------------------------------------


def test_empty_text_has_no_segments():
    assert plan_segments("") == SegmentPlan(Encoding.GSM7, segments=0, units=0, units_per_segment=160)
    assert split_encoded("") == (Encoding.GSM7, [])


def test_gsm_160_fits_one_sms():
    text = "a" * 160
    assert plan_segments(text) == SegmentPlan(Encoding.GSM7, segments=1, units=160, units_per_segment=160)
    encoding, parts = split_encoded(text)
    assert encoding is Encoding.GSM7
    assert parts == [b"a" * 160]


def test_gsm_161_needs_two_parts():
    text = "a" * 161
    assert plan_segments(text) == SegmentPlan(Encoding.GSM7, segments=2, units=161, units_per_segment=153)
    _, parts = split_encoded(text)
    assert [septets(p) for p in parts] == [153, 8]


def test_gsm_three_full_parts():
    text = "b" * (153 * 3)
    assert plan_segments(text).segments == 3
    _, parts = split_encoded(text)
    assert [septets(p) for p in parts] == [153, 153, 153]
    assert plan_segments(text + "b").segments == 4


def test_extension_characters_cost_two_septets():
    plan = plan_segments("€" * 80)
    assert plan.units == 160
    assert plan.segments == 1
    assert plan_segments("€" * 80 + "a").segments == 2


def test_extension_pair_is_never_split_across_parts():
    # 152 plain septets then '€': the escape would be septet 153 and its code
    # septet 154, so the whole pair must move to the next part.
    text = "a" * 152 + "€" + "b" * 10
    plan = plan_segments(text)
    assert plan.units == 152 + 2 + 10
    _, parts = split_encoded(text)
    assert parts[0] == b"a" * 152
    assert parts[1] == b"\x1b\x65" + b"b" * 10
    assert plan.segments == len(parts) == 2
    for part in parts:
        assert not part.endswith(b"\x1b")


def test_extension_boundary_changes_part_count():
    # 153 * 2 septets counted naively, but each part can hold only 76 pairs (152 septets).
    text = "€" * 153
    plan = plan_segments(text)
    assert plan.units == 306
    _, parts = split_encoded(text)
    assert [septets(p) for p in parts] == [152, 152, 2]
    assert plan.segments == 3


def test_gsm_parts_decode_back_to_the_text():
    text = ("Hello {world} [1] ~ 2 | € ^ \\ " * 20)[:500]
    _, parts = split_encoded(text)
    assert "".join(decode_gsm7(p) for p in parts) == text
    assert all(septets(p) <= 153 for p in parts)


# --- plan_segments / split_encoded: UCS2 --------------------------------------------


def test_ucs2_70_fits_one_sms():
    text = "Ж" * 70
    assert plan_segments(text) == SegmentPlan(Encoding.UCS2, segments=1, units=70, units_per_segment=70)
    _, parts = split_encoded(text)
    assert len(parts) == 1 and len(parts[0]) == 140


def test_ucs2_71_needs_two_parts():
    text = "Ж" * 71
    assert plan_segments(text) == SegmentPlan(Encoding.UCS2, segments=2, units=71, units_per_segment=67)
    _, parts = split_encoded(text)
    assert [utf16_units(p) for p in parts] == [67, 4]
    assert all(len(p) <= 134 for p in parts)


def test_emoji_counts_two_units():
    plan = plan_segments(EMOJI * 35)
    assert plan.units == 70 and plan.segments == 1
    assert plan_segments(EMOJI * 35 + "a").segments == 2


def test_surrogate_pair_at_67_boundary_is_not_split():
    # 66 units then an emoji: its high surrogate would be unit 67 and its low
    # surrogate unit 68, so the emoji must start the second part.
    text = "Ж" * 66 + EMOJI + "Ж" * 5
    plan = plan_segments(text)
    assert plan.encoding is Encoding.UCS2
    assert plan.units == 66 + 2 + 5
    _, parts = split_encoded(text)
    assert [utf16_units(p) for p in parts] == [66, 7]
    assert parts[1].startswith(encode_ucs2(EMOJI))
    for part in parts:
        decode_ucs2(part)  # each part is well-formed UTF-16 on its own
    assert plan.segments == len(parts)


def test_single_non_gsm_char_switches_whole_text_to_ucs2():
    text = "a" * 100 + "`"
    plan = plan_segments(text)
    assert plan.encoding is Encoding.UCS2
    assert plan.units == 101
    assert plan.segments == 2


def test_ucs2_parts_decode_back_to_the_text():
    text = ("Привет 😀 мир 🇺🇦 " * 30)[:400]
    _, parts = split_encoded(text)
    assert "".join(decode_ucs2(p) for p in parts) == text
    assert all(utf16_units(p) <= 67 for p in parts)


# --- plan == split, on generated text ---------------------------------------------------

_ALPHABETS = {
    "plain": "abc XYZ 123",
    "gsm_with_extension": GSM_BASIC + GSM_EXTENSION,
    "extension_heavy": GSM_EXTENSION + "a",
    "ucs2_bmp": "ЖЯя中文é`",
    "ucs2_with_emoji": "Ж😀🎉a",
    "emoji_only": "😀🎉🚀",
}


@pytest.mark.parametrize("alphabet_name", sorted(_ALPHABETS))
def test_plan_matches_split_for_generated_text(alphabet_name):
    rng = random.Random(f"smsgw-{alphabet_name}")  # fixed seed: reproducible failures
    alphabet = _ALPHABETS[alphabet_name]
    lengths = list(range(340)) + [rng.randint(340, 1600) for _ in range(60)]
    for length in lengths:
        text = "".join(rng.choice(alphabet) for _ in range(length))
        if not text:
            continue  # covered by test_empty_text_has_no_segments
        plan = plan_segments(text)
        encoding, parts = split_encoded(text)
        assert encoding is plan.encoding
        assert plan.segments == len(parts), text
        if plan.encoding is Encoding.GSM7:
            assert sum(septets(p) for p in parts) == plan.units
            assert "".join(decode_gsm7(p) for p in parts) == text
            limit = 160 if len(parts) == 1 else 153
            assert all(septets(p) <= limit for p in parts)
            assert not any(p.endswith(b"\x1b") for p in parts)
        else:
            assert sum(utf16_units(p) for p in parts) == plan.units
            assert "".join(decode_ucs2(p) for p in parts) == text
            limit = 70 if len(parts) == 1 else 67
            assert all(utf16_units(p) <= limit for p in parts)
        assert plan.units_per_segment == limit


def test_max_segments_policy_default():
    assert MAX_SEGMENTS == 10
    assert plan_segments("a" * 153 * 10).segments == MAX_SEGMENTS
    assert plan_segments("a" * (153 * 10 + 1)).segments == MAX_SEGMENTS + 1


# --- concatenation UDH ------------------------------------------------------------


def test_concat_udh_bytes():
    assert concat_udh(0x42, 3, 1) == bytes([0x05, 0x00, 0x03, 0x42, 0x03, 0x01])
    assert concat_udh(255, 255, 255) == bytes([0x05, 0x00, 0x03, 0xFF, 0xFF, 0xFF])
    assert len(concat_udh(0, 2, 2)) == 6


@pytest.mark.parametrize(
    ("reference", "total", "sequence"),
    [(256, 2, 1), (-1, 2, 1), (1, 0, 1), (1, 256, 1), (1, 2, 0), (1, 2, 3)],
)
def test_concat_udh_rejects_out_of_range(reference, total, sequence):
    with pytest.raises(ValueError):
        concat_udh(reference, total, sequence)


def test_parse_8bit_concat_udh_round_trip():
    payload = concat_udh(7, 3, 2) + b"hello"
    assert parse_concat_udh(payload) == (7, 3, 2, b"hello")


def test_parse_16bit_concat_udh():
    payload = bytes([0x06, 0x08, 0x04, 0x12, 0x34, 0x05, 0x04]) + b"rest"
    assert parse_concat_udh(payload) == (0x1234, 5, 4, b"rest")


def test_parse_concat_udh_among_other_ies():
    # Application port addressing (IE 0x05) before the concat IE.
    port_ie = bytes([0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0])
    concat_ie = bytes([0x00, 0x03, 0x99, 0x02, 0x01])
    payload = bytes([len(port_ie) + len(concat_ie)]) + port_ie + concat_ie + b"x"
    assert parse_concat_udh(payload) == (0x99, 2, 1, b"x")


def test_parse_concat_udh_empty_rest():
    assert parse_concat_udh(concat_udh(1, 1, 1)) == (1, 1, 1, b"")


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"hello",  # 'h' as a header length runs past the end
        bytes([0x00]) + b"text",  # empty header
        bytes([0x05, 0x00, 0x03, 0x01, 0x02]),  # truncated
        bytes([0x04, 0x05, 0x02, 0x0B, 0x84]) + b"x",  # header without a concat IE
        bytes([0x05, 0x00, 0x04, 0x01, 0x02, 0x01]),  # IE length runs past the header
        bytes([0x05, 0x00, 0x03, 0x01, 0x00, 0x00]),  # total 0
        bytes([0x05, 0x00, 0x03, 0x01, 0x02, 0x00]),  # sequence 0
        bytes([0x05, 0x00, 0x03, 0x01, 0x02, 0x03]),  # sequence beyond total
    ],
)
def test_parse_concat_udh_returns_none_when_absent_or_malformed(payload):
    assert parse_concat_udh(payload) is None


def test_split_parts_with_udh_fit_sms_limits():
    # What the adapter will send: UDH + part must fit 140 octets for UCS2
    # (and 6 + 153 = 159 unpacked septets for GSM7, which SMPP short_message allows).
    _, parts = split_encoded("Ж" * 200)
    total = len(parts)
    for sequence, part in enumerate(parts, start=1):
        assert len(concat_udh(9, total, sequence) + part) <= 140


def test_smart_encoding_replaces_look_alikes_only_when_that_makes_the_text_gsm7():
    from smsgw.domain.encoding import smart_encoded

    typed = "Your code is \u201c482913\u201d \u2014 don\u2019t share it\u2026\u00a0Valid 10\u2009min."
    assert plan_segments(typed).encoding is Encoding.UCS2
    sent = smart_encoded(typed)
    assert sent == 'Your code is "482913" - don\'t share it... Valid 10 min.'
    assert plan_segments(sent).encoding is Encoding.GSM7
    # 90 characters: two UCS-2 parts as typed, one GSM-7 part once replaced.
    long_typed = typed + " " + "x" * (90 - len(typed) - 1)
    assert plan_segments(long_typed).segments == 2 and plan_segments(smart_encoded(long_typed)).segments == 1
    assert smart_encoded("plain GSM text") is None, "nothing to replace"
    assert smart_encoded("\u201cquoted\u201d \U0001f600") is None, "an emoji keeps it UCS-2: sent as given"
    assert smart_encoded("\u041f\u0440\u0438\u0432\u0435\u0442") is None, "Cyrillic has no look-alikes here"
    assert smart_encoded("zero\u200bwidth") == "zerowidth"


def test_decode_gsm7_without_escapes_gives_each_septet_its_default_alphabet_character():
    # Every septet but the escape, in a text with none (the translated path), and the same
    # septets around an escape (the septet-by-septet path): each gives the table's character.
    septets = bytes(code for code in range(128) if code != 0x1B)
    table = "".join(decode_gsm7(bytes([code])) for code in septets)
    assert decode_gsm7(septets) == table and len(table) == 127
    assert decode_gsm7(septets + b"\x1b\x65" + septets) == table + "€" + table
    assert decode_gsm7(b"id:1 stat:DELIVRD") == "id:1 stat:DELIVRD"
    assert decode_gsm7(b"\x00\x02\x11") == "@$_"
