"""E.164 phone number validation.

Clients must send numbers in international format (leading '+' and country
code). We never guess a default region: a gateway serving many countries would
turn a missing country code into a message to a stranger abroad.
"""

from __future__ import annotations

import functools
import re

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult

from smsgw.domain.errors import InvalidPhoneNumber, MissingField

__all__ = ["masked", "normalize_e164", "numbers_masked"]

_EXAMPLE = "+14155550100"

# People paste numbers as they read them ("+1 (415) 555-0100"); these visual
# separators carry no meaning and are dropped. Anything else (letters, '#',
# 'ext', '*') is rejected rather than interpreted: phonenumbers would turn
# "+1 800 FLOWERS" into digits and "ext 12" into an extension, and an SMS can
# be delivered to neither guess reliably.
_SEPARATORS = frozenset(" -.()")

# The bad value is echoed in the message and in ErrorInfo metadata, which
# travel in gRPC trailers with a size limit; a megabyte of garbage in a number
# field must not turn a clear 400 into a transport error.
_MAX_ECHOED_CHARS = 64

_POSSIBILITY_FAILURES = {
    ValidationResult.TOO_SHORT: ("TOO_SHORT", "is too short for country code +{cc}"),
    ValidationResult.TOO_LONG: ("TOO_LONG", "is too long for country code +{cc}"),
    ValidationResult.INVALID_LENGTH: ("INVALID_LENGTH", "has a length no number with country code +{cc} has"),
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: (
        "LOCAL_ONLY",
        "is only dialable locally for country code +{cc}; include the area code",
    ),
    ValidationResult.INVALID_COUNTRY_CODE: ("INVALID_COUNTRY_CODE", "has an unknown country code +{cc}"),
}

_PARSE_FAILURES = {
    NumberParseException.INVALID_COUNTRY_CODE: ("INVALID_COUNTRY_CODE", "does not start with a known country code"),
    NumberParseException.NOT_A_NUMBER: ("NOT_A_NUMBER", "is not a phone number"),
    NumberParseException.TOO_SHORT_AFTER_IDD: ("TOO_SHORT", "is too short"),
    NumberParseException.TOO_SHORT_NSN: ("TOO_SHORT", "is too short"),
    NumberParseException.TOO_LONG: ("TOO_LONG", "is too long (E.164 allows at most 15 digits)"),
}


def _echoed(value: str) -> str:
    return value if len(value) <= _MAX_ECHOED_CHARS else value[:_MAX_ECHOED_CHARS] + "…"


def _invalid(value: str, field: str, detail: str, why: str) -> InvalidPhoneNumber:
    shown = _echoed(value)
    return InvalidPhoneNumber(
        f"{field}: {shown!r} {why}; expected E.164 like {_EXAMPLE}",
        field=field,
        metadata={"value": shown, "detail": detail},
    )


def _check_characters(value: str, stripped: str, field: str) -> None:
    if not stripped.startswith("+"):
        hint = (
            "replace the leading 00 with '+'"
            if stripped.startswith("00")
            else "add the country code with a leading '+'"
        )
        raise _invalid(value, field, "MISSING_COUNTRY_CODE", f"is not in international format; {hint}")
    for position, ch in enumerate(stripped[1:], start=1):
        # isascii: str.isdigit also accepts e.g. Arabic-Indic and fullwidth digits.
        if not (ch.isascii() and ch.isdigit()) and ch not in _SEPARATORS:
            raise _invalid(value, field, "NOT_A_NUMBER", f"contains {ch!r} at position {position}; use digits only")


def normalize_e164(value: str, *, field: str) -> str:
    """Return ``value`` in E.164 form (e.g. "+14155550100").

    Raises MissingField if it is empty or blank, InvalidPhoneNumber (naming the
    field, the value and why) otherwise.
    """
    if value is None or not value.strip():
        raise MissingField(f"{field} is required; expected E.164 like {_EXAMPLE}", field=field)
    stripped = value.strip()
    _check_characters(value, stripped, field)

    verdict = _verdict(stripped) if len(stripped) <= _MAX_CACHED_CHARS else _verdict.__wrapped__(stripped)
    if isinstance(verdict, str):
        return verdict
    detail, why = verdict
    raise _invalid(value, field, detail, why)


# phonenumbers is pure Python: parsing and range checks take ~100 µs a number, a sixth of
# intake's CPU per message for the recipient and the sender (py-spy, 2026-12-03). Senders repeat on nearly every message
# and recipients often (OTPs, reminders), so verdicts are kept for the most recent numbers. Only
# short inputs: a number has at most 15 digits, and a long string of separators must not pin
# memory.
_MAX_CACHED_CHARS = 32


@functools.lru_cache(maxsize=65_536)
def _verdict(stripped: str) -> str | tuple[str, str]:
    """The E.164 form of a number in international format, or (detail, why) if it is not valid."""
    try:
        number = phonenumbers.parse(stripped, None)
    except NumberParseException as exc:
        return _PARSE_FAILURES.get(exc.error_type, ("NOT_A_NUMBER", "is not a phone number"))

    possibility = phonenumbers.is_possible_number_with_reason(number)
    if possibility != ValidationResult.IS_POSSIBLE:
        detail, why = _POSSIBILITY_FAILURES.get(possibility, ("NOT_A_NUMBER", "is not a possible number"))
        return detail, why.format(cc=number.country_code)

    # is_valid_number checks the number against the ranges its country has
    # allocated (e.g. +1 242 555 0100 is possible but not a Bahamas range). It
    # accepts the fictional 555-01XX numbers we use in docs (+14155550100), so
    # we can afford the strict check; the unit tests pin that it stays so.
    if not phonenumbers.is_valid_number(number):
        return "INVALID_FOR_REGION", f"is not a valid number for country code +{number.country_code}"

    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# Masking for logs. A subscriber's number is personal data, and logs are read (and kept, and
# shipped) by more people than the message store. At INFO and above a number is written as
# masked() shows it; DEBUG, switched on for a while on one replica to chase one problem, may
# show numbers whole.
#
# What is kept: the first 4 digits, the country code and the start of the national number
# (enough to see the country and, for most, the area or mobile operator that routes and
# carriers care about), and the last 2 (enough to tell two numbers apart next to a message
# id). The middle is what makes a number someone's and is hidden, at least 3 digits of it: a
# number of 7 or 8 digits keeps fewer at its start.
#
# Digit strings shorter than 7 are shown as they are: no subscriber's number is that short
# (the shortest E.164 numbers, e.g. Niue's +683 XXXX, have 7 digits with their country code),
# so they are short codes, a business's published number like an alphanumeric sender id.
_MASKED_MIN_DIGITS = 7
_KEPT_HEAD = 4
_KEPT_TAIL = 2
_HIDDEN_AT_LEAST = 3

# A number inside free text (a provider's error message, a gRPC status detail): digits not
# glued to other digits, letters or a '+', so ids and timestamps of fewer digits pass.
_NUMBER_IN_TEXT = re.compile(rf"(?<![\w+])\+?\d{{{_MASKED_MIN_DIGITS},}}(?!\w)")


def masked(number: str) -> str:
    """A number as logs at INFO and above may show it ("+14155550177" -> "+1415*****77").

    Alphanumeric sender ids and short codes are not personal and are returned as they are.
    """
    digits = number[1:] if number.startswith("+") else number
    if not (digits.isascii() and digits.isdigit()) or len(digits) < _MASKED_MIN_DIGITS:
        return number
    head = min(_KEPT_HEAD, len(digits) - _KEPT_TAIL - _HIDDEN_AT_LEAST)
    hidden = len(digits) - head - _KEPT_TAIL
    return f"{number[: len(number) - len(digits)]}{digits[:head]}{'*' * hidden}{digits[-_KEPT_TAIL:]}"


def numbers_masked(text: str) -> str:
    """``text`` with every phone number in it masked: for messages written by others (a
    carrier's error, another service's status detail) that may name the recipient."""
    return _NUMBER_IN_TEXT.sub(lambda found: masked(found.group()), text)
