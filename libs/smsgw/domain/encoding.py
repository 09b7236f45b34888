"""SMS text encoding: which alphabet, how many parts, and the bytes of each part.

This is the only implementation. The API uses ``plan_segments`` to tell a client
what a body will cost before it is sent, and the SMPP adapter uses
``split_encoded`` to produce what goes on the wire. Both are driven by the same
per-character cost and the same packing routine (``_pack``), so the number
quoted to the client is, by construction, the number of parts sent.

Reference: 3GPP TS 23.038 (alphabets) and TS 23.040 (concatenation UDH).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "MAX_SEGMENTS",
    "Encoding",
    "SegmentPlan",
    "choose_encoding",
    "concat_udh",
    "decode_gsm7",
    "decode_ucs2",
    "encode_gsm7",
    "encode_ucs2",
    "parse_concat_udh",
    "plan_segments",
    "split_encoded",
]

#: Policy default: intake rejects bodies needing more parts than this. Handsets
#: reassemble up to 255 parts in theory, but many carriers drop or bill oddly
#: beyond ~10, and a runaway body is more likely a bug than a real message.
MAX_SEGMENTS = 10


class Encoding(str, enum.Enum):  # noqa: UP042 - StrEnum would change str() of a member, which is logged and stored
    GSM7 = "GSM7"
    UCS2 = "UCS2"


@dataclass(frozen=True)
class SegmentPlan:
    encoding: Encoding
    #: Number of SMS parts; 1 if the text fits a single SMS, 0 for empty text.
    segments: int
    #: GSM septets (an extension char counts 2) or UTF-16 code units.
    units: int
    #: 160/153 for GSM7, 70/67 for UCS2 (single vs multipart).
    units_per_segment: int


# --- GSM 03.38 tables ---------------------------------------------------------

# The default alphabet, indexed by septet value (TS 23.038 §6.2.1). Position
# 0x1B is the escape to the extension table, not a character; it holds a
# placeholder that is removed from the lookup below.
_ESCAPE = 0x1B
_GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(_GSM7_BASIC) == 128

_CHAR_TO_SEPTET: dict[str, int] = {ch: code for code, ch in enumerate(_GSM7_BASIC) if code != _ESCAPE}
#: Septet -> character, for str.translate: a text without escapes is decoded in one C call.
_SEPTET_TO_CHAR: dict[int, str] = dict(enumerate(_GSM7_BASIC))

# The extension table (TS 23.038 §6.2.1.1): sent as ESC followed by the code,
# so each of these costs two septets.
_CHAR_TO_EXTENSION: dict[str, int] = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
_EXTENSION_TO_CHAR: dict[int, str] = {code: ch for ch, code in _CHAR_TO_EXTENSION.items()}

# --- segment sizes --------------------------------------------------------------

# A single SMS carries 140 octets of user data: 160 septets (packed 7-bit) or
# 70 UTF-16 code units. A multipart SMS spends 6 octets on the concatenation
# UDH, leaving 153 septets (the UDH plus one fill bit take 7 septets) or 67 code
# units.
_GSM7_SINGLE = 160
_GSM7_MULTI = 153
_UCS2_SINGLE = 70
_UCS2_MULTI = 67

_SIZES = {
    Encoding.GSM7: (_GSM7_SINGLE, _GSM7_MULTI),
    Encoding.UCS2: (_UCS2_SINGLE, _UCS2_MULTI),
}


# --- choosing and planning --------------------------------------------------------


def _is_gsm7(ch: str) -> bool:
    return ch in _CHAR_TO_SEPTET or ch in _CHAR_TO_EXTENSION


def choose_encoding(text: str) -> Encoding:
    """GSM7 if every character is in the default alphabet or its extension table, else UCS2.

    No look-alike substitution (e.g. 'ç' -> 'Ç') and no Unicode normalisation:
    the recipient must see exactly what the client sent, so one character
    outside the alphabet switches the whole message to UCS2.
    """
    return Encoding.GSM7 if all(_is_gsm7(ch) for ch in text) else Encoding.UCS2


# Smart encoding (an account's option, Account.smart_encoding): characters that force the whole
# message into UCS-2 (70 characters a part instead of 160) but have a GSM-7 look-alike that
# reads the same, as word processors and phone keyboards put them in: typographic quotes,
# dashes, spaces of other widths, the ellipsis, invisible characters.
_LOOK_ALIKES = {
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u02bc\u2039\u203a", "'"),
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb", '"'),
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),
    **dict.fromkeys("\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000", " "),
    **dict.fromkeys("\u200b\u200c\u200d\u2060\ufeff", ""),
    "\u2026": "...",
    "\u2022": "-",
    "\u00b4": "'",
    "\u02c6": "^",
    "\u02dc": "~",
}
_LOOK_ALIKE_TABLE = str.maketrans(_LOOK_ALIKES)


def smart_encoded(text: str) -> str | None:
    """``text`` with its look-alikes replaced, when that makes it GSM-7; None when the text is
    GSM-7 already or stays UCS-2 anyway (an emoji, Cyrillic: then the recipient sees exactly
    what was sent, as without the option)."""
    if all(_is_gsm7(ch) for ch in text):
        return None
    replaced = text.translate(_LOOK_ALIKE_TABLE)
    return replaced if all(_is_gsm7(ch) for ch in replaced) else None


def _unit_cost(ch: str, encoding: Encoding) -> int:
    """Units one character takes: an escape pair is 2 septets, an astral char is a surrogate pair."""
    if encoding is Encoding.GSM7:
        return 2 if ch in _CHAR_TO_EXTENSION else 1
    return 2 if ord(ch) > 0xFFFF else 1


def _pack(text: str, encoding: Encoding) -> Iterator[str]:
    """Yield the text of each part, greedily filling parts without splitting a character.

    Splitting on characters (never on units) is what keeps an escape pair or a
    surrogate pair together; it also means a part can end one unit short of the
    limit, which is why the part count is not simply ceil(units / 153).
    """
    single, multi = _SIZES[encoding]
    if sum(_unit_cost(ch, encoding) for ch in text) <= single:
        if text:
            yield text
        return
    start, used = 0, 0
    for index, ch in enumerate(text):
        cost = _unit_cost(ch, encoding)
        if used + cost > multi:
            yield text[start:index]
            start, used = index, 0
        used += cost
    yield text[start:]


def plan_segments(text: str) -> SegmentPlan:
    """What sending ``text`` will cost; always agrees with ``split_encoded``."""
    encoding = choose_encoding(text)
    units = sum(_unit_cost(ch, encoding) for ch in text)
    segments = sum(1 for _ in _pack(text, encoding))
    single, multi = _SIZES[encoding]
    return SegmentPlan(
        encoding=encoding,
        segments=segments,
        units=units,
        units_per_segment=single if segments <= 1 else multi,
    )


def split_encoded(text: str) -> tuple[Encoding, list[bytes]]:
    """The encoded parts to send: one if the text fits a single SMS, else parts of <=153 septets / <=67 code units.

    GSM7 parts are unpacked septets (SMPP data_coding=0); UCS2 parts are
    UTF-16BE. Empty text yields no parts.
    """
    encoding = choose_encoding(text)
    encode = encode_gsm7 if encoding is Encoding.GSM7 else encode_ucs2
    return encoding, [encode(part) for part in _pack(text, encoding)]


# --- GSM7 ------------------------------------------------------------------------


def encode_gsm7(text: str) -> bytes:
    """Unpacked septets, one per octet, as SMPP sends with data_coding=0.

    Extension characters become ESC (0x1B) followed by their code.
    Raises ValueError for a character outside the GSM 03.38 tables.
    """
    out = bytearray()
    for position, ch in enumerate(text):
        septet = _CHAR_TO_SEPTET.get(ch)
        if septet is not None:
            out.append(septet)
            continue
        extension = _CHAR_TO_EXTENSION.get(ch)
        if extension is None:
            raise ValueError(f"character {ch!r} at position {position} is not in the GSM 03.38 alphabet")
        out += bytes((_ESCAPE, extension))
    return bytes(out)


def decode_gsm7(data: bytes) -> str:
    """Inverse of ``encode_gsm7``; lenient on escapes, strict on octets above 0x7F.

    Per TS 23.038 §6.2.1.1, an escape followed by a code the extension table
    does not define is shown as the default-alphabet character for that code,
    and ESC ESC (reserved for a further table) as a space. A dangling escape at
    the end carries no character and is dropped. An octet above 0x7F cannot be
    a septet, so it means the data is not GSM7 at all: ValueError.
    """
    if data.isascii() and _ESCAPE not in data:
        # Most texts (every receipt's) have no escape: 1.5 µs for a receipt's against 24 in the loop.
        return data.decode("ascii").translate(_SEPTET_TO_CHAR)
    out: list[str] = []
    index = 0
    while index < len(data):
        code = data[index]
        if code > 0x7F:
            raise ValueError(f"octet 0x{code:02X} at position {index} is not a GSM 7-bit septet")
        if code != _ESCAPE:
            out.append(_GSM7_BASIC[code])
            index += 1
            continue
        if index + 1 >= len(data):
            break
        extension = data[index + 1]
        if extension > 0x7F:
            raise ValueError(f"octet 0x{extension:02X} at position {index + 1} is not a GSM 7-bit septet")
        if extension == _ESCAPE:
            out.append(" ")
        else:
            out.append(_EXTENSION_TO_CHAR.get(extension, _GSM7_BASIC[extension]))
        index += 2
    return "".join(out)


# --- UCS2 ------------------------------------------------------------------------


def encode_ucs2(text: str) -> bytes:
    """UTF-16BE; astral characters (emoji) become surrogate pairs.

    Strictly this is UTF-16, not UCS-2, which is what every current handset and
    SMSC means by data_coding=8.
    """
    return text.encode("utf-16-be")


def decode_ucs2(data: bytes) -> str:
    """Inverse of ``encode_ucs2``; raises ValueError (UnicodeDecodeError) on malformed data."""
    return data.decode("utf-16-be")


# --- concatenation UDH -------------------------------------------------------------

_IE_CONCAT_8BIT = 0x00
_IE_CONCAT_16BIT = 0x08


def concat_udh(reference: int, total: int, sequence: int) -> bytes:
    """User data header for one part of a concatenated SMS: 05 00 03 ref total seq.

    Raises ValueError rather than wrapping values silently: a reference of 256
    quietly becoming 0 would collide with another message's parts.
    """
    if not 0 <= reference <= 0xFF:
        raise ValueError(f"reference {reference} does not fit the 8-bit concatenation IE (0..255)")
    if not 1 <= total <= 0xFF:
        raise ValueError(f"total {total} must be 1..255")
    if not 1 <= sequence <= total:
        raise ValueError(f"sequence {sequence} must be 1..{total}")
    return bytes((0x05, _IE_CONCAT_8BIT, 0x03, reference, total, sequence))


def parse_concat_udh(payload: bytes) -> tuple[int, int, int, bytes] | None:
    """(reference, total, sequence, rest) if ``payload`` starts with a UDH holding a concatenation IE.

    Accepts the 8-bit (IE 0x00) and 16-bit (IE 0x08) reference forms, also when
    the header carries other IEs (e.g. port addressing). Returns None if there
    is no such IE or the header is malformed. A payload has a UDH only when the
    sender set the UDHI bit (SMPP esm_class 0x40), so call this only then: plain
    text can begin with the same bytes.
    """
    if not payload:
        return None
    header_length = payload[0]
    header_end = 1 + header_length
    if header_length == 0 or header_end > len(payload):
        return None
    found: tuple[int, int, int] | None = None
    index = 1
    while index < header_end:
        if index + 2 > header_end:
            return None
        ie_id, ie_length = payload[index], payload[index + 1]
        body = payload[index + 2 : index + 2 + ie_length]
        if index + 2 + ie_length > header_end:
            return None
        if ie_id == _IE_CONCAT_8BIT and ie_length == 3:
            found = (body[0], body[1], body[2])
        elif ie_id == _IE_CONCAT_16BIT and ie_length == 4:
            found = ((body[0] << 8) | body[1], body[2], body[3])
        index += 2 + ie_length
    if found is None:
        return None
    reference, total, sequence = found
    # TS 23.040 §9.2.3.24.1: a zero total, or a sequence of zero or beyond the
    # total, makes the IE void; treating the part as a whole message is safer
    # than waiting forever for parts that do not exist.
    if total == 0 or not 1 <= sequence <= total:
        return None
    return reference, total, sequence, payload[header_end:]
