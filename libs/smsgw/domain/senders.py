"""Who a message may say it is from: sender forms, and an account's own senders (pure).

A sender is an E.164 number, a 3-8 digit short code, or an alphanumeric sender id (1-11
letters, digits, spaces, dots or dashes, at least one letter). An account sends only from the
senders assigned to it (AdminService.SetAccountSenders); the first is its default. An account
with none sends from the server's default sender only: anything else would let any customer
send as any brand or any other customer's number.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable

import phonenumbers

from smsgw.domain import errors as de
from smsgw.domain.phone import normalize_e164

_ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 .\-]{1,11}$")
_SHORT_CODE = re.compile(r"^[0-9]{3,8}$")


def normalize_sender(sender: str, field: str = "from") -> str:
    sender = sender.strip()
    if sender.startswith("+"):
        return normalize_e164(sender, field=field)
    if _SHORT_CODE.match(sender) or _ALPHANUMERIC_SENDER.match(sender):
        return sender
    raise de.InvalidArgument(
        f"{field}: {sender[:32]!r} is not a valid sender; use an E.164 number like +14155550100, "
        "a 3-8 digit short code, or an alphanumeric sender id of 1-11 letters/digits with at least one letter",
        field=field,
        metadata={"detail": "INVALID_SENDER"},
    )


def pooled_sender(pool: tuple[str, ...], to: str) -> str | None:
    """A sender from the pool for a message to `to` that names none, like a messaging service:
    one of the pool's E.164 numbers in the destination's country (a local number is delivered
    and answered where a foreign one is not), the same one every time for the same recipient
    (sticky: a conversation keeps its number). None when the pool has no number in that country
    (the caller takes the default). The country is the numbering plan's (GB, GG and JE share
    +44): the same country first, else the same country calling code.

    Sticky across changes of the pool too (rendezvous hashing: each recipient takes the number
    that scores highest with it): a number added takes over only the recipients for whom it
    scores highest, about one in (numbers + 1), and a number removed moves only its own
    recipients; every other conversation keeps its number. (A hash of the recipient modulo the
    pool's size would move most of them.)"""
    region, code = _country_of(to)
    numbers = [s for s in pool if s.startswith("+")]
    local = [s for s in numbers if region and _country_of(s)[0] == region] or [
        s for s in numbers if code and _country_of(s)[1] == code
    ]
    if not local:
        return None
    return max(local, key=lambda number: hashlib.blake2b(f"{to} {number}".encode(), digest_size=8).digest())


@functools.lru_cache(maxsize=4096)
def _country_of(number: str) -> tuple[str, int]:
    """(ISO region, country calling code) of an E.164 number; ("", 0) when it is not one."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return "", 0
    code = parsed.country_code or 0
    region = phonenumbers.region_code_for_number(parsed) or phonenumbers.region_code_for_country_code(code)
    return ("" if region in (None, "ZZ", "001") else region), code


def normalize_senders(senders: Iterable[str]) -> tuple[str, ...]:
    """Each sender normalised, in order, without repeats; errors name the list index."""
    out: list[str] = []
    for index, sender in enumerate(senders):
        normal = normalize_sender(sender, field=f"senders[{index}]")
        if normal.casefold() not in {s.casefold() for s in out}:
            out.append(normal)
    return tuple(out)


def choose_sender(requested: str, own: tuple[str, ...], server_default: str, *, to: str = "") -> str:
    """The sender of a message: the requested one if the account may use it, else its default.

    `requested` and `own` are normalised; alphanumeric ids compare without case (ACME = Acme).
    `to`: the account's senders are a pool (Account.sender_pool), see pooled_sender()."""
    allowed = own or (server_default,)
    if not requested:
        return (pooled_sender(own, to) if to and own else None) or allowed[0]
    for sender in allowed:
        if sender.casefold() == requested.casefold():
            return sender
    mine = ", ".join(own) if own else f"only the server's default sender {server_default}"
    raise de.SenderNotAllowed(
        f"from: {requested!r} is not one of this account's senders ({mine}); send from one of those, or ask "
        "an admin to assign it (smsgw admin set-senders)",
        field="from",
        metadata={"sender": requested},
    )
