"""The static route table: longest matching E.164 prefix wins (pure).

A full route table (least-cost, failover, throttles) replaces this later; the
decision already returns the matched entry so the event records why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from smsgw.domain import errors as de


@dataclass(frozen=True)
class Route:
    prefix: str  # "+44", "+1415", or "" for the default route
    carrier: str

    @property
    def name(self) -> str:
        return f"{self.prefix or '*'}->{self.carrier}"


@dataclass(frozen=True)
class RouteTable:
    routes: tuple[Route, ...]

    def pick(self, to: str) -> Route | None:
        matching = [r for r in self.routes if to.startswith(r.prefix)]
        return max(matching, key=lambda r: len(r.prefix), default=None)

    @classmethod
    def parse(cls, text: str) -> RouteTable:
        """JSON: {"routes": [{"prefix": "+1", "carrier": "smsc-sim"}, ...]}."""
        data = json.loads(text)
        routes = tuple(Route(prefix=r.get("prefix", ""), carrier=r["carrier"]) for r in data["routes"])
        for route in routes:
            if route.prefix and not (route.prefix.startswith("+") and route.prefix[1:].isdigit()):
                raise ValueError(f"route prefix {route.prefix!r} must be '+' followed by digits, or empty for default")
        return cls(routes)


@dataclass(frozen=True)
class CarrierCapabilities:
    """What intake must know of the route a message will take, to refuse what it cannot carry."""

    table: RouteTable
    mms_carriers: frozenset[str] = field(default_factory=frozenset)

    def check_media(self, to: str, media_urls: list[str]) -> None:
        if not media_urls:
            return
        route = self.table.pick(to)
        if route is None or route.carrier not in self.mms_carriers:
            carrier = route.carrier if route else "no carrier"
            able = ", ".join(sorted(self.mms_carriers)) or "none configured"
            raise de.InvalidArgument(
                f"media_urls: messages to {to[:5]}… go to {carrier}, which cannot send MMS; "
                f"send without media_urls, or route these numbers to an MMS carrier ({able})",
                field="media_urls",
                metadata={"detail": "MMS_NOT_SUPPORTED", "carrier": carrier},
            )
