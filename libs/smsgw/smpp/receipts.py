"""Delivery receipts: the text form, the TLV states, and message-id matching.

SMSCs report a message's fate in a deliver_sm with esm_class "SMSC delivery
receipt", as text in short_message (SMPP 3.4 Appendix B, a de-facto format
every carrier bends a little), as TLVs (receipted_message_id + message_state),
or both. This module turns either form into the same few strings.

Message ids are the hard part: the id in submit_sm_resp and the id in the
receipt are the same message but not always the same string (hex in one,
decimal in the other; leading zeros; letter case). ``normalize_message_id``
defines the one canonical key both are compared by.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# --- receipt states -------------------------------------------------------------
# The seven final-or-not states of Appendix B, as the 7-character text codes
# SMSCs put after "stat:". These strings are what the rest of smsgw sees.
ENROUTE = "ENROUTE"
DELIVRD = "DELIVRD"
EXPIRED = "EXPIRED"
DELETED = "DELETED"
UNDELIV = "UNDELIV"
ACCEPTD = "ACCEPTD"
UNKNOWN = "UNKNOWN"
REJECTD = "REJECTD"

#: States after which the SMSC will send nothing more for the message.
FINAL_STATES = frozenset({DELIVRD, EXPIRED, DELETED, UNDELIV, REJECTD})

# message_state TLV (0x0427) values, §5.3.2.35.
MESSAGE_STATE_ENROUTE = 1
MESSAGE_STATE_DELIVERED = 2
MESSAGE_STATE_EXPIRED = 3
MESSAGE_STATE_DELETED = 4
MESSAGE_STATE_UNDELIVERABLE = 5
MESSAGE_STATE_ACCEPTED = 6
MESSAGE_STATE_UNKNOWN = 7
MESSAGE_STATE_REJECTED = 8

MESSAGE_STATE_TO_STAT: dict[int, str] = {
    MESSAGE_STATE_ENROUTE: ENROUTE,
    MESSAGE_STATE_DELIVERED: DELIVRD,
    MESSAGE_STATE_EXPIRED: EXPIRED,
    MESSAGE_STATE_DELETED: DELETED,
    MESSAGE_STATE_UNDELIVERABLE: UNDELIV,
    MESSAGE_STATE_ACCEPTED: ACCEPTD,
    MESSAGE_STATE_UNKNOWN: UNKNOWN,
    MESSAGE_STATE_REJECTED: REJECTD,
}
STAT_TO_MESSAGE_STATE: dict[str, int] = {stat: state for state, stat in MESSAGE_STATE_TO_STAT.items()}

# Spellings seen in the wild for the same states (full words, other
# truncations). Anything not here is passed through upper-cased, so a new
# carrier quirk shows up in the data instead of silently becoming UNKNOWN.
_STAT_ALIASES: dict[str, str] = {
    "DELIVERED": DELIVRD,
    "DELIVRED": DELIVRD,
    "UNDELIVERABLE": UNDELIV,
    "UNDELIVERED": UNDELIV,
    "ACCEPTED": ACCEPTD,
    "REJECTED": REJECTD,
    "REJECT": REJECTD,
    "EXPIRD": EXPIRED,
    "DELETD": DELETED,
}


def normalize_stat(stat: str) -> str:
    cleaned = stat.strip().upper()
    return _STAT_ALIASES.get(cleaned, cleaned)


def stat_from_message_state(state: int) -> str:
    return MESSAGE_STATE_TO_STAT.get(state, UNKNOWN)


# --- message ids --------------------------------------------------------------------

_DECIMAL = re.compile(r"[0-9]+")
_HEX = re.compile(r"(?:0[xX])?([0-9A-Fa-f]+)")


#: Longer ids are opaque (rule 4), whatever their digits.
MAX_NUMERIC_ID_CHARS = 64


def normalize_message_id(message_id: str, *, radix: int | None = None) -> str:
    """The canonical key under which two spellings of one SMSC message id compare equal.

    Rule (documented in docs/smpp.md):

    1. Surrounding whitespace and NULs are dropped.
    2. With ``radix`` given (10 or 16) the id is read in that base; otherwise
       an id of only decimal digits is decimal, and an id of hex digits with at
       least one letter (optionally ``0x``-prefixed) is hexadecimal.
    3. A numeric id becomes its value in decimal without leading zeros
       (``"0"`` for zero): ``"00A3F"``, ``"a3f"``, ``"0x0a3f"`` and ``"2623"``
       all become ``"2623"``.
    4. Anything else (UUIDs, ids with dashes or other letters) is opaque and
       only lower-cased: SMSCs are not consistent about case, and two ids that
       differ only by case are never two different messages in practice.

    Rule 2's auto-detection cannot tell a hex id made only of digits
    ("1234" = 4660) from a decimal one. A carrier known to answer submit_sm in
    hex and report receipts in decimal must therefore be configured with the
    radix of each (Kannel's msg-id-type is the same idea).
    """
    cleaned = message_id.strip().strip("\x00").strip()
    if not cleaned:
        return ""
    if len(cleaned) > MAX_NUMERIC_ID_CHARS and radix in (None, 10, 16):
        # No SMSC's id is that long (SMPP's message_id is at most 64 octets); reading it as a
        # number would be Python's int() on thousands of digits, which raises (found by fuzzing:
        # a receipt text in message_payload with a 5,000-digit id). Opaque, like rule 4.
        return cleaned.lower()
    if radix is None:
        if _DECIMAL.fullmatch(cleaned):
            radix = 10
        elif _HEX.fullmatch(cleaned):
            radix = 16
    if radix == 10 and _DECIMAL.fullmatch(cleaned):
        return str(int(cleaned, 10))
    if radix == 16:
        match = _HEX.fullmatch(cleaned)
        if match:
            return str(int(match.group(1), 16))
    if radix not in (None, 10, 16):
        raise ValueError(f"radix must be 10, 16 or None, not {radix}")
    return cleaned.lower()


# --- receipt text ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptText:
    """The fields of an Appendix B receipt text; None where the SMSC left one out."""

    message_id: str
    stat: str
    sub: str | None = None
    dlvrd: str | None = None
    submit_date: str | None = None
    done_date: str | None = None
    err: str | None = None
    text: str | None = None


# Keys are matched case-insensitively; "submit date" also appears as
# "submit_date" or "submitdate". "text:" is last by convention and its value
# runs to the end (it is the start of the message and may contain "id:").
_KEY = re.compile(
    r"(?<![A-Za-z0-9_])(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat|err|text)\s*:",
    re.IGNORECASE,
)


def parse_receipt_text(text: str) -> ReceiptText | None:
    """Parse 'id:... sub:... dlvrd:... submit date:... done date:... stat:... err:... text:...'.

    Returns None when the text has no id or no stat: without both it is not a
    receipt we can act on (it may be an MO that merely looks alike). Fields
    are whitespace-stripped; stat is normalised to the 7-letter codes; id and
    err are kept as sent (compare ids with ``normalize_message_id``).
    """
    fields: dict[str, str] = {}
    matches = list(_KEY.finditer(text))
    for index, match in enumerate(matches):
        key = match.group(1).lower().replace(" ", "").replace("_", "")
        if key == "text":
            fields.setdefault(key, text[match.end() :])
            break
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        fields.setdefault(key, text[match.end() : end].strip())
    message_id = fields.get("id")
    stat = fields.get("stat")
    if not message_id or not stat:
        return None
    return ReceiptText(
        message_id=message_id,
        stat=normalize_stat(stat),
        sub=fields.get("sub"),
        dlvrd=fields.get("dlvrd"),
        submit_date=fields.get("submitdate"),
        done_date=fields.get("donedate"),
        err=fields.get("err"),
        text=fields.get("text"),
    )


def format_receipt_text(
    *,
    message_id: str,
    stat: str,
    submit_date: str,
    done_date: str,
    err: str = "000",
    sub: str = "001",
    dlvrd: str = "001",
    text: str = "",
) -> str:
    """The Appendix B text form, as the simulator (and most SMSCs) send it."""
    return (
        f"id:{message_id} sub:{sub} dlvrd:{dlvrd} submit date:{submit_date} "
        f"done date:{done_date} stat:{stat} err:{err} text:{text[:20]}"
    )
