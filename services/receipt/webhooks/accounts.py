"""Per-account webhook settings: the signing secret and the default callback URL.

An interface, because accounts are their own subject (a later issue): today a
static table, from the environment or a JSON file.

An account's webhooks never use another account's settings: its own entry's secret and URL,
else a secret derived from the platform secret for this account alone (HMAC-SHA-256 of the
account id; `smsgw webhooks secret ACCOUNT` prints it for the account's owner) and no URL
but the one each message names. A secret shared by every account would let one customer
sign webhooks that another's receiver takes for ours; a shared default URL would send one
customer's message statuses to another.

The `webhooks` section of the platform's configuration file (smsgw.yaml; secrets by reference,
``secret_file`` / ``platform_secret_file`` naming a mounted Secret)::

    webhooks:
      platform_secret_file: /etc/smsgw/secrets/webhook-platform
      accounts:
        acme: {secret_file: /etc/smsgw/secrets/webhook-acme, callback_url: https://acme.example/sms/status}

or, the older way, a JSON file (SMSGW_WEBHOOK_ACCOUNTS_FILE)::

    {"platform_secret": "...",
     "accounts": {"default": {"secret": "...", "callback_url": ""},
                  "acme":    {"secret": "...", "callback_url": "https://acme.example/sms/status"}}}

Without `platform_secret`, an account without an entry gets no webhooks (dead-lettered, so
nothing is lost once it gets one).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from smsgw.secret_files import value_from_file

DEFAULT_ACCOUNT = "default"


@dataclass(frozen=True)
class AccountWebhookSettings:
    secret: str
    callback_url: str = ""  # used when a message has no status_callback_url of its own

    def __repr__(self) -> str:  # never print a secret into a log
        return f"AccountWebhookSettings(secret='***', callback_url={self.callback_url!r})"


class AccountSecrets(Protocol):
    def secret_for(self, account_id: str) -> str | None:
        """The key that signs this account's webhooks; None: the account may not receive any."""

    def default_callback_url(self, account_id: str) -> str:
        """Where status webhooks go when the message names no URL; "" for nowhere."""


def derived_secret(platform_secret: str, account_id: str) -> str:
    """The account's own signing secret, derived from the platform's: distinct per account, and
    nothing to store (the platform secret and the account id give it back)."""
    mac = hmac.new(platform_secret.encode(), b"smsgw-webhook-account-secret-v1\0" + account_id.encode(), hashlib.sha256)
    return "whsec_" + mac.hexdigest()


class StaticAccountSecrets:
    def __init__(self, accounts: Mapping[str, AccountWebhookSettings], *, platform_secret: str = "") -> None:
        for account_id, entry in accounts.items():
            if not entry.secret:
                raise ValueError(f"account {account_id!r}: empty webhook secret")
        self._accounts = dict(accounts)
        self._platform_secret = platform_secret

    def secret_for(self, account_id: str) -> str | None:
        entry = self._accounts.get(account_id)
        if entry is not None:
            return entry.secret
        return derived_secret(self._platform_secret, account_id) if self._platform_secret else None

    def default_callback_url(self, account_id: str) -> str:
        entry = self._accounts.get(account_id)
        return entry.callback_url if entry else ""

    def callback_urls(self) -> dict[str, str]:
        """Each account's default webhook URL, where it has one."""
        return {account_id: entry.callback_url for account_id, entry in self._accounts.items() if entry.callback_url}

    @classmethod
    def single(cls, secret: str, callback_url: str = "") -> StaticAccountSecrets:
        """Account "default" signs with `secret` (and has `callback_url`); every other account with a
        secret derived from it for that account alone, and has no default URL."""
        return cls({DEFAULT_ACCOUNT: AccountWebhookSettings(secret, callback_url)}, platform_secret=secret)

    @classmethod
    def from_json_file(cls, path: str | Path) -> StaticAccountSecrets:
        data = json.loads(Path(path).read_text())
        if "fallback_account" in data:
            raise ValueError(
                f"{path}: fallback_account is no longer read: an account's webhooks never use another "
                "account's secret or URL. Give the account an entry of its own, or set "
                "platform_secret to give every account a secret of its own derived from it"
            )
        accounts = {
            account_id: AccountWebhookSettings(secret=entry["secret"], callback_url=entry.get("callback_url", ""))
            for account_id, entry in data.get("accounts", {}).items()
        }
        return cls(accounts, platform_secret=data.get("platform_secret", ""))


AccountId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class WebhookAccountEntry(BaseModel):
    """One account's webhooks in the configuration file."""

    model_config = ConfigDict(extra="forbid")

    secret: str = Field(min_length=16, description="signs the account's webhooks (or secret_file)")
    secret_file: str | None = None
    callback_url: str = Field("", description="where statuses go when a message names no URL")

    @model_validator(mode="before")
    @classmethod
    def _secret_by_reference(cls, data):
        return value_from_file(data, "secret")


class WebhookSection(BaseModel):
    """The `webhooks` section: each account's secret and default URL, and the platform secret
    that gives every other account a secret of its own."""

    model_config = ConfigDict(extra="forbid")

    platform_secret: str = Field("", description="accounts without an entry sign with a secret derived from it")
    platform_secret_file: str | None = None
    accounts: dict[AccountId, WebhookAccountEntry] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _platform_secret_by_reference(cls, data):
        return value_from_file(data, "platform_secret")

    @model_validator(mode="after")
    def _long_enough(self) -> WebhookSection:
        if self.platform_secret and len(self.platform_secret) < 16:
            raise ValueError("platform_secret: at least 16 characters (a secret an attacker cannot guess)")
        return self


def load_webhook_section(value: object) -> StaticAccountSecrets:
    """The configuration file's `webhooks` section (smsgw.config_sections entry point)."""
    section = WebhookSection.model_validate(value or {})
    return StaticAccountSecrets(
        {
            account_id: AccountWebhookSettings(secret=entry.secret, callback_url=entry.callback_url)
            for account_id, entry in section.accounts.items()
        },
        platform_secret=section.platform_secret,
    )
