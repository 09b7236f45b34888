"""Status webhooks: each status change of a message, POSTed to its callback URL, signed, at least once.

payload.py       when a webhook is due and what it says (pure)
signing.py       HMAC-SHA256 signature headers; verify() for receivers and tests
delivery.py      WebhookDispatcher: per-endpoint queues, retries with backoff, circuit breakers
breaker.py       the circuit breaker (pure)
dead_letters.py  pending and dead-lettered webhooks (SQLite, or memory)
accounts.py      per-account secrets and default callback URLs
settings.py      SMSGW_WEBHOOK_* settings
cli.py           `smsgw webhooks dead-letters | redeliver`
"""

from .accounts import AccountSecrets, AccountWebhookSettings, StaticAccountSecrets
from .breaker import BreakerPolicy, CircuitBreaker
from .dead_letters import DeadLetterStore, MemoryDeadLetterStore, SqliteDeadLetterStore, StoredDelivery
from .delivery import DEAD_LETTERED, DUPLICATE, QUEUED, DispatcherConfig, RetryPolicy, WebhookDispatcher, redeliver_now
from .payload import Webhook, status_webhook, status_webhook_after
from .settings import WebhookSettings
from .signing import sign, verify

__all__ = [
    "DEAD_LETTERED",
    "DUPLICATE",
    "QUEUED",
    "AccountSecrets",
    "AccountWebhookSettings",
    "BreakerPolicy",
    "CircuitBreaker",
    "DeadLetterStore",
    "DispatcherConfig",
    "MemoryDeadLetterStore",
    "RetryPolicy",
    "SqliteDeadLetterStore",
    "StaticAccountSecrets",
    "StoredDelivery",
    "Webhook",
    "WebhookDispatcher",
    "WebhookSettings",
    "redeliver_now",
    "sign",
    "status_webhook",
    "status_webhook_after",
    "verify",
]
