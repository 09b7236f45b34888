"""What Twilio's message statuses and error codes mean for our messages (pure).

Two questions are answered here, and nothing else:

- a status callback (``MessageStatus`` + ``ErrorCode``): is it a delivery fact,
  and which ``DeliveryState`` is it? Only final facts are reported; the steps
  before (queued, accepted, sending, sent...) change nothing we record.
- a refused create-message request (HTTP status + Twilio error ``code``): is it
  permanent (the message fails, Twilio's code kept as the carrier error) or
  temporary (retry later, nothing lost)?
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from smsgw.v1 import events_pb2 as ev

DeliveryState = ev.DeliveryState

__all__ = [
    "ERRORS",
    "INTERMEDIATE_STATUSES",
    "STATUS_STATES",
    "SubmitDisposition",
    "TwilioError",
    "classify_submit",
    "delivery_state",
    "describe_error",
    "error_url",
    "parse_error_code",
    "parse_retry_after",
    "submit_failure",
]

# --- statuses ----------------------------------------------------------------------------------

#: Statuses on the way to a final one: not delivery facts, never reported.
INTERMEDIATE_STATUSES = frozenset(
    {"queued", "accepted", "scheduled", "sending", "sent", "receiving", "received", "partially_delivered"}
)

#: Final statuses of an outbound message, as our part states.
STATUS_STATES: dict[str, int] = {
    "delivered": DeliveryState.DELIVERY_STATE_DELIVERED,
    # Read receipts (WhatsApp, RCS) come after delivered: read implies delivered.
    "read": DeliveryState.DELIVERY_STATE_DELIVERED,
    # The carrier's receipt says not delivered.
    "undelivered": DeliveryState.DELIVERY_STATE_UNDELIVERABLE,
    # Twilio took it but could not send it (queue overflow, suspended account, media error...).
    "failed": DeliveryState.DELIVERY_STATE_REJECTED,
    # A scheduled message canceled before it was sent: it will never be delivered.
    "canceled": DeliveryState.DELIVERY_STATE_DELETED,
}

#: Error codes with which an ``undelivered`` report means the carrier refused the content, not the handset.
_REFUSED_BY_CARRIER = frozenset({30004, 30007, 30034})


def delivery_state(status: str | None, error_code: str | int | None = None) -> int | None:
    """The part state a status callback reports, or None when it is not a delivery fact."""
    status = (status or "").strip().lower()
    state = STATUS_STATES.get(status)
    if state == DeliveryState.DELIVERY_STATE_UNDELIVERABLE and parse_error_code(error_code) in _REFUSED_BY_CARRIER:
        return DeliveryState.DELIVERY_STATE_REJECTED
    return state


# --- error codes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwilioError:
    code: int
    title: str
    #: False: the same request may succeed later (rate limits, queue overflow, credentials being fixed).
    permanent: bool = True


ERRORS: dict[int, TwilioError] = {
    e.code: e
    for e in (
        # REST API, account level: never the message's fault, so never a reason to fail it.
        TwilioError(20003, "authentication failed", permanent=False),
        TwilioError(20404, "resource not found (wrong Account SID or base URL?)", permanent=False),
        TwilioError(20429, "too many requests", permanent=False),
        TwilioError(20500, "internal server error", permanent=False),
        TwilioError(20503, "service unavailable", permanent=False),
        # Create-message refusals.
        TwilioError(21211, "invalid 'To' phone number"),
        TwilioError(21212, "invalid 'From' phone number"),
        TwilioError(21408, "permission to send to this region is not enabled"),
        TwilioError(21602, "message body is required"),
        TwilioError(21603, "a 'From' phone number is required"),
        TwilioError(21604, "a 'To' phone number is required"),
        TwilioError(21606, "the 'From' number is not a message-capable number of this account"),
        TwilioError(21608, "the 'To' number is not verified for this trial account"),
        TwilioError(21609, "invalid StatusCallback URL"),
        TwilioError(21610, "recipient unsubscribed (replied STOP)"),
        TwilioError(21611, "the 'From' number has too many queued messages", permanent=False),
        TwilioError(21612, "the 'To' number is not reachable via SMS"),
        TwilioError(21614, "the 'To' number is not a mobile number"),
        TwilioError(21617, "message body exceeds 1600 characters"),
        TwilioError(21620, "invalid media URL"),
        TwilioError(21623, "too many media files"),
        TwilioError(21703, "the Messaging Service has no sender for this destination"),
        # Delivery errors (status callbacks).
        TwilioError(30001, "queue overflow"),
        TwilioError(30002, "account suspended"),
        TwilioError(30003, "unreachable destination handset"),
        TwilioError(30004, "message blocked"),
        TwilioError(30005, "unknown destination handset"),
        TwilioError(30006, "landline or unreachable carrier"),
        TwilioError(30007, "filtered by the carrier (carrier violation)"),
        TwilioError(30008, "unknown error"),
        TwilioError(30009, "missing segment"),
        TwilioError(30010, "message price exceeds max price"),
        TwilioError(30034, "sender not registered (A2P 10DLC)"),
    )
}


def parse_error_code(value: str | int | None) -> int | None:
    """Twilio error codes arrive as ints (JSON), strings (form posts) or not at all."""
    if value is None or isinstance(value, bool):
        return None
    try:
        code = int(str(value).strip())
    except ValueError:
        return None
    return code or None


def describe_error(code: int | None) -> str:
    if code is None:
        return "no error code"
    known = ERRORS.get(code)
    return f"Twilio error {code} ({known.title})" if known else f"Twilio error {code}"


def error_url(code: int) -> str:
    return f"https://www.twilio.com/docs/errors/{code}"


# --- create-message answers --------------------------------------------------------------------


class SubmitDisposition(enum.Enum):
    ACCEPTED = "accepted"
    PERMANENT = "permanent"  # the message fails; retrying the same request fails again
    TEMPORARY = "temporary"  # retry later (CarrierUnavailable); never drop


def classify_submit(http_status: int, code: int | None = None) -> SubmitDisposition:
    """What a create-message answer means.

    429 and 5xx are temporary. So are 401/403/404 (credentials or account SID
    wrong: a configuration fault of ours that an operator fixes; failing every
    message meanwhile would lose them). Any other 4xx is a refusal of this
    message: permanent, unless its Twilio code is known to be temporary.
    """
    if 200 <= http_status < 300:
        return SubmitDisposition.ACCEPTED
    if http_status == 429 or http_status >= 500 or http_status in (401, 403, 404, 408):
        return SubmitDisposition.TEMPORARY
    known = ERRORS.get(code) if code is not None else None
    if known is not None and not known.permanent:
        return SubmitDisposition.TEMPORARY
    return SubmitDisposition.PERMANENT


def submit_failure(carrier: str, http_status: int, code: int | None, detail: str = "") -> ev.MessageFailed:
    """A permanent refusal: the message fails (error table 500) with Twilio's code as the carrier error."""
    text = f"carrier {carrier} refused the message: {describe_error(code)}, HTTP {http_status}"
    if detail:
        text += f": {detail}"
    return ev.MessageFailed(
        carrier=carrier,
        error_code=500,
        reason="CARRIER_REJECTED",
        message=text,
        carrier_error=str(code) if code is not None else f"HTTP {http_status}",
    )


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, inf
        return None
    return max(0.0, seconds)
