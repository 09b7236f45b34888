"""Signing status webhooks, and checking a signature the way a receiver does.

The signature is HMAC-SHA256 under the account's secret over
``f"{timestamp}.{body}"``: the timestamp is signed with the body, so a captured
delivery cannot be replayed later than `tolerance` seconds, nor re-dated.
Each attempt is signed afresh, so a retry hours later still verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

TIMESTAMP_HEADER = "X-Smsgw-Timestamp"
SIGNATURE_HEADER = "X-Smsgw-Signature"
EVENT_ID_HEADER = "X-Smsgw-Event-Id"
SCHEME = "v1"
DEFAULT_TOLERANCE = 300.0


class WebhookSignatureError(ValueError):
    """The delivery is not provably from smsgw: reject it (HTTP 400/401)."""


class MissingSignature(WebhookSignatureError):
    pass


class InvalidSignature(WebhookSignatureError):
    pass


class StaleTimestamp(WebhookSignatureError):
    """Correctly signed, but too old (or too far ahead): a replay or a broken clock."""


def signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, *, event_id: str, now: float | None = None) -> dict[str, str]:
    """The headers that authenticate `body`, signed at `now` (default: the current time)."""
    timestamp = int(time.time() if now is None else now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: f"{SCHEME}={signature(secret, timestamp, body)}",
        EVENT_ID_HEADER: event_id,
    }


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Returns the signed timestamp, or raises a WebhookSignatureError.

    `headers` may use any case (HTTP header names are case-insensitive). The
    signature header may carry several comma-separated ``v1=`` values (one per
    secret while a secret is rotated); one match is enough. The comparison is
    constant-time. The signature is checked before the age, so StaleTimestamp
    means "genuine but replayed".
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    raw_timestamp = lowered.get(TIMESTAMP_HEADER.lower())
    raw_signature = lowered.get(SIGNATURE_HEADER.lower())
    if not raw_timestamp or not raw_signature:
        raise MissingSignature(f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise InvalidSignature(f"{TIMESTAMP_HEADER} is not unix seconds: {raw_timestamp[:32]!r}") from None
    expected = signature(secret, timestamp, body)
    candidates = [
        part.strip()[len(SCHEME) + 1 :] for part in raw_signature.split(",") if part.strip().startswith(f"{SCHEME}=")
    ]
    # Every candidate is compared (no early exit), each in constant time.
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header may hold anything.
    matches = [hmac.compare_digest(expected.encode(), candidate.encode()) for candidate in candidates]
    if not any(matches):
        raise InvalidSignature("signature does not match the body and timestamp")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise StaleTimestamp(f"signed {age:.0f}s ago; accepted within {tolerance:.0f}s")
    return timestamp
