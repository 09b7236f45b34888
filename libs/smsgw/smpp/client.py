"""The ESME client the carrier-adapter sends through: one bind_transceiver, kept alive.

Policies that live here (and only here):

* Reconnect: a supervisor task connects and binds, waits for the session to
  die, and tries again with exponential backoff and full jitter, so a fleet of
  adapters does not reconnect to a recovering SMSC in lock step.
* Window: at most ``window`` submit_sm await their response at once; carriers
  contract a window per bind and disconnect binds that exceed it.
* Backpressure: ESME_RTHROTTLED / ESME_RMSGQFUL pause every submit on the bind
  (not just the one that got it) and the same part is sent again. The caller
  never sees these statuses: they say "later", not "no".
* Receipts and MO: a deliver_sm is acknowledged only after ``on_deliver``
  returned, so a crash or an exception before the event is safely recorded
  leaves the SMSC to redeliver it (at-least-once; consumers dedupe).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from smsgw.domain.encoding import Encoding, concat_udh, split_encoded
from smsgw.smpp import constants as c
from smsgw.smpp.framing import ConnectionClosed, PduStream
from smsgw.smpp.inbound import InboundDeliver, from_deliver_sm
from smsgw.smpp.pdu import BindTransceiver, DeliverSm, EnquireLink, GenericNack, Pdu, SubmitSm, SubmitSmResp, Unbind
from smsgw.smpp.session import SmppSession

__all__ = [
    "InboundDeliver",
    "SmppBindRejected",
    "SmppClient",
    "SmppError",
    "SmppTimeout",
    "SmppUnavailable",
    "SubmitOutcome",
]

_log = logging.getLogger(__name__)


class SmppError(Exception):
    """Base of the client's errors."""


class SmppUnavailable(SmppError):
    """Not bound, or the connection was lost before the answer: retry the message later."""


class SmppTimeout(SmppError, TimeoutError):
    """No response within response_timeout. The SMSC may or may not have the message."""


class SmppBindRejected(SmppError):
    """The SMSC answered our bind with an error (bad credentials, already bound, ...)."""

    def __init__(self, command_status: int):
        super().__init__(f"bind rejected: {c.status_name(command_status)}")
        self.command_status = command_status


@dataclass(frozen=True)
class SubmitOutcome:
    #: Status of the part that failed, or 0 (ESME_ROK) when every part was accepted.
    command_status: int
    #: One per part as the SMSC returned it (raw), in part order; empty on failure.
    message_ids: list[str]
    segments: int

    @property
    def ok(self) -> bool:
        return self.command_status == c.ESME_ROK


DeliverCallback = Callable[[InboundDeliver], Awaitable[None]]


def address_fields(address: str) -> tuple[str, int, int]:
    """(addr, TON, NPI) for an smsgw address.

    E.164 ("+447700900123") and long numbers go as international/ISDN (1/1)
    without the '+', which SMPP addresses never carry. Short numbers (short
    codes) go as unknown/ISDN (0/1) and let the SMSC apply its numbering plan.
    Anything with a letter is an alphanumeric sender id (5/0).
    """
    digits = address[1:] if address.startswith("+") else address
    if digits.isdigit():
        if address.startswith("+") or len(digits) > 8:
            return digits, 1, 1
        return digits, 0, 1
    return address, 5, 0


class SmppClient:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        system_id: str,
        password: str,
        system_type: str = "",
        window: int = 10,
        enquire_link_interval: float = 30.0,
        response_timeout: float = 10.0,
        reconnect_min: float = 0.2,
        reconnect_max: float = 10.0,
        on_deliver: DeliverCallback | None = None,
        throttle_min: float = 0.1,
        throttle_max: float = 5.0,
    ):
        if window < 1:
            raise ValueError("window must be at least 1")
        self._host = host
        self._port = port
        self._system_id = system_id
        self._password = password
        self._system_type = system_type
        self._window = asyncio.Semaphore(window)
        self._window_size = window
        self._enquire_link_interval = enquire_link_interval
        self._response_timeout = response_timeout
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._throttle_min = throttle_min
        self._throttle_max = throttle_max
        self._on_deliver = on_deliver

        self._session: SmppSession | None = None
        self._bound_event = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._first_bind: asyncio.Future[None] | None = None
        self._closing = False
        # 8-bit concatenation reference, one per multipart message. Random start
        # so two adapter instances (or a restart) are unlikely to reuse a
        # reference towards the same handset within its reassembly timeout.
        self._reference = random.randrange(256)
        # Backpressure pause shared by every submit on this bind.
        self._paused_until = 0.0
        self._throttle_streak = 0

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Connect and bind; return once bound. Reconnects in the background after drops.

        Raises SmppBindRejected if the very first bind is refused (wrong
        credentials should fail a deployment, not spin quietly). Connection
        errors are retried until bound; wrap in asyncio.wait_for to bound it
        (the background reconnecting then carries on until close()).
        """
        if self._supervisor is not None:
            raise RuntimeError("start() called twice")
        self._first_bind = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"smpp-client-{self._system_id}")
        self._supervisor.add_done_callback(self._supervisor_done)
        await asyncio.shield(self._first_bind)

    def _supervisor_done(self, task: asyncio.Task[None]) -> None:
        # A supervisor that dies of a bug must not leave start() waiting forever.
        if self._first_bind is None or self._first_bind.done():
            return
        exc = None if task.cancelled() else task.exception()
        self._first_bind.set_exception(exc or SmppUnavailable("client stopped before binding"))
        # start() may have been cancelled (wait_for) and no longer awaits this;
        # mark it retrieved so asyncio does not log it as lost.
        self._first_bind.exception()

    async def wait_bound(self, timeout: float) -> None:
        """Wait until bound; SmppTimeout after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._bound_event.wait()
        except TimeoutError:
            raise SmppTimeout(f"not bound within {timeout}s") from None

    @property
    def bound(self) -> bool:
        return self._session is not None and not self._session.closed

    async def close(self) -> None:
        """Stop taking submits, let outstanding ones finish (bounded), unbind, disconnect."""
        if self._closing:
            return
        self._closing = True
        session = self._session
        if session is not None and not session.closed:
            # Holding every window slot means no submit_sm is outstanding.
            try:
                async with asyncio.timeout(self._response_timeout):
                    for _ in range(self._window_size):
                        await self._window.acquire()
            except TimeoutError:
                _log.warning("closing with submit_sm still outstanding")
            await session.drain_handlers(self._response_timeout)
            try:
                await session.request(Unbind(), timeout=min(self._response_timeout, 5.0))
            except (ConnectionClosed, TimeoutError):
                pass
            await session.close("client closed")
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        self._bound_event.clear()
        self._session = None

    # --- connection supervisor ------------------------------------------------------

    def _backoff(self, attempt: int, low: float, high: float) -> float:
        # Full jitter (uniform between the floor and the exponential ceiling).
        ceiling = min(high, low * (2**attempt))
        return random.uniform(low, max(low, ceiling))

    async def _supervise(self) -> None:
        attempt = 0
        ever_bound = False
        while not self._closing:
            try:
                session = await self._connect_and_bind()
            except SmppBindRejected as exc:
                if not ever_bound and self._first_bind is not None and not self._first_bind.done():
                    self._first_bind.set_exception(exc)
                    return
                _log.warning("%s; retrying", exc)
                session = None
            except (OSError, ConnectionClosed, TimeoutError) as exc:
                _log.info("connect to %s:%d failed: %s", self._host, self._port, exc)
                session = None
            if session is None:
                await asyncio.sleep(self._backoff(attempt, self._reconnect_min, self._reconnect_max))
                attempt += 1
                continue

            attempt = 0
            ever_bound = True
            self._session = session
            self._bound_event.set()
            session.add_close_callback(self._bound_event.clear)
            if self._first_bind is not None and not self._first_bind.done():
                self._first_bind.set_result(None)
            keepalive = asyncio.create_task(self._keepalive(session))
            try:
                await session.wait_closed()
            finally:
                keepalive.cancel()
                await asyncio.gather(keepalive, return_exceptions=True)
                self._bound_event.clear()
                if self._session is session:
                    self._session = None
            if not self._closing:
                _log.warning("SMPP session lost (%s); reconnecting", session.close_reason)
                # Even a clean drop waits a little: an SMSC that accepts and
                # immediately closes must not be hammered.
                await asyncio.sleep(self._backoff(0, self._reconnect_min, self._reconnect_max))

    async def _connect_and_bind(self) -> SmppSession:
        async with asyncio.timeout(self._response_timeout):
            reader, writer = await asyncio.open_connection(self._host, self._port)
        stream = PduStream(reader, writer)
        session = SmppSession(stream, handler=self._on_request, name=f"esme->{stream.peername}", logger=_log)
        session.start()
        try:
            resp = await session.request(
                BindTransceiver(system_id=self._system_id, password=self._password, system_type=self._system_type),
                timeout=self._response_timeout,
            )
        except BaseException:
            session.abort("bind failed")
            raise
        if resp.command_status != c.ESME_ROK:
            await session.close("bind rejected")
            raise SmppBindRejected(resp.command_status)
        _log.info("bound to %s:%d as %s", self._host, self._port, self._system_id)
        return session

    async def _keepalive(self, session: SmppSession) -> None:
        while not session.closed:
            await asyncio.sleep(self._enquire_link_interval)
            try:
                await session.request(EnquireLink(), timeout=self._response_timeout)
            except TimeoutError:
                # A link that cannot answer enquire_link cannot answer submits either.
                session.abort("enquire_link timed out")
                return
            except ConnectionClosed:
                return

    # --- inbound requests --------------------------------------------------------------

    async def _on_request(self, session: SmppSession, pdu: Pdu) -> None:
        if not isinstance(pdu, DeliverSm):
            # bind/submit_sm/... from the SMSC make no sense on our side of the bind.
            if pdu._RESPONSE is not None:
                await session.send(pdu.response(c.ESME_RINVBNDSTS))
            else:
                await session.send(GenericNack(command_status=c.ESME_RINVCMDID, sequence_number=pdu.sequence_number))
            return
        inbound = from_deliver_sm(pdu)
        if self._on_deliver is not None:
            try:
                await self._on_deliver(inbound)
            except Exception:
                # ESME_RX_T_APPN is the spec's "temporary application error":
                # the SMSC keeps the PDU and redelivers it later.
                _log.exception("on_deliver failed; asking the SMSC to redeliver")
                await session.send(pdu.response(c.ESME_RX_T_APPN))
                return
        await session.send(pdu.response())

    # --- submitting -----------------------------------------------------------------------

    def _next_reference(self) -> int:
        self._reference = (self._reference + 1) % 256
        return self._reference

    async def submit(
        self, *, source: str, destination: str, text: str, registered_delivery: bool = True
    ) -> SubmitOutcome:
        """Send one message (split into parts if needed); return once every part is answered.

        Raises SmppUnavailable (not bound / connection lost / closing) and
        SmppTimeout; after either, some parts may already be with the SMSC, so
        a retry can duplicate them (at-least-once, like every SMS gateway).
        """
        encoding, parts = split_encoded(text)
        if not parts:
            raise ValueError("cannot submit an empty message")
        data_coding = c.DATA_CODING_DEFAULT if encoding is Encoding.GSM7 else c.DATA_CODING_UCS2
        esm_class = 0
        payloads = parts
        if len(parts) > 1:
            reference = self._next_reference()
            esm_class = c.ESM_CLASS_UDHI
            payloads = [concat_udh(reference, len(parts), index + 1) + part for index, part in enumerate(parts)]

        source_addr, source_ton, source_npi = address_fields(source)
        destination_addr, dest_ton, dest_npi = address_fields(destination)
        message_ids: list[str] = []
        for payload in payloads:
            pdu = SubmitSm(
                esm_class=esm_class,
                registered_delivery=c.REGISTERED_DELIVERY_RECEIPT if registered_delivery else 0,
                data_coding=data_coding,
                short_message=payload,
                source_addr=source_addr,
                source_addr_ton=source_ton,
                source_addr_npi=source_npi,
                destination_addr=destination_addr,
                dest_addr_ton=dest_ton,
                dest_addr_npi=dest_npi,
            )
            resp = await self._submit_part(pdu)
            if resp.command_status != c.ESME_ROK:
                # The rest of a multipart message is useless without this part.
                return SubmitOutcome(command_status=resp.command_status, message_ids=[], segments=len(parts))
            message_ids.append(resp.message_id if isinstance(resp, SubmitSmResp) else "")
        return SubmitOutcome(command_status=c.ESME_ROK, message_ids=message_ids, segments=len(parts))

    def _live_session(self) -> SmppSession:
        if self._closing:
            raise SmppUnavailable("client is closing")
        session = self._session
        if session is None or session.closed:
            raise SmppUnavailable("not bound")
        return session

    async def _wait_unpaused(self) -> None:
        loop = asyncio.get_running_loop()
        # Bounded: each pause is at most throttle_max, and a new pause can only
        # be set by a response, so this ends once the SMSC stops throttling.
        while (remaining := self._paused_until - loop.time()) > 0:
            await asyncio.sleep(remaining)

    def _pause(self) -> None:
        delay = self._backoff(self._throttle_streak, self._throttle_min, self._throttle_max)
        self._throttle_streak += 1
        until = asyncio.get_running_loop().time() + delay
        self._paused_until = max(self._paused_until, until)

    async def _submit_part(self, pdu: SubmitSm) -> Pdu:
        while True:
            await self._wait_unpaused()
            self._live_session()  # fail fast before queueing for a window slot
            async with self._window:
                session = self._live_session()
                try:
                    resp = await session.request(pdu, timeout=self._response_timeout)
                except ConnectionClosed as exc:
                    raise SmppUnavailable(f"connection lost: {exc}") from exc
                except TimeoutError:
                    raise SmppTimeout(f"no submit_sm_resp within {self._response_timeout}s") from None
            if resp.command_status in c.BACKPRESSURE_STATUSES:
                _log.info("SMSC says %s; pausing the bind", c.status_name(resp.command_status))
                self._pause()
                continue
            self._throttle_streak = 0
            return resp
