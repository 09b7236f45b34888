"""The route table as written in configuration: validated, then made a RouteTable (routes.py).

The same schema is the `routes` section of the platform's configuration file (smsgw.yaml) and
the JSON document of SMSGW_ROUTES ({"routes": [...]}). Errors are pydantic's, whose locations
the configuration file turns into line numbers (smsgw.config_file).

    routes:
      - name: otp-uk                 # optional; events and `smsgw routes explain` show it
        prefix: "+44"                # E.164 prefix; longest wins
        countries: [GB]              # ISO 3166-1 alpha-2 of the destination
        number_types: [mobile]       # routes.NUMBER_TYPES
        sender_kinds: [alphanumeric] # long_code, short_code, alphanumeric
        accounts: [acme]
        tags: [otp]                  # all of them on the message
        strategy: failover           # failover | weighted | least_cost
        carriers:
          - vodafone-uk              # a name, or {carrier, weight, cost}
          - {carrier: o2-uk, weight: 1, cost: 0.031}
        rewrite_sender:              # optional: the sender the carrier gets
          to: "+447700900123"        # an E.164 number, a short code or an alphanumeric id
          kinds: [alphanumeric]      # only senders of these kinds are replaced; empty: all
      - prefix: ""
        carrier: smsc-main           # one carrier
"""

from __future__ import annotations

import json
from typing import Annotated

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from smsgw.domain import errors as de
from smsgw.domain.credentials import ACCOUNT_ID
from smsgw.domain.routes import NUMBER_TYPES, Route, RouteCarrier, RouteTable, SenderKind, SenderRewrite, Strategy
from smsgw.domain.senders import normalize_sender

_COUNTRIES = frozenset(phonenumbers.SUPPORTED_REGIONS)
CarrierName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class RouteCarrierEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    carrier: CarrierName
    weight: int = Field(1, ge=1, le=10_000, description="share among the route's healthy carriers (weighted)")
    cost: float | None = Field(None, ge=0, description="per segment, in the operator's currency (least_cost)")


class SenderRewriteEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(description="the sender the route's messages reach the carrier with")
    kinds: list[SenderKind] = Field([], description="only senders of these kinds are replaced; empty: every one")

    @field_validator("to")
    @classmethod
    def _sender(cls, value: str) -> str:
        try:
            return normalize_sender(value, field="to")
        except de.InvalidArgument as exc:
            raise ValueError(str(exc).removeprefix("to: ")) from None


class RouteEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=64)
    prefix: str = ""
    countries: list[str] = []
    number_types: list[str] = []
    sender_kinds: list[SenderKind] = []
    accounts: list[str] = []
    tags: list[str] = []
    strategy: Strategy = Strategy.FAILOVER
    carrier: CarrierName | None = None
    carriers: list[CarrierName | RouteCarrierEntry] = []
    rewrite_sender: SenderRewriteEntry | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not (value.startswith("+") and value[1:].isascii() and value[1:].isdigit() and len(value) <= 16):
            raise ValueError(
                f"{value!r} must be '+' followed by up to 15 digits (e.g. \"+44\"), or empty for every number"
            )
        return value

    @field_validator("countries")
    @classmethod
    def _countries(cls, values: list[str]) -> list[str]:
        unknown = [v for v in values if v.upper() not in _COUNTRIES]
        if unknown:
            raise ValueError(f"{unknown} are not ISO 3166-1 alpha-2 country codes with a numbering plan (e.g. GB, US)")
        return [v.upper() for v in values]

    @field_validator("number_types")
    @classmethod
    def _number_types(cls, values: list[str]) -> list[str]:
        unknown = [v for v in values if v not in NUMBER_TYPES]
        if unknown:
            raise ValueError(f"{unknown} unknown; valid: {', '.join(NUMBER_TYPES)}")
        return values

    @field_validator("accounts")
    @classmethod
    def _accounts(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if not ACCOUNT_ID.fullmatch(v)]
        if bad:
            raise ValueError(f"{bad} are not account ids (1-64 letters, digits, '-' and '_')")
        return values

    @model_validator(mode="after")
    def _carriers(self) -> RouteEntry:
        if bool(self.carrier) == bool(self.carriers):
            raise ValueError("give either `carrier` (one) or `carriers` (a list), not both and not neither")
        names = [c if isinstance(c, str) else c.carrier for c in self.carriers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"carriers {repeated} listed twice in one route")
        if self.strategy is Strategy.LEAST_COST:
            missing = [n for n, c in zip(names, self.carriers, strict=True) if isinstance(c, str) or c.cost is None]
            if missing or self.carrier:
                raise ValueError(
                    f"strategy least_cost needs a cost on every carrier; none on {missing or [self.carrier]}"
                )
        return self

    def to_route(self) -> Route:
        carriers = (
            (RouteCarrier(self.carrier),)
            if self.carrier
            else tuple(
                RouteCarrier(c) if isinstance(c, str) else RouteCarrier(c.carrier, c.weight, c.cost)
                for c in self.carriers
            )
        )
        return Route(
            prefix=self.prefix,
            carriers=carriers,
            strategy=self.strategy,
            countries=frozenset(self.countries),
            number_types=frozenset(self.number_types),
            sender_kinds=frozenset(self.sender_kinds),
            accounts=frozenset(self.accounts),
            tags=frozenset(self.tags),
            label=self.name,
            rewrite_sender=(
                SenderRewrite(self.rewrite_sender.to, frozenset(self.rewrite_sender.kinds))
                if self.rewrite_sender
                else None
            ),
        )


class RouteTableSection(BaseModel):
    """The `routes` section: the routes, in the order they are listed."""

    model_config = ConfigDict(extra="forbid")

    routes: list[RouteEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _table(self) -> RouteTableSection:
        names = [r.name for r in self.routes if r.name]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"route names {repeated} are used twice")
        RouteTable(tuple(r.to_route() for r in self.routes))  # two routes with the same conditions
        return self

    def table(self) -> RouteTable:
        return RouteTable(tuple(r.to_route() for r in self.routes))


_ROUTE_LIST = TypeAdapter(list[RouteEntry])


def load_route_section(value: object) -> RouteTable:
    """The configuration file's `routes` section (a list of routes): errors of one route are
    located in it (`[1].prefix`); errors of the table as a whole are ValueErrors."""
    entries = _ROUTE_LIST.validate_python(value)
    try:
        return RouteTableSection(routes=entries).table()
    except ValidationError as exc:
        raise ValueError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None


def load_routes(text: str) -> RouteTable:
    """SMSGW_ROUTES: a JSON document {"routes": [...]}."""
    return RouteTableSection.model_validate(json.loads(text)).table()
