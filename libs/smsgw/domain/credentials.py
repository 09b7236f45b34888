"""Accounts and API keys: the key format, and the directory folded from AccountEvents (pure, no I/O).

A key is ``sgw_<id>_<secret>``. The id (16 hex characters) is public: it names the key in
lists, logs and the audit trail. The secret (43 URL-safe characters, 256 random bits) is
shown once, when the key is made; the log and the directory keep only the SHA-256 of the
whole key, and a presented key is compared with it in constant time. A fast hash is enough
for 256 random bits (nobody can guess their way to a preimage); slow hashes are for
passwords people choose.

The directory is rebuilt by folding the account events (topic smsgw.account-events.v1) like
every other state here, plus the keys an operator configures (bootstrap keys: the first
admin key, and the platform's own service keys), which live in a file or Kubernetes Secret
and are changed there.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from smsgw.domain import errors as de
from smsgw.domain.destinations import normalize_countries
from smsgw.domain.device_tokens import DeviceTokens
from smsgw.domain.limits import Limits
from smsgw.domain.senders import normalize_senders
from smsgw.events.envelope import random_id, timestamp, to_datetime
from smsgw.v1 import accounts_pb2 as ac

KEY_PREFIX = "sgw"
ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
#: The actor of changes made from configuration rather than through the admin API.
BOOTSTRAP = "bootstrap"

SEND = ac.API_KEY_SCOPE_SEND
READ = ac.API_KEY_SCOPE_READ
ADMIN = ac.API_KEY_SCOPE_ADMIN
ACT_AS_ANY_ACCOUNT = ac.API_KEY_SCOPE_ACT_AS_ANY_ACCOUNT
SCOPE_NAMES: dict[int, str] = {SEND: "send", READ: "read", ADMIN: "admin", ACT_AS_ANY_ACCOUNT: "act-as-any-account"}
SCOPES_BY_NAME = {name: scope for scope, name in SCOPE_NAMES.items()}
DEFAULT_SCOPES = frozenset({SEND, READ})


def new_key() -> tuple[str, str]:
    """A fresh (key id, whole key)."""
    key_id = secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The id inside a key, or None if `key` does not have the shape of one."""
    prefix, _, rest = key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not _KEY_ID.match(key_id) or len(secret) < 32:
        return None
    return key_id


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def scope_names(scopes: Iterable[int]) -> list[str]:
    return sorted(SCOPE_NAMES.get(s, str(s)) for s in scopes)


def parse_scopes(names: Iterable[str]) -> frozenset[int]:
    scopes = set()
    for name in names:
        if name not in SCOPES_BY_NAME:
            raise de.InvalidArgument(
                f"scopes: unknown scope {name!r}; valid: {', '.join(sorted(SCOPES_BY_NAME))}", field="scopes"
            )
        scopes.add(SCOPES_BY_NAME[name])
    return frozenset(scopes)


@dataclass(frozen=True)
class AccountRecord:
    account_id: str
    display_name: str
    created_at: datetime | None
    limits: Limits = Limits()
    senders: tuple[str, ...] = ()  # normalised; the first is the account's default sender
    sender_pool: bool = False  # no `from`: a sender in the destination's country (senders.choose_sender)
    smart_encoding: bool = False  # look-alikes replaced when that makes a text GSM-7 (encoding.smart_encoded)
    destination_countries: tuple[str, ...] = ()  # ISO codes; empty: the server's default list


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    account_id: str
    scopes: frozenset[int]
    name: str
    secret_sha256: str
    created_at: datetime | None
    created_by: str
    revoked_at: datetime | None = None
    rotated_from: str = ""

    @property
    def configured(self) -> bool:
        """A bootstrap key: it lives in configuration, not in the log, and is changed there."""
        return self.created_by == BOOTSTRAP

    def to_proto(self) -> ac.ApiKey:
        key = ac.ApiKey(
            id=self.key_id,
            account_id=self.account_id,
            scopes=sorted(self.scopes),  # type: ignore[arg-type]  # enum values are ints
            name=self.name,
            created_by=self.created_by,
        )
        if self.created_at is not None:
            key.created_at.CopyFrom(timestamp(self.created_at))
        if self.revoked_at is not None:
            key.revoked_at.CopyFrom(timestamp(self.revoked_at))
        return key


@dataclass(frozen=True)
class Principal:
    """Who is calling: the account the key belongs to (or acts for), the key, and what it may do."""

    account_id: str
    key_id: str
    scopes: frozenset[int] = field(default_factory=frozenset)

    def require(self, scope: int, what: str) -> None:
        if scope not in self.scopes:
            raise de.PermissionDenied(
                f"{what} needs an API key with the {SCOPE_NAMES[scope]!r} scope; key {self.key_id} has "
                f"{', '.join(scope_names(self.scopes)) or 'none'}. Ask an admin for a key with that scope "
                f"(smsgw admin create-key --scopes {SCOPE_NAMES[scope]})",
                metadata={"required_scope": SCOPE_NAMES[scope], "key_id": self.key_id},
            )


_UNAUTHENTICATED = (
    "send a valid API key as 'authorization: Bearer <key>' (sgw_...; an admin makes one with smsgw admin create-key)"
)


class Directory:
    """Accounts and keys, folded from AccountEvents; answers who a presented key is."""

    def __init__(self) -> None:
        self.accounts: dict[str, AccountRecord] = {}
        self.keys: dict[str, KeyRecord] = {}
        self.device_tokens = DeviceTokens()
        #: Every account event in log order: the audit trail.
        self.events: list[ac.AccountEvent] = []
        self._event_ids: set[str] = set()

    # -- folding ------------------------------------------------------------------------
    def add_configured(self, record: KeyRecord) -> None:
        self.keys[record.key_id] = record
        self.accounts.setdefault(record.account_id, AccountRecord(record.account_id, "", None))

    def apply(self, event: ac.AccountEvent) -> bool:
        """Folds one event in; False for a copy of one already applied."""
        if event.event_id in self._event_ids:
            return False
        self._event_ids.add(event.event_id)
        self.events.append(event)
        at = to_datetime(event.occurred_at)
        kind = event.WhichOneof("payload")
        if kind == "account_created":
            self.accounts.setdefault(
                event.account_id, AccountRecord(event.account_id, event.account_created.display_name, at)
            )
        elif kind == "api_key_created":
            created = event.api_key_created
            if created.key_id not in self.keys:  # a configured key of the same id wins
                self.keys[created.key_id] = KeyRecord(
                    created.key_id,
                    event.account_id,
                    frozenset(created.scopes),
                    created.name,
                    created.secret_sha256,
                    at,
                    event.actor,
                    rotated_from=created.rotated_from,
                )
        elif kind == "account_limits_set":
            account = self.accounts.get(event.account_id)
            if account is not None:
                self.accounts[event.account_id] = replace(account, limits=limits_of(event.account_limits_set.limits))
        elif kind == "account_senders_set":
            account = self.accounts.get(event.account_id)
            if account is not None:
                self.accounts[event.account_id] = replace(
                    account,
                    senders=tuple(event.account_senders_set.senders),
                    sender_pool=event.account_senders_set.pool,
                )
        elif kind == "account_encoding_set":
            account = self.accounts.get(event.account_id)
            if account is not None:
                self.accounts[event.account_id] = replace(
                    account, smart_encoding=event.account_encoding_set.smart_encoding
                )
        elif kind == "account_destinations_set":
            account = self.accounts.get(event.account_id)
            if account is not None:
                self.accounts[event.account_id] = replace(
                    account, destination_countries=tuple(event.account_destinations_set.countries)
                )
        elif kind == "api_key_revoked":
            key = self.keys.get(event.api_key_revoked.key_id)
            if key is not None and key.revoked_at is None and not key.configured:
                self.keys[key.key_id] = replace(key, revoked_at=at)
        else:
            self.device_tokens.apply(event)
        return True

    # -- authentication ------------------------------------------------------------------
    def authenticate(self, authorization: str | None, acting_for: str | None = None) -> Principal:
        """The caller behind an `authorization` header value ("Bearer <key>").

        Every failure reads the same (UNAUTHENTICATED, one message), so an answer never tells
        a guesser whether a key id exists or was revoked. `acting_for` is honoured only for
        keys with the act-as-any-account scope.
        """
        scheme, _, key = (authorization or "").strip().partition(" ")
        key = key.strip()
        key_id = key_id_of(key) if scheme.lower() == "bearer" else None
        record = self.keys.get(key_id) if key_id else None
        presented = digest(key) if key else ""
        stored = record.secret_sha256 if record is not None else "0" * 64
        # Compare even when there is no record, so a miss costs as long as a hit.
        matches = hmac.compare_digest(presented, stored)
        if record is None or not matches or record.revoked_at is not None:
            raise de.Unauthenticated(_UNAUTHENTICATED)
        account_id = record.account_id
        if acting_for and acting_for != account_id:
            if ACT_AS_ANY_ACCOUNT not in record.scopes:
                raise de.PermissionDenied(
                    f"x-smsgw-account: key {record.key_id} acts only for its own account; the account comes "
                    "from the key. Drop the header",
                    field="x-smsgw-account",
                    metadata={"key_id": record.key_id},
                )
            if not ACCOUNT_ID.match(acting_for):
                raise de.InvalidArgument(
                    f"x-smsgw-account: {acting_for[:64]!r} is not an account id (1-64 letters, digits, '_' or '-')",
                    field="x-smsgw-account",
                )
            account_id = acting_for
        return Principal(account_id, record.key_id, record.scopes)

    # -- decisions (each returns the events to append) ----------------------------------
    def create_account(self, account_id: str, display_name: str, *, actor: str, now: datetime) -> ac.AccountEvent:
        if not ACCOUNT_ID.match(account_id or ""):
            raise de.InvalidArgument(
                f"id: {account_id[:64]!r} is not an account id (1-64 letters, digits, '_' or '-')", field="id"
            )
        if account_id in self.accounts:
            raise de.AccountExists(f"id: account {account_id!r} exists already", field="id")
        return _event(account_id, actor, now, account_created=ac.AccountCreated(display_name=display_name))

    def create_key(
        self, account_id: str, scopes: Iterable[int], name: str, *, actor: str, now: datetime, rotated_from: str = ""
    ) -> tuple[ac.AccountEvent, str]:
        self.account(account_id)
        chosen = frozenset(scopes) or DEFAULT_SCOPES
        unknown = chosen - SCOPE_NAMES.keys()
        if unknown:
            raise de.InvalidArgument(
                f"scopes: unknown scope value(s) {sorted(unknown)}; valid: "
                f"{', '.join(f'{v} ({n})' for v, n in sorted(SCOPE_NAMES.items()))}",
                field="scopes",
            )
        if len(name) > 128:
            raise de.InvalidArgument("name: at most 128 characters", field="name")
        key_id, key = new_key()
        created = ac.ApiKeyCreated(
            key_id=key_id,
            scopes=sorted(chosen),  # type: ignore[arg-type]  # enum values are ints
            name=name,
            secret_sha256=digest(key),
            rotated_from=rotated_from,
        )
        return _event(account_id, actor, now, api_key_created=created), key

    def set_limits(self, account_id: str, limits: ac.AccountLimits, *, actor: str, now: datetime) -> ac.AccountEvent:
        self.account(account_id)
        limits_of(limits).check()
        return _event(account_id, actor, now, account_limits_set=ac.AccountLimitsSet(limits=limits))

    def set_senders(
        self, account_id: str, senders: Iterable[str], *, actor: str, now: datetime, pool: bool = False
    ) -> ac.AccountEvent:
        self.account(account_id)
        normal = normalize_senders(senders)
        return _event(account_id, actor, now, account_senders_set=ac.AccountSendersSet(senders=normal, pool=pool))

    def set_destinations(
        self, account_id: str, countries: Iterable[str], *, actor: str, now: datetime
    ) -> ac.AccountEvent:
        self.account(account_id)
        normal = normalize_countries(countries)
        return _event(account_id, actor, now, account_destinations_set=ac.AccountDestinationsSet(countries=normal))

    def set_encoding(self, account_id: str, smart_encoding: bool, *, actor: str, now: datetime) -> ac.AccountEvent:
        self.account(account_id)
        return _event(account_id, actor, now, account_encoding_set=ac.AccountEncodingSet(smart_encoding=smart_encoding))

    def smart_encoding(self, account_id: str) -> bool:
        account = self.accounts.get(account_id)
        return account.smart_encoding if account is not None else False

    def destinations(self, account_id: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """The countries the account may send to (empty: all)."""
        account = self.accounts.get(account_id)
        return (account.destination_countries if account is not None else ()) or default

    def senders(self, account_id: str) -> tuple[str, ...]:
        account = self.accounts.get(account_id)
        return account.senders if account is not None else ()

    def sender_pool(self, account_id: str) -> bool:
        account = self.accounts.get(account_id)
        return account.sender_pool if account is not None else False

    def limits(self, account_id: str, defaults: Limits) -> Limits:
        """The account's limits, each one it has not set taken from `defaults`."""
        account = self.accounts.get(account_id)
        return account.limits.over(defaults) if account is not None else defaults

    def revoke_key(self, key_id: str, reason: str, *, actor: str, now: datetime) -> ac.AccountEvent:
        key = self.live_key(key_id)
        return _event(key.account_id, actor, now, api_key_revoked=ac.ApiKeyRevoked(key_id=key_id, reason=reason))

    def rotate_key(self, key_id: str, *, actor: str, now: datetime) -> tuple[list[ac.AccountEvent], str]:
        old = self.live_key(key_id)
        created, key = self.create_key(
            old.account_id, old.scopes, old.name, actor=actor, now=now, rotated_from=old.key_id
        )
        revoked = _event(
            old.account_id,
            actor,
            now,
            api_key_revoked=ac.ApiKeyRevoked(key_id=key_id, reason=f"rotated to {created.api_key_created.key_id}"),
        )
        return [created, revoked], key

    def issue_device_token(
        self, account_id: str, carrier: str, device_id: str, sim_slot: int | None, *, actor: str, now: datetime
    ) -> tuple[ac.AccountEvent, str]:
        self.account(account_id)
        issued, token = self.device_tokens.issue(account_id, carrier, device_id, sim_slot)
        return _event(account_id, actor, now, device_token_issued=issued), token

    def revoke_device_token(self, token_id: str, reason: str, *, actor: str, now: datetime) -> ac.AccountEvent:
        record = self.device_tokens.live(token_id)
        revoked = ac.DeviceTokenRevoked(token_id=token_id, reason=reason)
        return _event(record.account_id, actor, now, device_token_revoked=revoked)

    # -- reads --------------------------------------------------------------------------
    def account(self, account_id: str) -> AccountRecord:
        record = self.accounts.get(account_id)
        if record is None:
            raise de.AccountNotFound(
                f"account_id: no account {account_id!r}; create it first (smsgw admin create-account)",
                field="account_id",
            )
        return record

    def live_key(self, key_id: str) -> KeyRecord:
        key = self.keys.get(key_id)
        if key is None or key.revoked_at is not None:
            raise de.ApiKeyNotFound(f"key_id: no live key {key_id!r}", field="key_id")
        if key.configured:
            raise de.InvalidArgument(
                f"key_id: key {key_id} is a bootstrap key from the configuration "
                "(SMSGW_BOOTSTRAP_KEYS_FILE); change it there",
                field="key_id",
            )
        return key

    def keys_of(self, account_id: str) -> list[KeyRecord]:
        return sorted(
            (k for k in self.keys.values() if k.account_id == account_id),
            key=lambda k: (k.created_at is not None, k.created_at or datetime.min, k.key_id),
        )


def limits_of(message: ac.AccountLimits) -> Limits:
    return Limits(message.messages_per_second, message.burst, message.messages_per_day)


def limits_message(limits: Limits) -> ac.AccountLimits:
    return ac.AccountLimits(
        messages_per_second=limits.messages_per_second, burst=limits.burst, messages_per_day=limits.messages_per_day
    )


#: The account_id of platform-wide admin events (the route table): not a valid account id, so
#: it names no account and no account's audit shows it.
PLATFORM = "@platform"


def platform_event(actor: str, now: datetime, **payload) -> ac.AccountEvent:
    """An admin event about the platform, not an account (e.g. RouteTableApplied)."""
    return _event(PLATFORM, actor, now, **payload)


def _event(account_id: str, actor: str, now: datetime, **payload) -> ac.AccountEvent:
    ((kind, message),) = payload.items()
    event = ac.AccountEvent(
        event_id=random_id(), account_id=account_id, actor=actor, type=message.DESCRIPTOR.full_name, **payload
    )
    event.occurred_at.CopyFrom(timestamp(now))
    return event


def configured_keys(document: dict) -> list[KeyRecord]:
    """Bootstrap keys from their file: {"keys": [{"id", "account", "scopes": [...], "sha256", "name"?}]}."""
    records = []
    for i, entry in enumerate(document.get("keys", [])):
        where = f"keys[{i}]"
        key_id, account, sha = entry.get("id", ""), entry.get("account", ""), entry.get("sha256", "")
        if not _KEY_ID.match(key_id):
            raise ValueError(f"{where}.id: {key_id!r} is not a key id (16 lowercase hex characters)")
        if not ACCOUNT_ID.match(account):
            raise ValueError(f"{where}.account: {account!r} is not an account id")
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ValueError(f"{where}.sha256: expected the key's SHA-256 as 64 lowercase hex characters")
        try:
            scopes = parse_scopes(entry.get("scopes", []))
        except de.InvalidArgument as error:
            raise ValueError(f"{where}.{error.message}") from None
        if not scopes:
            raise ValueError(f"{where}.scopes: give at least one of {', '.join(sorted(SCOPES_BY_NAME))}")
        records.append(KeyRecord(key_id, account, scopes, entry.get("name", ""), sha, None, BOOTSTRAP))
    return records


def configured_entry(key: str, account: str, scopes: Iterable[str], name: str = "") -> dict:
    """The bootstrap file's entry for `key` (what `smsgw admin bootstrap-key` prints)."""
    key_id = key_id_of(key)
    if key_id is None:
        raise ValueError("not an smsgw API key (sgw_<16 hex>_<secret>)")
    return {"id": key_id, "account": account, "scopes": sorted(scopes), "sha256": digest(key), "name": name}
