"""The `accounts` section of the configuration file, and what it takes to make the platform match it.

Accounts are event-sourced (AccountEvent on smsgw.account-events.v1, each change with who made
it), so the services never read this section: `smsgw config apply FILE` compares it with the
accounts the platform has and makes each missing or different one match through the admin API,
where every change is an audited event like any other. A field left out of an entry is not
managed by the file (the account keeps whatever it has); an account on the platform that the
file does not list is left as it is (accounts are never deleted).

    accounts:
      - id: acme
        display_name: ACME Ltd            # used when the account is created
        limits: {messages_per_second: 50, burst: 100, messages_per_day: 100000}
        senders: [ACME, "+14155550123"]   # the first is the default sender
        sender_pool: true
        destination_countries: [US, CA, GB]
        smart_encoding: true

Each value is checked offline by the same rules the admin API applies (normalised the same way,
so an unchanged file plans nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from smsgw.domain import errors as de
from smsgw.domain.destinations import normalize_countries
from smsgw.domain.limits import Limits
from smsgw.domain.senders import normalize_senders

AccountId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class LimitsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages_per_second: float = Field(0.0, ge=0, description="sustained rate; 0: the server's default")
    burst: int = Field(0, ge=0, description="how many may go at once after a quiet spell; 0: one second's worth")
    messages_per_day: int = Field(0, ge=0, description="per UTC day; 0: the server's default")

    def limits(self) -> Limits:
        return Limits(self.messages_per_second, self.burst, self.messages_per_day)


class AccountSpec(BaseModel):
    """One account as the file wants it; None: that aspect is not managed by the file."""

    model_config = ConfigDict(extra="forbid")

    id: AccountId
    display_name: str = Field("", max_length=200)
    limits: LimitsSpec | None = None
    senders: tuple[str, ...] | None = None
    sender_pool: bool | None = None
    destination_countries: tuple[str, ...] | None = None
    smart_encoding: bool | None = None

    @field_validator("senders")
    @classmethod
    def _normal_senders(cls, senders: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if senders is None else _checked(normalize_senders, senders)

    @field_validator("destination_countries")
    @classmethod
    def _normal_countries(cls, countries: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if countries is None else _checked(normalize_countries, countries)

    @model_validator(mode="after")
    def _pool_needs_senders(self) -> AccountSpec:
        if self.sender_pool and self.senders == ():
            raise ValueError("sender_pool: true needs senders to choose from")
        return self


def _checked(normalize, values):
    try:
        return normalize(values)
    except de.InvalidArgument as refused:
        raise ValueError(refused.message) from None


class AccountsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accounts: list[AccountSpec]

    @model_validator(mode="after")
    def _one_entry_per_account(self) -> AccountsSection:
        seen: set[str] = set()
        for spec in self.accounts:
            if spec.id in seen:
                raise ValueError(f"account {spec.id!r} is listed twice (one entry per account)")
            seen.add(spec.id)
        return self


def load_account_section(value: object) -> list[AccountSpec]:
    """The configuration file's `accounts` section (smsgw.config_sections entry point)."""
    return AccountsSection.model_validate({"accounts": value or []}).accounts


@dataclass(frozen=True)
class AccountState:
    """What the platform has for an account now (from the admin API's Account)."""

    id: str
    display_name: str = ""
    limits: Limits = Limits()
    senders: tuple[str, ...] = ()
    sender_pool: bool = False
    destination_countries: tuple[str, ...] = ()
    smart_encoding: bool = False


Change = Literal["create", "limits", "senders", "destinations", "encoding"]


@dataclass(frozen=True)
class Step:
    """One admin call that brings an account closer to the file."""

    account_id: str
    change: Change
    description: str  # for people: what it sets
    #: What the call sets: the display name (create), Limits, (senders, pool), countries, or smart encoding.
    value: object = None


@dataclass(frozen=True)
class AccountPlan:
    steps: tuple[Step, ...]
    unchanged: tuple[str, ...]  # accounts of the file that already match
    unlisted: tuple[str, ...]  # accounts of the platform the file does not list (left as they are)
    notes: tuple[str, ...]  # what the file asks and no call can do (a display name of an existing account)


def plan(specs: list[AccountSpec], current: dict[str, AccountState]) -> AccountPlan:
    """The calls that make the platform's accounts match `specs`, in order (create first)."""
    steps: list[Step] = []
    unchanged: list[str] = []
    notes: list[str] = []
    for spec in specs:
        have = current.get(spec.id)
        account_steps: list[Step] = []
        if have is None:
            account_steps.append(
                Step(spec.id, "create", f"created ({spec.display_name or 'no display name'})", spec.display_name)
            )
            have = AccountState(spec.id)
        elif spec.display_name and spec.display_name != have.display_name:
            notes.append(
                f"account {spec.id}: display_name {spec.display_name!r} differs from {have.display_name!r}, "
                "which is set when an account is created and not changed afterwards"
            )
        if spec.limits is not None and spec.limits.limits() != have.limits:
            account_steps.append(
                Step(spec.id, "limits", f"limits {_limits(spec.limits.limits())}", spec.limits.limits())
            )
        senders = spec.senders if spec.senders is not None else have.senders
        pool = spec.sender_pool if spec.sender_pool is not None else have.sender_pool
        if (senders, pool) != (have.senders, have.sender_pool):
            account_steps.append(
                Step(
                    spec.id,
                    "senders",
                    f"senders {', '.join(senders) or '(none)'}{' (pool)' if pool else ''}",
                    (senders, pool),
                )
            )
        if spec.destination_countries is not None and spec.destination_countries != have.destination_countries:
            countries = ", ".join(spec.destination_countries) or "(the server's default list)"
            account_steps.append(
                Step(spec.id, "destinations", f"destination countries {countries}", spec.destination_countries)
            )
        if spec.smart_encoding is not None and spec.smart_encoding != have.smart_encoding:
            account_steps.append(
                Step(
                    spec.id,
                    "encoding",
                    "smart encoding on" if spec.smart_encoding else "smart encoding off",
                    spec.smart_encoding,
                )
            )
        steps.extend(account_steps)
        if not account_steps:
            unchanged.append(spec.id)
    listed = {spec.id for spec in specs}
    return AccountPlan(tuple(steps), tuple(unchanged), tuple(sorted(set(current) - listed)), tuple(notes))


def _limits(limits: Limits) -> str:
    parts = [
        f"{limits.messages_per_second:g}/s" if limits.messages_per_second else "default rate",
        f"burst {limits.burst}" if limits.burst else "default burst",
        f"{limits.messages_per_day} a day" if limits.messages_per_day else "default daily quota",
    ]
    return ", ".join(parts)
