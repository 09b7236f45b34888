"""Where an account may send: countries by ISO 3166 alpha-2 code (pure).

SMS pumping (artificially inflated traffic) sends messages to premium ranges in countries the
customer never serves, at the customer's cost. An allowlist of countries per account, with a
server-wide default (an operator sets it to the home countries of its customers), stops it at
intake: the message is refused with the country named, before anything is charged.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import phonenumbers

from smsgw.domain import errors as de


@functools.lru_cache(maxsize=65_536)
def country_of(e164: str) -> str:
    """The ISO code of a valid E.164 number's country ("US", "GB"; "001" for non-geographic ones)."""
    return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None)) or "ZZ"


def normalize_countries(codes: Iterable[str], field: str = "countries") -> tuple[str, ...]:
    out: list[str] = []
    known = phonenumbers.SUPPORTED_REGIONS
    for index, code in enumerate(codes):
        normal = code.strip().upper()
        if normal not in known:
            raise de.InvalidArgument(
                f"{field}[{index}]: {code[:8]!r} is not an ISO 3166 alpha-2 country code "
                "with phone numbers (e.g. US, GB, DE)",
                field=f"{field}[{index}]",
            )
        if normal not in out:
            out.append(normal)
    return tuple(out)


def check_destination(to: str, allowed: tuple[str, ...]) -> None:
    """Raises DestinationNotAllowed unless `to` (E.164, valid) is in one of the `allowed` countries.
    An empty `allowed` allows every country."""
    if not allowed:
        return
    country = country_of(to)
    if country not in allowed:
        raise de.DestinationNotAllowed(
            f"to: {to} is a number in {country}, and this account may send to {', '.join(allowed)} only; "
            "nothing was sent. Ask an admin to allow the country (smsgw admin set-destinations)",
            field="to",
            metadata={"country": country},
        )
