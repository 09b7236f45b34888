"""Per-account webhook settings: the signing secret and the default callback URL.

An interface, because accounts are their own subject (a later issue): today a
static table, from the environment or a JSON file. Accounts without an entry
use the fallback account's entry ("default"), so every account the API admits
today gets signed webhooks.

JSON file (SMSGW_WEBHOOK_ACCOUNTS_FILE)::

    {"fallback_account": "default",
     "accounts": {"default": {"secret": "...", "callback_url": ""},
                  "acme":    {"secret": "...", "callback_url": "https://acme.example/sms/status"}}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DEFAULT_ACCOUNT = "default"


@dataclass(frozen=True)
class AccountWebhookSettings:
    secret: str
    callback_url: str = ""   # used when a message has no status_callback_url of its own

    def __repr__(self) -> str:   # never print a secret into a log
        return f"AccountWebhookSettings(secret='***', callback_url={self.callback_url!r})"


class AccountSecrets(Protocol):
    def secret_for(self, account_id: str) -> str | None:
        """The key that signs this account's webhooks; None: the account may not receive any."""

    def default_callback_url(self, account_id: str) -> str:
        """Where status webhooks go when the message names no URL; "" for nowhere."""


class StaticAccountSecrets:
    def __init__(self, accounts: Mapping[str, AccountWebhookSettings], *,
                 fallback_account: str | None = DEFAULT_ACCOUNT) -> None:
        for account_id, entry in accounts.items():
            if not entry.secret:
                raise ValueError(f"account {account_id!r}: empty webhook secret")
        self._accounts = dict(accounts)
        self._fallback = fallback_account

    def _entry(self, account_id: str) -> AccountWebhookSettings | None:
        entry = self._accounts.get(account_id)
        if entry is None and self._fallback is not None:
            entry = self._accounts.get(self._fallback)
        return entry

    def secret_for(self, account_id: str) -> str | None:
        entry = self._entry(account_id)
        return entry.secret if entry else None

    def default_callback_url(self, account_id: str) -> str:
        entry = self._entry(account_id)
        return entry.callback_url if entry else ""

    @classmethod
    def single(cls, secret: str, callback_url: str = "") -> StaticAccountSecrets:
        """One secret (and default URL) for every account, under "default"."""
        return cls({DEFAULT_ACCOUNT: AccountWebhookSettings(secret, callback_url)})

    @classmethod
    def from_json_file(cls, path: str | Path) -> StaticAccountSecrets:
        data = json.loads(Path(path).read_text())
        accounts = {
            account_id: AccountWebhookSettings(secret=entry["secret"], callback_url=entry.get("callback_url", ""))
            for account_id, entry in data.get("accounts", {}).items()
        }
        return cls(accounts, fallback_account=data.get("fallback_account", DEFAULT_ACCOUNT))
