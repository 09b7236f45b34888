"""The carrier-adapter's web server for HTTP providers: status callbacks and inbound messages.

    POST /callbacks/{carrier}/status    Twilio status callback (MessageSid, MessageStatus, ErrorCode...)
    POST /callbacks/{carrier}/inbound   Twilio incoming-message webhook (From, To, Body, NumSegments...)
    GET  /healthz                       200 while the server runs

Nothing in a request is trusted before its ``X-Twilio-Signature`` is verified
with the carrier's Auth Token: a missing or bad signature is answered 403 and
nothing is recorded. The URL signed is the carrier's public callback URL
(``status_callback_base_url`` + the request's path and query), not the
address this server happens to see, so it still verifies behind a proxy.

The provider is answered 2xx only once the report is durable (the dispatcher's
``on_receipt``/``on_inbound`` returned); if recording fails it gets a 500 and may retry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiohttp import web

from smsgw.http_provider.twilio_signature import SIGNATURE_HEADER, verify_signature

from .client import TwilioCarrierClient
from .config import INBOUND_PATH, STATUS_CALLBACK_PATH

log = logging.getLogger(__name__)

__all__ = ["CallbackServer", "build_callback_app"]

_CARRIERS = web.AppKey("carriers", dict)
_EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def build_callback_app(carriers: Iterable[TwilioCarrierClient]) -> web.Application:
    """One app for every Twilio carrier of the adapter; each carrier has its own paths."""
    app = web.Application(client_max_size=256 * 1024)
    app[_CARRIERS] = {c.name: c for c in carriers}
    app.router.add_post(STATUS_CALLBACK_PATH, _status)
    app.router.add_post(INBOUND_PATH, _inbound)
    app.router.add_get("/healthz", _healthz)
    return app


async def _verified(request: web.Request) -> tuple[TwilioCarrierClient, dict[str, str]]:
    """The carrier and the form, once the signature holds; raises 404/403/400 otherwise."""
    carrier = request.app[_CARRIERS].get(request.match_info["carrier"])
    if carrier is None:
        raise web.HTTPNotFound(text="no such carrier\n")
    try:
        form = await request.post()
    except (UnicodeDecodeError, ValueError):
        # Found by fuzzing (test_fuzzed_callbacks.py): aiohttp raises on a body that is not UTF-8,
        # which answered 500, and a 500 makes the provider retry the same bytes for days.
        carrier.count_callback(verified=False)
        raise web.HTTPBadRequest(text="the body is not a UTF-8 form (application/x-www-form-urlencoded)\n") from None
    url = carrier.config.status_callback_base_url + request.raw_path
    signature = request.headers.get(SIGNATURE_HEADER)
    fields = [(name, value) for name, value in form.items() if isinstance(value, str)]  # a urlencoded form: all str
    if not verify_signature(carrier.config.auth_token.get_secret_value(), url, fields, signature):
        log.warning(
            "carrier %s: %s signature on %s from %s; refused",
            carrier.name,
            "bad" if signature else "missing",
            request.raw_path,
            request.remote,
        )
        carrier.count_callback(verified=False)
        raise web.HTTPForbidden(text="invalid signature\n")
    account = form.get("AccountSid")
    if account and account != carrier.config.account_sid:
        log.warning(
            "carrier %s: callback for account %s, expected %s; refused",
            carrier.name,
            account,
            carrier.config.account_sid,
        )
        carrier.count_callback(verified=False)
        raise web.HTTPBadRequest(text="wrong AccountSid\n")
    carrier.count_callback(verified=True)
    # Repeated names carry nothing we read: the first value of each is enough.
    params: dict[str, str] = {}
    for name, value in form.items():
        if isinstance(value, str):
            params.setdefault(name, value)
    return carrier, params


async def _status(request: web.Request) -> web.Response:
    carrier, params = await _verified(request)
    try:
        await carrier.handle_status(params)
    except Exception:
        log.exception("carrier %s: could not record status callback %s", carrier.name, params.get("MessageSid"))
        raise web.HTTPInternalServerError(text="not recorded; retry\n") from None
    return web.Response(status=204)


async def _inbound(request: web.Request) -> web.Response:
    carrier, params = await _verified(request)
    try:
        await carrier.handle_inbound(params)
    except Exception:
        log.exception("carrier %s: could not record inbound %s", carrier.name, params.get("MessageSid"))
        raise web.HTTPInternalServerError(text="not recorded; retry\n") from None
    # Empty TwiML: no automatic reply (replies are sent through the API like any message).
    return web.Response(text=_EMPTY_TWIML, content_type="text/xml")


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


class CallbackServer:
    """Runs the callback app on host:port (port 0: any free port, see ``port`` after start)."""

    def __init__(
        self,
        carriers: Iterable[TwilioCarrierClient],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 5.0,
    ):
        self.app = build_callback_app(carriers)
        self.host = host
        self._requested_port = port
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        # On stop, requests in flight get shutdown_timeout to finish recording (stop before the producer).
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=self._shutdown_timeout
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info(
            "HTTP provider callbacks listening on %s:%d for %s",
            self.host,
            self.port,
            sorted(self.app[_CARRIERS].keys()),
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
