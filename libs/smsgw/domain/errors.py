"""Named domain errors.

Each error carries the product owner's numeric code (docs/errors.md), a stable
machine-readable reason and, where one input is at fault, the field name. The
translation to gRPC status codes lives in one place (smsgw.grpcx.errors); domain
code never imports grpc.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    #: Product owner's error table code (100, 300, 400, 500, ...).
    code: int = 400
    #: Stable, upper-snake reason put in google.rpc.ErrorInfo.reason.
    reason: str = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.metadata = dict(metadata or {})


class InvalidArgument(DomainError):
    """The request is wrong and retrying it unchanged will fail again."""

    code = 100
    reason = "INVALID_ARGUMENT"


class InvalidPhoneNumber(InvalidArgument):
    code = 100
    reason = "INVALID_PHONE_NUMBER"


class MalformedRequest(InvalidArgument):
    reason = "MALFORMED_REQUEST"


class MissingField(InvalidArgument):
    code = 100
    reason = "MISSING_FIELD"


class UnknownField(InvalidArgument):
    code = 100
    reason = "UNKNOWN_FIELD"


class BodyTooLong(InvalidArgument):
    code = 100
    reason = "BODY_TOO_LONG"


class EmptyBody(InvalidArgument):
    code = 100
    reason = "EMPTY_BODY"


class InvalidSchedule(InvalidArgument):
    code = 100
    reason = "INVALID_SCHEDULE"


class BatchTooLarge(InvalidArgument):
    code = 100
    reason = "BATCH_TOO_LARGE"


class InvalidPageToken(InvalidArgument):
    code = 100
    reason = "INVALID_PAGE_TOKEN"


class IdempotencyKeyReused(DomainError):
    """Same idempotency key, different request: the first request stands."""

    code = 100
    reason = "IDEMPOTENCY_KEY_REUSED"


class MessageNotFound(DomainError):
    code = 404
    reason = "MESSAGE_NOT_FOUND"


class NotCancelable(DomainError):
    code = 409
    reason = "MESSAGE_NOT_CANCELABLE"


class QueueFull(DomainError):
    """Intake holds more unacknowledged messages than it may; the client should back off."""

    code = 300
    reason = "QUEUE_FULL"


class RetryLater(DomainError):
    """A refusal for now: `retry_after` (seconds) says when to try again (metadata.retry_after_ms,
    and a google.rpc.RetryInfo on the wire)."""

    def __init__(self, message: str, *, retry_after: float, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = max(0.0, retry_after)
        self.metadata["retry_after_ms"] = str(int(self.retry_after * 1000) + 1)


class LimitReached(RetryLater):
    """An account limit says no for now; `retry_after` (seconds) says when it may say yes."""

    code = 300
    reason = "LIMIT_REACHED"


class RateLimited(LimitReached):
    reason = "RATE_LIMITED"


class DailyQuotaExceeded(LimitReached):
    reason = "DAILY_QUOTA_EXCEEDED"


class TooManyStreams(DomainError):
    """The account holds as many open streams on this server as it may."""

    code = 300
    reason = "TOO_MANY_STREAMS"


class WatchFellBehind(DomainError):
    """A Watch stream's client read slower than its updates came, so the server stopped keeping
    them for it: the stream is ended, and `metadata.cursor` is where to open it again (nothing
    after that position was sent, nothing is lost)."""

    code = 300
    reason = "WATCH_FELL_BEHIND"


class ServerError(DomainError):
    code = 400
    reason = "SERVER_ERROR"


class GatewayUnavailable(DomainError):
    """The event log (or a carrier) cannot be reached; nothing was accepted."""

    code = 500
    reason = "GATEWAY_ERROR"


class EventLogUnavailable(RetryLater, GatewayUnavailable):
    """The event log took no write lately (intake's append breaker is open): refused before anything
    was sent, so nothing was accepted; `retry_after` (seconds) says when to try again."""

    reason = "EVENT_LOG_UNAVAILABLE"


class AcceptanceInDoubt(GatewayUnavailable):
    """The append was handed to the event log, which did not confirm it in time: the message may
    still be accepted. A retry with the same idempotency key is safe; metadata.message_id names it."""

    reason = "ACCEPTANCE_IN_DOUBT"


class RecipientOptedOut(DomainError):
    """The recipient replied STOP to this sender; they must opt back in first."""

    code = 100
    reason = "RECIPIENT_OPTED_OUT"


class Unauthenticated(DomainError):
    """No credential, or one that is not a live key. The message never says which part was wrong."""

    code = 401
    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """A valid key without the scope this call needs; the message names the scope."""

    code = 403
    reason = "PERMISSION_DENIED"


class SenderNotAllowed(PermissionDenied):
    """The account may not send from this number or sender id."""

    reason = "SENDER_NOT_ASSIGNED"


class DestinationNotAllowed(PermissionDenied):
    """The account may not send to this number's country."""

    reason = "DESTINATION_NOT_ALLOWED"


class AccountExists(DomainError):
    code = 409
    reason = "ACCOUNT_EXISTS"


class AccountNotFound(DomainError):
    code = 404
    reason = "ACCOUNT_NOT_FOUND"


class ApiKeyNotFound(DomainError):
    code = 404
    reason = "API_KEY_NOT_FOUND"


class DeviceTokenExists(DomainError):
    code = 409
    reason = "DEVICE_TOKEN_EXISTS"


class DeviceTokenNotFound(DomainError):
    code = 404
    reason = "DEVICE_TOKEN_NOT_FOUND"


class RouteTableChanged(DomainError):
    """Another route table was applied since the caller read the version it expected."""

    code = 409
    reason = "ROUTE_TABLE_CHANGED"
