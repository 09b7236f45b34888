"""Why a message would get the route and carrier it gets (pure): `smsgw routes explain`.

One explanation, two sources: offline from a configuration file (every carrier taken as
healthy), or live from intake's AdminService.ExplainRoute (the route table routing uses now and
the carriers' health from the event log). Both render the same lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from smsgw.domain.routes import MessageFacts, Route, RouteTable


@dataclass(frozen=True)
class RouteVerdict:
    position: int  # 1-based, in the order routes are evaluated
    name: str
    conditions: str  # what the route matches on and its carriers, in a few words
    mismatch: str  # the first condition the message fails; empty: it matches
    chosen: bool = False


@dataclass(frozen=True)
class CarrierHealthState:
    carrier: str
    healthy: bool
    failure_ratio: float = 0.0  # of submit outcomes in the health window
    outcomes: int = 0
    undelivered_ratio: float = 0.0  # of final receipts in the window
    receipts: int = 0
    replicas_reporting: int = 0  # carrier-adapter replicas reporting its connection (fresh reports)
    replicas_connected: int = 0  # of them, those connected

    @property
    def connection(self) -> str:
        if not self.replicas_reporting:
            return "connection not reported"
        if not self.replicas_connected:
            return f"NOT connected on any of {self.replicas_reporting} adapter replica(s)"
        return f"connected on {self.replicas_connected} of {self.replicas_reporting} adapter replica(s)"


@dataclass(frozen=True)
class Explanation:
    to: str
    sender: str
    sender_kind: str
    country: str
    verdicts: tuple[RouteVerdict, ...]
    chosen_route: str = ""  # empty: no route matches (routing fails the message, NO_ROUTE)
    chosen_carrier: str = ""
    why: str = ""
    rewritten_sender: str = ""  # the sender the carrier gets, when the route rewrites it
    carriers: tuple[CarrierHealthState, ...] = ()  # live only: the chosen route's carriers


def conditions_of(route: Route) -> str:
    parts = [f"prefix {route.prefix or '(any)'}"]
    for label, values in (
        ("countries", route.countries),
        ("number types", route.number_types),
        ("sender kinds", route.sender_kinds),
        ("accounts", route.accounts),
        ("tags", route.tags),
    ):
        if values:
            parts.append(f"{label} {', '.join(sorted(values))}")
    parts.append(f"{route.strategy}: {', '.join(route.carrier_names)}")
    if route.rewrite_sender is not None:
        kinds = ", ".join(sorted(route.rewrite_sender.kinds)) or "every"
        parts.append(f"rewrites {kinds} senders to {route.rewrite_sender.to}")
    return "; ".join(parts)


def explain(
    table: RouteTable,
    facts: MessageFacts,
    healthy: Callable[[str], bool] = lambda _carrier: True,
    health: Callable[[str], CarrierHealthState] | None = None,
) -> Explanation:
    """Every route in evaluation order with the first condition it fails, and the choice."""
    chosen = table.choose(facts, healthy)
    verdicts = tuple(
        RouteVerdict(
            position=position,
            name=route.name,
            conditions=conditions_of(route),
            mismatch=why_not or "",
            chosen=chosen is not None and route is chosen.route,
        )
        for position, (route, why_not) in enumerate(table.explain(facts), start=1)
    )
    base = Explanation(
        to=facts.to,
        sender=facts.sender,
        sender_kind=str(facts.sender_kind or ""),
        country=facts.country,
        verdicts=verdicts,
    )
    if chosen is None:
        return base
    return replace(
        base,
        chosen_route=chosen.route.name,
        chosen_carrier=chosen.carrier,
        why=chosen.route.why(facts, healthy),
        rewritten_sender=chosen.route.rewritten_sender(facts.sender) or "",
        carriers=tuple(health(name) for name in chosen.route.carrier_names) if health else (),
    )


def render(explanation: Explanation, source: str) -> list[str]:
    """The lines `smsgw routes explain` prints (`source`: where the routes came from)."""
    e = explanation
    lines = [f"routes from {source}; message to {e.to}" + (f" from {e.sender} ({e.sender_kind})" if e.sender else "")]
    if e.country:
        lines.append(f"destination: country {e.country}")
    for v in e.verdicts:
        mark = "->" if v.chosen else "  "
        verdict = f"no: {v.mismatch}" if v.mismatch else "matches"
        lines.append(f"{mark} {v.position}. {v.name}  [{v.conditions}]  {verdict}")
    if not e.chosen_route:
        lines.append("no route matches: routing fails the message with NO_ROUTE")
        return lines
    lines.append(f"chosen: route {e.chosen_route}, carrier {e.chosen_carrier} ({e.why})")
    if e.rewritten_sender:
        lines.append(
            f"sender: rewritten to {e.rewritten_sender} by the route "
            f"(the carrier gets it instead of {e.sender or 'the default'})"
        )
    for c in e.carriers:
        state = "healthy" if c.healthy else "UNHEALTHY, skipped"
        lines.append(
            f"carrier {c.carrier}: {state} (submits failed {c.failure_ratio:.0%} of {c.outcomes}, "
            f"receipts undelivered {c.undelivered_ratio:.0%} of {c.receipts}, in the health window; "
            f"{c.connection})"
        )
    return lines
