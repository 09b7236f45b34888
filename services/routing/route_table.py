"""The static route table: longest matching E.164 prefix wins (pure).

A full route table (least-cost, failover, throttles) replaces this later; the
decision already returns the matched entry so the event records why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    prefix: str      # "+44", "+1415", or "" for the default route
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
    def parse(cls, text: str) -> "RouteTable":
        """JSON: {"routes": [{"prefix": "+1", "carrier": "smsc-sim"}, ...]}."""
        data = json.loads(text)
        routes = tuple(Route(prefix=r.get("prefix", ""), carrier=r["carrier"]) for r in data["routes"])
        for route in routes:
            if route.prefix and not (route.prefix.startswith("+") and route.prefix[1:].isdigit()):
                raise ValueError(f"route prefix {route.prefix!r} must be '+' followed by digits, or empty for default")
        return cls(routes)
