"""A development/test Twilio: the Messages API, signed status callbacks, inbound webhooks.

It answers like the real API (``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``,
form-encoded, HTTP basic auth; ``201`` with the message resource, ``status`` queued
or accepted; Twilio's error JSON ``{"code", "message", "more_info", "status"}``),
so the official Twilio helper library can be pointed at it. After accepting a
message it POSTs status callbacks to its ``StatusCallback`` — ``sent``, then
``delivered``, ``undelivered`` or ``failed`` as the delivery rules say — each
signed with the account's Auth Token (``X-Twilio-Signature``), and it can send
signed incoming-message webhooks.

Behaviour that real providers inflict on us is switchable: invalid, unsubscribed
and landline numbers (21211, 21610, 21614), rate limits (429 with Retry-After,
every Nth request or above N requests per second), server errors (every Nth
request, or the next N from a test), undelivered outcomes per destination
pattern. Like Twilio with retries enabled, a callback the receiver does not
take (connection refused, non-2xx) is retried a bounded number of times.

Dev-only endpoints, no auth (it listens on 127.0.0.1):
``POST /_sim/inbound`` (form: From, To, Body, MediaUrl..., optional Url) sends a
signed inbound webhook; ``GET /_sim/messages`` lists what was accepted.

Run standalone: ``python -m smsgw_dev.simulators.twilio --port 8089``.

Over 500 lines on purpose: a stand-alone simulator of one provider's API (its routes, its
state and its CLI), read as a whole by whoever changes it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import logging
import math
import re
import secrets
import signal
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from aiohttp import web

from smsgw.domain.encoding import plan_segments
from smsgw.http_provider.twilio_mapping import error_url
from smsgw.http_provider.twilio_signature import SIGNATURE_HEADER, compute_signature

__all__ = [
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "DeliveryRule",
    "SentCallback",
    "SimulatedMessage",
    "TwilioSimulator",
    "main",
    "new_sid",
]

_log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "5" * 32
DEFAULT_AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_MAX_BODY = 1600
_MAX_MEDIA = 10
_FINAL_STATUSES = ("delivered", "undelivered", "failed", "read")


def new_sid(prefix: str = "SM") -> str:
    """A Twilio-shaped SID: two letters and 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


@dataclass(frozen=True)
class DeliveryRule:
    """Destinations matching ``pattern`` end in ``status`` (with ``error_code`` for a failure)."""

    pattern: str
    status: str = "delivered"
    error_code: int | None = None

    def __post_init__(self) -> None:
        if self.status not in _FINAL_STATUSES:
            raise ValueError(f"status must be one of {_FINAL_STATUSES}, got {self.status!r}")
        re.compile(self.pattern)

    @classmethod
    def parse(cls, text: str) -> DeliveryRule:
        """``REGEX=STATUS[/CODE]``, e.g. ``^\\+1415555067=undelivered/30003``."""
        pattern, sep, outcome = text.rpartition("=")
        if not sep:
            raise ValueError(f"expected REGEX=STATUS[/CODE], got {text!r}")
        status, _, code = outcome.partition("/")
        return cls(pattern=pattern, status=status.strip().lower(), error_code=int(code) if code else None)


@dataclass
class SimulatedMessage:
    """One accepted message, as the API holds it."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    media_urls: list[str]
    status_callback: str | None
    status: str
    num_segments: int
    date_created: datetime
    date_updated: datetime
    error_code: int | None = None
    error_message: str | None = None
    form: list[tuple[str, str]] = field(default_factory=list)

    def resource(self) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": format_datetime(self.date_created),
            "date_sent": format_datetime(self.date_updated) if self.status not in ("queued", "accepted") else None,
            "date_updated": format_datetime(self.date_updated),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": str(len(self.media_urls)),
            "num_segments": str(self.num_segments),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": self.to,
            "uri": f"{uri}.json",
        }


@dataclass(frozen=True)
class SentCallback:
    """A webhook the simulator POSTed (status callback or inbound), and how the receiver answered."""

    kind: str  # "status" or "inbound"
    url: str
    params: dict[str, str]
    signature: str
    http_status: int | None  # None: no answer (connection refused, timeout)


@dataclass
class _ScriptedFailure:
    status: int
    code: int
    retry_after: float | None


class TwilioSimulator:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: Mapping[str, str] | None = None,
        callback_delay: float = 0.2,
        delivery_rules: Sequence[DeliveryRule] = (),
        invalid_pattern: str | None = None,
        unsubscribed_pattern: str | None = None,
        landline_pattern: str | None = None,
        throttle_every: int = 0,
        rate_limit: float = 0.0,
        retry_after: float = 1.0,
        error_every: int = 0,
        error_status: int = 500,
        send_callbacks: bool = True,
        callback_attempts: int = 3,
        callback_retry_interval: float = 0.5,
        inbound_url: str | None = None,
    ):
        """
        accounts: Account SID -> Auth Token (default: one account, DEFAULT_ACCOUNT_SID/DEFAULT_AUTH_TOKEN).
        invalid/unsubscribed/landline_pattern: regexes of `To` refused with 21211 / 21610 / 21614
            (a `To` that is not E.164 is always 21211).
        throttle_every: answer every Nth create request 429; rate_limit: 429 above N requests per second.
        retry_after: the Retry-After (seconds) of a 429.
        error_every: answer every Nth create request `error_status` (5xx).
        delivery_rules: first matching rule decides the final status; none matching: delivered.
        """
        self._host = host
        self._requested_port = port
        self.accounts = dict(accounts or {DEFAULT_ACCOUNT_SID: DEFAULT_AUTH_TOKEN})
        self.callback_delay = callback_delay
        self.delivery_rules = list(delivery_rules)
        self._invalid = re.compile(invalid_pattern) if invalid_pattern else None
        self._unsubscribed = re.compile(unsubscribed_pattern) if unsubscribed_pattern else None
        self._landline = re.compile(landline_pattern) if landline_pattern else None
        self.throttle_every = throttle_every
        self.rate_limit = rate_limit
        self.retry_after = retry_after
        self.error_every = error_every
        self.error_status = error_status
        self.send_callbacks = send_callbacks
        self.callback_attempts = max(1, callback_attempts)
        self.callback_retry_interval = callback_retry_interval
        self.inbound_url = inbound_url

        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._create_count = 0
        self._recent: collections.deque[float] = collections.deque()
        self._scripted: collections.deque[_ScriptedFailure] = collections.deque()
        self._callbacks_changed = asyncio.Condition()

        #: Accepted messages by SID, in arrival order.
        self.messages: dict[str, SimulatedMessage] = {}
        #: Create requests answered 429 / 5xx.
        self.throttled = 0
        self.server_errors = 0
        #: Every webhook POSTed (one entry per attempt).
        self.callbacks: list[SentCallback] = []

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        messages = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages"
        app.router.add_post(messages + ".json", self._create)
        app.router.add_get(messages + "/{sid}.json", self._fetch)
        app.router.add_post("/_sim/inbound", self._sim_inbound)
        app.router.add_get("/_sim/messages", self._sim_messages)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        _log.info("Twilio simulator listening on %s:%d", self._host, self._port)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """What to configure as the carrier's base_url (in place of https://api.twilio.com)."""
        return f"http://{self._host}:{self._port}"

    # --- test controls ----------------------------------------------------------------------------

    def fail_next(
        self, count: int = 1, *, status: int = 500, code: int | None = None, retry_after: float | None = None
    ) -> None:
        """Answer the next `count` create requests with `status` (e.g. 429 with retry_after, or 503)."""
        code = code if code is not None else (20429 if status == 429 else 20500 if status >= 500 else 20001)
        for _ in range(count):
            self._scripted.append(_ScriptedFailure(status, code, retry_after))

    async def wait_for_callbacks(self, predicate, timeout: float = 5.0) -> list[SentCallback]:
        """Waits until predicate(self.callbacks) is true; returns the callbacks."""
        async with self._callbacks_changed:
            await asyncio.wait_for(self._callbacks_changed.wait_for(lambda: predicate(self.callbacks)), timeout)
        return list(self.callbacks)

    async def send_inbound(
        self,
        *,
        source: str,
        destination: str,
        body: str,
        media_urls: Sequence[str] = (),
        url: str | None = None,
        account_sid: str | None = None,
        auth_token: str | None = None,
    ) -> int | None:
        """POSTs a signed incoming-message webhook (Twilio's form) and returns the HTTP status answered.

        `auth_token` overrides the account's token (to test that a bad signature is refused).
        """
        url = url or self.inbound_url
        if not url:
            raise ValueError("no inbound URL: pass url= or configure inbound_url")
        account_sid = account_sid or next(iter(self.accounts))
        sid = new_sid("SM")
        params = {
            "ToCountry": "US",
            "ToState": "",
            "ToCity": "",
            "ToZip": "",
            "FromCountry": "US",
            "FromState": "",
            "FromCity": "",
            "FromZip": "",
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "MessageSid": sid,
            "AccountSid": account_sid,
            "From": source,
            "To": destination,
            "Body": body,
            "NumMedia": str(len(media_urls)),
            "NumSegments": str(max(1, plan_segments(body).segments if body else 1)),
            "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        }
        for index, media in enumerate(media_urls):
            params[f"MediaUrl{index}"] = media
            params[f"MediaContentType{index}"] = "image/jpeg"
        return await self._post_webhook("inbound", url, params, auth_token or self.accounts[account_sid])

    # --- the API ----------------------------------------------------------------------------------

    def _authenticated(self, request: web.Request) -> str | None:
        """The Account SID the request authenticated as, or None."""
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        token = self.accounts.get(user)
        if token is None or not secrets.compare_digest(token.encode(), password.encode()):
            return None
        return user

    def _refusal(self) -> web.Response | None:
        """A scripted, periodic or rate-limit failure for this create request, if one is due."""
        self._create_count += 1
        if self._scripted:
            failure = self._scripted.popleft()
            return self._counted_error(failure.status, failure.code, failure.retry_after)
        if self.error_every and self._create_count % self.error_every == 0:
            return self._counted_error(self.error_status, 20500, None)
        if self.throttle_every and self._create_count % self.throttle_every == 0:
            return self._counted_error(429, 20429, self.retry_after)
        if self.rate_limit > 0:
            now = time.monotonic()
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            if len(self._recent) >= self.rate_limit:
                wait = max(self.retry_after, 1.0 - (now - self._recent[0]))
                return self._counted_error(429, 20429, wait)
            self._recent.append(now)
        return None

    def _counted_error(self, status: int, code: int, retry_after: float | None) -> web.Response:
        if status == 429:
            self.throttled += 1
        elif status >= 500:
            self.server_errors += 1
        message = {
            20429: "Too Many Requests",
            20500: "An internal server error has occurred",
            20503: "Service Unavailable",
        }.get(code, "Error")
        headers = {"Retry-After": str(max(0, math.ceil(retry_after)))} if retry_after is not None else None
        return _error(status, code, message, headers=headers)

    async def _create(self, request: web.Request) -> web.Response:
        account = self._authenticated(request)
        if account is None:
            return _error(
                401,
                20003,
                "Authentication Error - invalid username",
                headers={"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
        if account != request.match_info["account_sid"]:
            return _error(403, 20003, "Authenticated account does not match the Account SID in the URL")
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        form = await request.post()
        pairs = [(k, v) for k, v in form.items() if isinstance(v, str)]
        fields = dict(pairs)  # a form-encoded body has text values only (no file parts)
        to = fields.get("To", "")
        sender = fields.get("From") or None
        service = fields.get("MessagingServiceSid") or None
        body = fields.get("Body", "")
        media = [m for m in form.getall("MediaUrl", []) if isinstance(m, str)]
        callback = fields.get("StatusCallback") or None
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not sender and not service:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not body and not media:
            return _error(400, 21602, "Message body is required.")
        if not _E164.match(to) or (self._invalid and self._invalid.search(to)):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if self._unsubscribed and self._unsubscribed.search(to):
            return _error(400, 21610, "Attempt to send to unsubscribed recipient")
        if self._landline and self._landline.search(to):
            return _error(400, 21614, f"'To' number {to} is not a valid mobile number")
        if len(body) > _MAX_BODY:
            return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if len(media) > _MAX_MEDIA:
            return _error(400, 21623, "The number of media files exceeds the limit of 10.")
        if any(not str(m).startswith(("http://", "https://")) for m in media):
            return _error(400, 21620, "Media urls are invalid.")
        if callback and not callback.startswith(("http://", "https://")):
            return _error(400, 21609, f"The StatusCallback URL {callback} is not a valid URL.")
        now = datetime.now(UTC)
        message = SimulatedMessage(
            sid=new_sid("SM"),
            account_sid=account,
            to=to,
            from_=sender,
            messaging_service_sid=service,
            body=body,
            media_urls=[str(m) for m in media],
            status_callback=callback,
            status="accepted" if service and not sender else "queued",
            num_segments=max(1, plan_segments(body).segments) if body else 1,
            date_created=now,
            date_updated=now,
            form=pairs,
        )
        self.messages[message.sid] = message
        self._spawn(self._progress(message))
        return web.json_response(message.resource(), status=201)

    async def _fetch(self, request: web.Request) -> web.Response:
        account = self._authenticated(request)
        if account is None:
            return _error(401, 20003, "Authentication Error - invalid username")
        message = self.messages.get(request.match_info["sid"])
        if message is None or message.account_sid != account or account != request.match_info["account_sid"]:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        return web.json_response(message.resource())

    # --- what happens after acceptance -------------------------------------------------------------

    def _outcome(self, to: str) -> DeliveryRule:
        for rule in self.delivery_rules:
            if re.search(rule.pattern, to):
                return rule
        return DeliveryRule(pattern="", status="delivered")

    async def _progress(self, message: SimulatedMessage) -> None:
        rule = self._outcome(message.to)
        if rule.status == "failed":
            steps = ["failed"]
        elif rule.status == "read":
            steps = ["sent", "delivered", "read"]
        else:
            steps = ["sent", rule.status]
        for status in steps:
            await asyncio.sleep(self.callback_delay)
            message.status = status
            message.date_updated = datetime.now(UTC)
            if status in ("undelivered", "failed"):
                message.error_code = rule.error_code or (30008 if status == "undelivered" else 30001)
                message.error_message = None
            if self.send_callbacks and message.status_callback:
                await self._post_webhook(
                    "status", message.status_callback, self._status_params(message), self.accounts[message.account_sid]
                )

    def _status_params(self, message: SimulatedMessage) -> dict[str, str]:
        params = {
            "SmsSid": message.sid,
            "SmsStatus": message.status,
            "MessageStatus": message.status,
            "MessageSid": message.sid,
            "AccountSid": message.account_sid,
            "To": message.to,
            "ApiVersion": API_VERSION,
        }
        if message.from_:
            params["From"] = message.from_
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if message.error_code is not None:
            params["ErrorCode"] = str(message.error_code)
        if message.status == "delivered":
            params["RawDlrDoneDate"] = message.date_updated.strftime("%y%m%d%H%M")
        return params

    async def _post_webhook(self, kind: str, url: str, params: dict[str, str], auth_token: str) -> int | None:
        """POSTs a signed form; retries (bounded) when not taken. Returns the last HTTP status (None: no answer)."""
        assert self._client is not None, "simulator not started"
        signature = compute_signature(auth_token, url, params)
        headers = {
            SIGNATURE_HEADER: signature,
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        status: int | None = None
        for attempt in range(self.callback_attempts):
            try:
                async with self._client.post(url, data=params, headers=headers) as response:
                    status = response.status
                    await response.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                _log.info("%s webhook to %s failed: %r", kind, url, exc)
                status = None
            await self._record(SentCallback(kind, url, dict(params), signature, status))
            # A 4xx is the receiver's decision (e.g. 403 for a signature): asking again changes nothing.
            if status is not None and status < 500:
                break
            if attempt + 1 < self.callback_attempts:
                await asyncio.sleep(self.callback_retry_interval)
        return status

    async def _record(self, callback: SentCallback) -> None:
        async with self._callbacks_changed:
            self.callbacks.append(callback)
            self._callbacks_changed.notify_all()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- dev endpoints ----------------------------------------------------------------------------

    async def _sim_inbound(self, request: web.Request) -> web.Response:
        form = await request.post()
        url = form.get("Url") or self.inbound_url
        if not url or not form.get("From") or not form.get("To"):
            return web.json_response({"error": "From, To and Url (or --inbound-url) are required"}, status=400)
        status = await self.send_inbound(
            source=str(form["From"]),
            destination=str(form["To"]),
            body=str(form.get("Body", "")),
            media_urls=[str(m) for m in form.getall("MediaUrl", [])],
            url=str(url),
        )
        return web.json_response({"url": url, "status": status})

    async def _sim_messages(self, request: web.Request) -> web.Response:
        return web.json_response({"messages": [m.resource() for m in self.messages.values()]})


def _error(status: int, code: int, message: str, *, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"code": code, "message": message, "more_info": error_url(code), "status": status},
        status=status,
        headers=headers,
    )


# --- CLI -----------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m smsgw_dev.simulators.twilio", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089, help="0: any free port (printed in the ready line)")
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument("--callback-delay", type=float, default=0.2, help="seconds between status callbacks")
    parser.add_argument(
        "--outcome",
        action="append",
        default=[],
        metavar="REGEX=STATUS[/CODE]",
        help="final status for matching destinations, e.g. '^\\+1415555067=undelivered/30003' "
        "(repeatable; first match wins; default delivered)",
    )
    parser.add_argument("--invalid-pattern", default=None, help="regex of To answered 400/21211")
    parser.add_argument("--unsubscribed-pattern", default=None, help="regex of To answered 400/21610")
    parser.add_argument("--landline-pattern", default=None, help="regex of To answered 400/21614")
    parser.add_argument("--throttle-every", type=int, default=0, help="answer every Nth create request 429")
    parser.add_argument("--rate-limit", type=float, default=0.0, help="429 above this many requests per second")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds of a 429")
    parser.add_argument("--error-every", type=int, default=0, help="answer every Nth create request --error-status")
    parser.add_argument("--error-status", type=int, default=500)
    parser.add_argument("--no-callbacks", action="store_true", help="never send status callbacks")
    parser.add_argument("--inbound-url", default=None, help="where POST /_sim/inbound sends incoming messages")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    simulator = TwilioSimulator(
        host=args.host,
        port=args.port,
        accounts={args.account_sid: args.auth_token},
        callback_delay=args.callback_delay,
        delivery_rules=[DeliveryRule.parse(o) for o in args.outcome],
        invalid_pattern=args.invalid_pattern,
        unsubscribed_pattern=args.unsubscribed_pattern,
        landline_pattern=args.landline_pattern,
        throttle_every=args.throttle_every,
        rate_limit=args.rate_limit,
        retry_after=args.retry_after,
        error_every=args.error_every,
        error_status=args.error_status,
        send_callbacks=not args.no_callbacks,
        inbound_url=args.inbound_url,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await simulator.start()
    # Scripts wait for this exact line before connecting.
    print(f"Twilio simulator listening on {simulator.host}:{simulator.port}", flush=True)
    try:
        await stop.wait()
    finally:
        await simulator.stop()


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
