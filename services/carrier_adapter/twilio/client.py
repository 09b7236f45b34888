"""A Twilio-compatible HTTP provider behind the CarrierClient interface the dispatcher uses.

Submit: ``POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json``,
form-encoded, HTTP basic auth (Account SID : Auth Token). The answer decides:

- 2xx with a ``sid``: accepted, one carrier id (Twilio splits and counts the
  segments itself);
- 429 / 5xx / a network fault / bad credentials: CarrierUnavailable, so the
  dispatcher retries and nothing is dropped. A ``Retry-After`` is honoured
  before raising, and by every other submit to this carrier meanwhile;
- any other 4xx (invalid, unsubscribed, landline number...): a permanent
  failure carrying Twilio's error code.

Status callbacks and inbound messages arrive at the adapter's web server
(callbacks.py), which verifies the signature and then calls
``handle_status`` / ``handle_inbound`` here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime

import aiohttp

from smsgw.domain.phone import numbers_masked
from smsgw.http_provider import twilio_mapping as tm
from smsgw.lanes import LaneSemaphore, lane_of
from smsgw.recent_rate import RecentRate
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev

from ..carrier import CarrierReports, CarrierUnavailable, SubmitProgress, SubmitResult
from ..carrier_metrics import CarrierMetrics
from .config import MAX_VALIDITY_PERIOD, TwilioCarrier

log = logging.getLogger(__name__)


class TwilioCarrierClient:
    def __init__(self, config: TwilioCarrier, reports: CarrierReports):
        self.name = config.name
        self.config = config
        self.in_doubt_policy = config.in_doubt
        self.concurrency = config.max_concurrency
        # No connection of its own: whether the provider answers is known per request, and a
        # provider routing skipped would get no request to show it is back.
        self.connected = None
        self._reports = reports
        self._session: aiohttp.ClientSession | None = None
        # Requests at once; a HIGH message takes the next free one before the NORMAL ones waiting.
        self._slots = LaneSemaphore(config.max_concurrency)
        # After a 429 every submit to this carrier waits until then (time.monotonic()).
        self._paused_until = 0.0
        # For metrics(): counted where each thing happens, nowhere else.
        self._counts: Counter[str] = Counter()
        self._in_flight = 0
        self._accepted_rate = RecentRate()
        # False once a request failed at the network, 5xx or credentials level; True again when one is answered.
        self._provider_answering = True

    # --- lifecycle --------------------------------------------------------------------------------

    def holds_part_of(self, message_id: str) -> bool:
        return False  # one request per message: all of it or nothing

    def share_rate(self, share: float) -> None:
        """No rate limit configured for HTTP providers (they answer 429, which is retried)."""

    async def start(self) -> None:
        """Nothing to connect: HTTP needs no session with the provider. Opens the connection pool."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.request_timeout),
                connector=aiohttp.TCPConnector(limit=self.config.max_concurrency),
                headers={
                    "Authorization": aiohttp.encode_basic_auth(
                        self.config.account_sid, self.config.auth_token.get_secret_value()
                    ),
                    "Accept": "application/json",
                    "User-Agent": "smsgw-carrier-adapter",
                },
            )
        log.info(
            "carrier %s: Twilio API %s, account %s, callbacks at %s",
            self.name,
            self.config.base_url,
            self.config.account_sid,
            self.config.status_callback_url,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- submit -----------------------------------------------------------------------------------

    def form_for(self, command: cp.DispatchCommand) -> list[tuple[str, str]]:
        """The create-message form (From as `sender_source` says)."""
        config = self.config
        form = [("To", command.to)]
        own = getattr(command, "from") if config.sender_source == "message" else ""
        sender = own or config.from_number
        if sender:
            form.append(("From", sender))
        if config.messaging_service_sid:
            form.append(("MessagingServiceSid", config.messaging_service_sid))
        if command.content.text:
            form.append(("Body", command.content.text))
        form.extend(("MediaUrl", url) for url in _media_urls(command))
        form.append(("StatusCallback", config.status_callback_url))
        if command.HasField("expires_at"):
            remaining = command.expires_at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)
            form.append(("ValidityPeriod", str(min(MAX_VALIDITY_PERIOD, max(1, int(remaining.total_seconds()))))))
        return form

    async def submit(self, command: cp.DispatchCommand, progress: SubmitProgress | None = None) -> SubmitResult:
        media = _media_urls(command)
        if media and not self.config.supports_mms:
            return SubmitResult(
                failure=ev.MessageFailed(
                    carrier=self.name,
                    error_code=500,
                    reason="CARRIER_REJECTED",
                    message=f"carrier {self.name} does not send media (supports_mms is false); "
                    f"{len(media)} media URL(s) given",
                    carrier_error="MMS_NOT_SUPPORTED",
                )
            )
        if self._session is None:
            raise CarrierUnavailable(f"{self.name}: not started")
        await self._wait_out_pause()
        async with self._slots.held(lane_of(command.priority)):
            self._counts["submits"] += 1
            self._in_flight += 1
            try:
                async with self._session.post(self.config.messages_url, data=self.form_for(command)) as response:
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
                    body = await _json_or_text(response)
            except (TimeoutError, aiohttp.ClientError) as exc:
                self._provider_answering = False
                self._counts["request_errors"] += 1
                # Ambiguous after the request left: Twilio may have created the message. Retrying may
                # send it twice, which beats losing it (the API has no idempotency key).
                # A refused connection sent nothing; anything later is in doubt.
                in_doubt = not isinstance(exc, aiohttp.ClientConnectorError)
                reason = (
                    "NOT_CONNECTED"
                    if not in_doubt
                    else "RESPONSE_TIMEOUT"
                    if isinstance(exc, asyncio.TimeoutError)
                    else "CONNECTION_LOST"
                )
                raise CarrierUnavailable(f"{self.name}: {exc!r}", in_doubt=in_doubt, reason=reason) from exc
            finally:
                self._in_flight -= 1
        self._provider_answering = not _provider_failed(status)
        code = tm.parse_error_code(body.get("code") or body.get("error_code")) if isinstance(body, dict) else None
        disposition = tm.classify_submit(status, code)
        if disposition is tm.SubmitDisposition.ACCEPTED:
            result = self._accepted(status, body)
            if result.accepted:
                self._accepted_rate.mark()
            else:
                self._counts["submit_failures"] += 1
            return result
        detail = _detail(body)
        if disposition is tm.SubmitDisposition.TEMPORARY:
            self._counts["throttled" if status == 429 or code == 20429 else "request_errors"] += 1
            wait = tm.parse_retry_after(retry_after)
            if status == 429 or code == 20429:
                wait = self.config.retry_after_default if wait is None else wait
            if wait:
                wait = min(wait, self.config.retry_after_max)
                self._paused_until = max(self._paused_until, time.monotonic() + wait)
                log.warning(
                    "carrier %s: HTTP %d (%s); waiting %.1fs as asked", self.name, status, tm.describe_error(code), wait
                )
                await self._wait_out_pause()
            if status in (401, 403, 404):
                log.error(
                    "carrier %s: HTTP %d %s: check account_sid, auth_token and base_url; "
                    "messages wait until it is fixed",
                    self.name,
                    status,
                    numbers_masked(detail),
                )
            raise CarrierUnavailable(
                f"{self.name}: HTTP {status} {tm.describe_error(code)}: {detail}",
                reason="THROTTLED" if status == 429 or code == 20429 else "PROVIDER_ERROR",
            )
        # Twilio's messages name the number ("The 'To' number +1... is not a valid phone number"):
        # the failure keeps it for the account, the log masks it.
        log.info("carrier %s refused %s: HTTP %d %s", self.name, command.message_id, status, numbers_masked(detail))
        self._counts["submit_failures"] += 1
        return SubmitResult(failure=tm.submit_failure(self.name, status, code, detail))

    def _accepted(self, status: int, body) -> SubmitResult:
        sid = body.get("sid") if isinstance(body, dict) else None
        if not sid:
            return SubmitResult(
                failure=tm.submit_failure(self.name, status, None, f"answer without a message sid: {str(body)[:200]}")
            )
        twilio_status = str(body.get("status") or "")
        code = tm.parse_error_code(body.get("error_code"))
        if twilio_status in ("failed", "undelivered", "canceled"):
            # Refused at once although the request succeeded: the message fails now.
            return SubmitResult(
                failure=tm.submit_failure(
                    self.name, status, code, f"message {sid} {twilio_status}: {body.get('error_message') or ''}".strip()
                )
            )
        return SubmitResult(carrier_ids=(str(sid),))

    @property
    def paused_for(self) -> float:
        """Seconds until submits go out again after a 429 (0: not paused)."""
        return max(0.0, self._paused_until - time.monotonic())

    async def _wait_out_pause(self) -> None:
        remaining = self._paused_until - time.monotonic()
        if remaining > 0:
            self._counts["retry_after_waits"] += 1
        while remaining > 0:
            await asyncio.sleep(remaining)
            remaining = self._paused_until - time.monotonic()

    # --- callbacks (signature already verified by callbacks.py) --------------------------------

    async def handle_status(self, params: Mapping[str, str]) -> bool:
        """A status callback. Reports it when it is a delivery fact; True if it did.

        Durable when this returns: the caller answers the provider only then.
        """
        sid = params.get("MessageSid") or params.get("SmsSid") or ""
        status = (params.get("MessageStatus") or params.get("SmsStatus") or "").strip().lower()
        error = params.get("ErrorCode") or ""
        state = tm.delivery_state(status, error)
        if not sid:
            log.warning("carrier %s: status callback without MessageSid (status %r)", self.name, status)
            return False
        if state is None:
            if status not in tm.INTERMEDIATE_STATUSES:
                log.warning("carrier %s: unknown status %r for %s; ignored", self.name, status, sid)
            return False
        self._counts["receipts"] += 1
        await self._reports.on_receipt(self.name, sid, state, status, error)
        return True

    async def handle_inbound(self, params: Mapping[str, str]) -> None:
        """An incoming message (MO); an MMS's media URLs (MediaUrl0..N-1) travel with it."""
        self._counts["inbound"] += 1
        source, destination, text = params.get("From", ""), params.get("To", ""), params.get("Body", "")
        try:
            parts = max(1, int(params.get("NumSegments") or 1))
        except ValueError:
            parts = 1
        await self._reports.on_inbound(
            self.name, source, destination, text, parts, media_urls=_inbound_media_urls(params)
        )

    def count_callback(self, *, verified: bool) -> None:
        """callbacks.py tells each callback's fate here, so this client holds all of its carrier's counts."""
        self._counts["callbacks_accepted" if verified else "callbacks_rejected"] += 1

    # --- metrics ---------------------------------------------------------------------------------

    def metrics(self) -> CarrierMetrics:
        """The provider is "up" while its last request was answered (none yet counts as answered); TPS
        is accepted submits per second."""
        counts = self._counts
        return CarrierMetrics(
            kind="twilio",
            sessions={"api": self._provider_answering},
            current_tps=self._accepted_rate.per_second(),
            in_flight=self._in_flight,
            submits=counts["submits"],
            submit_failures=counts["submit_failures"],
            throttled=counts["throttled"],
            receipts=counts["receipts"],
            inbound=counts["inbound"],
            extra_counters={
                name: counts[name]
                for name in ("request_errors", "retry_after_waits", "callbacks_accepted", "callbacks_rejected")
            },
        )


def _provider_failed(http_status: int) -> bool:
    """The answer says the provider is not usable now (5xx, or credentials/account refused), not the message."""
    return http_status >= 500 or http_status in (401, 403, 404, 408)


def _media_urls(command: cp.DispatchCommand) -> list[str]:
    # DispatchCommand.media_urls (field 14) may not exist yet in the generated stubs.
    return [url for url in getattr(command, "media_urls", []) if url]


async def _json_or_text(response: aiohttp.ClientResponse):
    text = await response.text(errors="replace")
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return text


def _detail(body) -> str:
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error_message") or "")[:300]
    return str(body).strip()[:200]


def _inbound_media_urls(params: Mapping[str, str]) -> list[str]:
    """MediaUrl0..MediaUrl{NumMedia-1} of an incoming MMS (Twilio allows up to 10). A NumMedia
    that is not a number is read as the URLs that are present."""
    try:
        count = min(max(0, int(params.get("NumMedia") or 0)), 10)
    except ValueError:
        count = 10
    urls = [params.get(f"MediaUrl{index}", "") for index in range(count)]
    return [url for url in urls if url]
