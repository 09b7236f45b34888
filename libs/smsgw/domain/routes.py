"""The route table: which carrier takes a message (pure).

A route matches on facts of the message (destination prefix, country and number type, the kind
of sender, the account, tags) and names the carriers that may take it, with a strategy to pick
one of them:

- ``failover``: the first listed carrier that is healthy;
- ``weighted``: spread by weight over the healthy carriers, by a hash of the message id (the
  same message always gets the same carrier, so a replay decides alike);
- ``least_cost``: the cheapest healthy carrier by cost per segment (ties: the first listed).

When every carrier of a route is unhealthy, the strategy picks as if all were healthy: trying
a carrier that may have recovered beats failing the message (the adapter retries and parks).

Order of evaluation (docs/routing.md): among the routes whose every condition matches, the one
with the **longest prefix** wins; between equal prefixes, the one that sets **more kinds of
condition**; between those, the one listed **first**. Two routes with the same conditions are
refused when the table is loaded (the second could never be chosen).

The table is read from the platform's configuration file or SMSGW_ROUTES (route_schema.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

import phonenumbers

from smsgw.domain import errors as de


class Strategy(StrEnum):
    FAILOVER = "failover"
    WEIGHTED = "weighted"
    LEAST_COST = "least_cost"


class SenderKind(StrEnum):
    LONG_CODE = "long_code"  # an E.164 number
    SHORT_CODE = "short_code"  # 3-8 digits
    ALPHANUMERIC = "alphanumeric"  # a brand name, e.g. ACME


#: Number types a route may name, as phonenumbers tells them from the numbering plan.
NUMBER_TYPES: dict[str, tuple[int, ...]] = {
    # Where the plan cannot tell mobile from fixed (the US, Canada, ...), a number is both.
    "mobile": (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE),
    "fixed_line": (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE),
    "toll_free": (phonenumbers.PhoneNumberType.TOLL_FREE,),
    "premium_rate": (phonenumbers.PhoneNumberType.PREMIUM_RATE,),
    "shared_cost": (phonenumbers.PhoneNumberType.SHARED_COST,),
    "voip": (phonenumbers.PhoneNumberType.VOIP,),
    "personal_number": (phonenumbers.PhoneNumberType.PERSONAL_NUMBER,),
    "pager": (phonenumbers.PhoneNumberType.PAGER,),
    "uan": (phonenumbers.PhoneNumberType.UAN,),
    "voicemail": (phonenumbers.PhoneNumberType.VOICEMAIL,),
    "unknown": (phonenumbers.PhoneNumberType.UNKNOWN,),
}


def sender_kind_of(sender: str) -> SenderKind:
    """The kind of a normalised sender (smsgw.domain.senders)."""
    if sender.startswith("+"):
        return SenderKind.LONG_CODE
    if sender.isascii() and sender.isdigit():
        return SenderKind.SHORT_CODE
    return SenderKind.ALPHANUMERIC


@dataclass
class MessageFacts:
    """What routes match on. Country and number type are worked out only when a route asks."""

    to: str
    sender: str = ""
    account: str = ""
    tags: frozenset[str] = frozenset()
    message_id: str = ""

    @cached_property
    def _number(self) -> phonenumbers.PhoneNumber | None:
        try:
            return phonenumbers.parse(self.to, None)
        except phonenumbers.NumberParseException:
            return None

    @cached_property
    def country(self) -> str:
        """ISO 3166-1 alpha-2 of the destination ("GB"); for a number outside every allocated
        range, its country code's main country (+44: GB); "" when there is none."""
        number = self._number
        if number is None or number.country_code is None:
            return ""
        region = phonenumbers.region_code_for_number(number) or phonenumbers.region_code_for_country_code(
            number.country_code
        )
        return "" if region in (None, "ZZ", "001") else region

    @cached_property
    def number_type(self) -> int:
        number = self._number
        return phonenumbers.number_type(number) if number is not None else phonenumbers.PhoneNumberType.UNKNOWN

    @cached_property
    def sender_kind(self) -> SenderKind | None:
        return sender_kind_of(self.sender) if self.sender else None


@dataclass(frozen=True)
class RouteCarrier:
    name: str
    weight: int = 1  # share among the healthy carriers of a weighted route
    cost: float | None = None  # per segment, in the operator's currency (least_cost)


@dataclass(frozen=True)
class SenderRewrite:
    """A route's sender rewriting: the sender its messages reach the carrier with (a number or
    short code the carrier requires, where alphanumeric ids are not allowed, say), for messages
    whose own sender is of one of `kinds` (empty: every message)."""

    to: str
    kinds: frozenset[SenderKind] = frozenset()


@dataclass(frozen=True)
class Route:
    prefix: str = ""  # "+44", "+1415", or "" for every number
    carrier: str = ""  # one carrier: shorthand for carriers=(RouteCarrier(carrier),)
    carriers: tuple[RouteCarrier, ...] = ()
    strategy: Strategy = Strategy.FAILOVER
    countries: frozenset[str] = frozenset()  # ISO 3166-1 alpha-2
    number_types: frozenset[str] = frozenset()  # keys of NUMBER_TYPES
    sender_kinds: frozenset[SenderKind] = frozenset()
    accounts: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()  # every one of them on the message
    label: str = ""  # the route's name in the configuration, if it has one
    rewrite_sender: SenderRewrite | None = None  # an action, not a condition

    def __post_init__(self) -> None:
        if not self.carriers and self.carrier:
            object.__setattr__(self, "carriers", (RouteCarrier(self.carrier),))
        if not self.carriers:
            raise ValueError("a route needs at least one carrier")
        object.__setattr__(self, "carrier", self.carriers[0].name)

    @property
    def name(self) -> str:
        """How events and logs name the route (MessageRouted.route)."""
        return self.label or f"{self.prefix or '*'}->{self.carrier}"

    @property
    def carrier_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.carriers)

    @property
    def conditions(self) -> tuple:
        """Everything the route matches on, to find two routes that match the same messages."""
        return (self.prefix, self.countries, self.number_types, self.sender_kinds, self.accounts, self.tags)

    @property
    def rank(self) -> tuple[int, int]:
        """Higher wins: the longest prefix, then the most kinds of condition set."""
        kinds = sum(1 for c in (self.countries, self.number_types, self.sender_kinds, self.accounts, self.tags) if c)
        return len(self.prefix), kinds

    def mismatch(self, facts: MessageFacts) -> str | None:
        """Why the route does not match the message (the first condition that fails), or None."""
        if not facts.to.startswith(self.prefix):
            return f"prefix {self.prefix}"
        if self.accounts and facts.account not in self.accounts:
            return f"account not in {sorted(self.accounts)}"
        if self.tags and not self.tags <= facts.tags:
            return f"tags {sorted(self.tags - facts.tags)} not on the message"
        if self.sender_kinds and facts.sender_kind not in self.sender_kinds:
            return f"sender kind {facts.sender_kind} not in {sorted(self.sender_kinds)}"
        if self.countries and facts.country not in self.countries:
            return f"country {facts.country or 'unknown'} not in {sorted(self.countries)}"
        if self.number_types and not any(facts.number_type in NUMBER_TYPES[name] for name in self.number_types):
            return f"number type not in {sorted(self.number_types)}"
        return None

    def matches(self, facts: MessageFacts) -> bool:
        """mismatch() is None, without building the reason (routing asks this for every message)."""
        if not facts.to.startswith(self.prefix):
            return False
        if self.accounts and facts.account not in self.accounts:
            return False
        if self.tags and not self.tags <= facts.tags:
            return False
        if self.sender_kinds and facts.sender_kind not in self.sender_kinds:
            return False
        if self.countries and facts.country not in self.countries:
            return False
        return not self.number_types or any(facts.number_type in NUMBER_TYPES[name] for name in self.number_types)

    def choose(self, facts: MessageFacts, healthy: Callable[[str], bool]) -> RouteCarrier:
        """The carrier this route gives the message (see the strategies above)."""
        if len(self.carriers) == 1:
            return self.carriers[0]  # healthy or not, it is the one
        usable = [c for c in self.carriers if healthy(c.name)] or list(self.carriers)
        if self.strategy is Strategy.WEIGHTED:
            return _weighted(usable, facts.message_id)
        if self.strategy is Strategy.LEAST_COST:
            return min(usable, key=lambda c: c.cost if c.cost is not None else float("inf"))
        return usable[0]

    def rewritten_sender(self, sender: str) -> str | None:
        """The sender a message from `sender` reaches the carrier with on this route, when the
        route rewrites it; None when the message keeps its own."""
        rewrite = self.rewrite_sender
        if rewrite is None or sender == rewrite.to:
            return None
        if rewrite.kinds and sender_kind_of(sender) not in rewrite.kinds:
            return None
        return rewrite.to

    def fallbacks(self, chosen: str) -> tuple[str, ...]:
        """The route's other carriers, best first by its strategy: where a message goes if the
        chosen carrier cannot take it (carrier-adapter's failover, MessageRerouted)."""
        if len(self.carriers) == 1:
            return ()
        others = [c for c in self.carriers if c.name != chosen]
        if self.strategy is Strategy.LEAST_COST:
            others.sort(key=lambda c: c.cost if c.cost is not None else float("inf"))
        elif self.strategy is Strategy.WEIGHTED:
            others.sort(key=lambda c: -c.weight)
        return tuple(c.name for c in others)

    def why(self, facts: MessageFacts, healthy: Callable[[str], bool]) -> str:
        """How choose() picks for this message, in a few words (smsgw routes explain)."""
        usable = [c for c in self.carriers if healthy(c.name)]
        skipped = [c.name for c in self.carriers if c not in usable]
        note = f"; skipped unhealthy {', '.join(skipped)}" if skipped and usable else ""
        if not usable:
            usable = list(self.carriers)
            note = "; every carrier unhealthy, chosen as if all were healthy"
        if self.strategy is Strategy.WEIGHTED:
            why = f"weighted over {', '.join(f'{c.name}:{c.weight}' for c in usable)} by message id"
        elif self.strategy is Strategy.LEAST_COST:
            why = f"least cost of {', '.join(f'{c.name}:{c.cost:g}' for c in usable if c.cost is not None)}"
        else:
            why = f"failover order {', '.join(self.carrier_names)}"
        return why + note


def _weighted(carriers: list[RouteCarrier], message_id: str) -> RouteCarrier:
    total = sum(c.weight for c in carriers)
    point = int.from_bytes(hashlib.blake2b(message_id.encode(), digest_size=8).digest(), "big") % total
    for carrier in carriers:
        if point < carrier.weight:
            return carrier
        point -= carrier.weight
    return carriers[-1]  # not reached: point < total


def _always_healthy(_carrier: str) -> bool:
    return True


@dataclass(frozen=True)
class RouteChoice:
    route: Route
    carrier: str


@dataclass(frozen=True)
class RouteTable:
    routes: tuple[Route, ...]
    #: The routes in evaluation order: rank descending, then as listed (sorted is stable).
    _ordered: tuple[Route, ...] = field(init=False, repr=False, compare=False)
    prefix_only: bool = field(init=False, repr=False, compare=False, default=True)

    def __post_init__(self) -> None:
        seen: dict[tuple, int] = {}
        for index, route in enumerate(self.routes):
            earlier = seen.setdefault(route.conditions, index)
            if earlier != index:
                raise ValueError(
                    f"routes[{index}] matches exactly the messages routes[{earlier}] matches, so it could "
                    "never be chosen; merge their carriers into one route or give one another condition"
                )
        object.__setattr__(self, "_ordered", tuple(sorted(self.routes, key=lambda r: r.rank, reverse=True)))
        # Most tables route on prefixes alone: then a message's other facts are never looked at.
        object.__setattr__(self, "prefix_only", all(route.rank[1] == 0 for route in self.routes))

    def pick(self, facts: MessageFacts | str) -> Route | None:
        """The route that wins for the message (see the order of evaluation above)."""
        if isinstance(facts, str):
            facts = MessageFacts(to=facts)
        if self.prefix_only:
            to = facts.to
            for route in self._ordered:
                if to.startswith(route.prefix):
                    return route
            return None
        for route in self._ordered:
            if route.matches(facts):
                return route
        return None

    def choose(self, facts: MessageFacts, healthy: Callable[[str], bool] = _always_healthy) -> RouteChoice | None:
        route = self.pick(facts)
        if route is None:
            return None
        return RouteChoice(route=route, carrier=route.choose(facts, healthy).name)

    def explain(self, facts: MessageFacts) -> list[tuple[Route, str | None]]:
        """Every route in evaluation order with why it does not match (None: it matches)."""
        return [(route, route.mismatch(facts)) for route in self._ordered]

    @property
    def carrier_names(self) -> frozenset[str]:
        return frozenset(name for route in self.routes for name in route.carrier_names)


@dataclass(frozen=True)
class CarrierCapabilities:
    """What intake must know of the route a message will take, to refuse what it cannot carry."""

    table: RouteTable
    mms_carriers: frozenset[str] = field(default_factory=frozenset)
    #: The table applied at run time, if any (route_versions.py); it replaces `table`.
    applied: Callable[[], RouteTable | None] = lambda: None

    def check_media(self, facts: MessageFacts | str, media_urls: list[str]) -> None:
        if not media_urls:
            return
        route = (self.applied() or self.table).pick(facts)
        to = facts if isinstance(facts, str) else facts.to
        unable = [c for c in route.carrier_names if c not in self.mms_carriers] if route else ["no carrier"]
        if unable:
            able = ", ".join(sorted(self.mms_carriers)) or "none configured"
            raise de.InvalidArgument(
                f"media_urls: messages to {to[:5]}… go to {', '.join(unable)}, which cannot send MMS; "
                f"send without media_urls, or route these numbers to an MMS carrier ({able})",
                field="media_urls",
                metadata={"detail": "MMS_NOT_SUPPORTED", "carrier": unable[0]},
            )
