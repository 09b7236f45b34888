"""Webhook settings, from SMSGW_WEBHOOK_* variables: shared by the receipt service and the CLI."""

from __future__ import annotations

import logging

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from smsgw.domain import errors as de
from smsgw.domain.public_urls import UrlPolicy, check_public_url

from .accounts import StaticAccountSecrets
from .breaker import BreakerPolicy
from .dead_letters import SqliteDeadLetterStore
from .delivery import DispatcherConfig, RetryPolicy

log = logging.getLogger("smsgw.receipt.webhooks")

# Signs webhooks when no secret is configured, so `make run` works out of the box. Never in production.
DEV_SECRET = "smsgw-dev-webhook-secret"


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMSGW_WEBHOOK_", extra="ignore")

    store: str = Field(
        ".run/webhooks.sqlite3", description="SQLite file of pending and dead-lettered webhooks; on a persistent volume"
    )
    store_synchronous: str = Field("NORMAL", description="NORMAL survives a killed process, FULL a power cut")
    secret: SecretStr = Field(
        SecretStr(""),
        description="signing secret of account 'default'; every other account "
        "signs with a secret derived from it for that account alone "
        "(`smsgw webhooks secret ACCOUNT`); ignored when "
        "accounts_file is set",
    )
    default_url: str = Field(
        "",
        description="callback URL for the messages of account 'default' that name none "
        "(other accounts: their entry in accounts_file)",
    )
    accounts_file: str = Field("", description="JSON file of per-account secrets and URLs (see accounts.py)")
    base_delay: float = Field(1.0, description="seconds before the first retry; doubled at each next one")
    max_delay: float = Field(300.0, description="the longest wait between two attempts (s)")
    max_attempts: int = Field(12, description="attempts before a webhook is dead-lettered")
    jitter: float = Field(0.5, description="fraction of each retry delay drawn at random (no thundering herd)")
    breaker_failures: int = Field(5, description="failures in a row that open an endpoint's circuit")
    breaker_open_seconds: float = Field(30.0, description="how long an open circuit holds an endpoint's webhooks")
    queue_size: int = Field(
        1000,
        description="webhooks waiting per endpoint; while a healthy endpoint (circuit closed) holds half of it the "
        "feed stops reading the events (backpressure); a failing endpoint's webhooks beyond it are dead-lettered, "
        "and sent again by themselves once it answers 2xx",
    )
    concurrency: int = Field(
        32,
        ge=1,
        le=1000,
        description="requests in flight per endpoint (scheme, host, port); one endpoint takes about this many "
        "divided by its response time (32 at 50 ms: about 600 webhooks/s; bench/webhooks.py)",
    )
    connect_timeout: float = Field(5.0, description="seconds to connect to an endpoint")
    request_timeout: float = Field(10.0, description="seconds for the whole request, answer included")
    allow_http: bool = Field(False, description="deliver to http:// URLs too (development only; https otherwise)")
    allow_private: bool = Field(
        False,
        description="deliver to loopback and private addresses (development only: "
        "a customer's URL must not reach into the platform's network)",
    )

    def dispatcher_config(self) -> DispatcherConfig:
        return DispatcherConfig(
            retry=RetryPolicy(
                base_delay=self.base_delay, max_delay=self.max_delay, max_attempts=self.max_attempts, jitter=self.jitter
            ),
            breaker=BreakerPolicy(failure_threshold=self.breaker_failures, open_seconds=self.breaker_open_seconds),
            queue_size=self.queue_size,
            concurrency=self.concurrency,
            connect_timeout=self.connect_timeout,
            request_timeout=self.request_timeout,
            urls=UrlPolicy(allow_http=self.allow_http, allow_private=self.allow_private),
        )

    def account_secrets(self, configured: StaticAccountSecrets | None = None) -> StaticAccountSecrets:
        """The accounts' secrets and default URLs: `configured` (the configuration file's `webhooks`
        section) or these variables, never both; stops the service on a URL it would refuse to call."""
        if configured is not None:
            given = [
                f"SMSGW_WEBHOOK_{name.upper()}"
                for name in ("accounts_file", "secret", "default_url")
                if name in self.model_fields_set
            ]
            if given:
                raise SystemExit(
                    f"the configuration file has a `webhooks` section and {', '.join(given)} is set too: "
                    "unset the variable or remove the section (one source)"
                )
            accounts = configured
            where = "webhooks.accounts"
        elif self.accounts_file:
            accounts = StaticAccountSecrets.from_json_file(self.accounts_file)
            where = f"SMSGW_WEBHOOK_ACCOUNTS_FILE ({self.accounts_file}): accounts"
        else:
            secret = self.secret.get_secret_value()
            if not secret:
                log.warning("SMSGW_WEBHOOK_SECRET is not set: webhooks are signed with the development secret")
                secret = DEV_SECRET
            accounts = StaticAccountSecrets.single(secret, self.default_url)
            where = "SMSGW_WEBHOOK_DEFAULT_URL: account"
        # Checked at start as well as before each POST: a URL into the platform's own network
        # (SSRF) or over http stops the service here, instead of dead-lettering every webhook later.
        policy = UrlPolicy(allow_http=self.allow_http, allow_private=self.allow_private)
        for account_id, url in accounts.callback_urls().items():
            try:
                check_public_url(url, field="callback_url", policy=policy, purpose="a webhook URL")
            except de.InvalidArgument as refused:
                raise SystemExit(f"{where} {account_id!r}: {refused.message}") from None
        return accounts

    def open_store(self) -> SqliteDeadLetterStore:
        return SqliteDeadLetterStore(self.store, synchronous=self.store_synchronous)
