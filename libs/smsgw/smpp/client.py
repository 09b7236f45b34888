"""The ESME client the carrier-adapter sends through: one bind_transceiver (or a
transmitter/receiver pair), kept alive.

Policies that live here (and only here):

* Binds: ``bind_mode="transceiver"`` keeps one bind_transceiver for submits and
  deliver_sm; ``"pair"`` keeps a bind_transmitter for submits and a
  bind_receiver for receipts and MO, for SMSCs that want them apart.
* Reconnect: a supervisor task per bind connects and binds, waits for the
  session to die, and tries again with exponential backoff and full jitter, so
  a fleet of adapters does not reconnect to a recovering SMSC in lock step.
  The binds of a pair reconnect independently.
* Window: at most ``window`` submit_sm await their response at once; carriers
  contract a window per bind and disconnect binds that exceed it.
* Flow control (``smsgw.smpp.flow``): at most ``max_tps`` submit_sm per second,
  and ESME_RTHROTTLED / ESME_RMSGQFUL pause every submit on the bind (not just
  the one that got it) while the same part is sent again. The caller never
  sees these statuses: they say "later", not "no".
* Order: messages to one destination go one after the other, in the order
  ``submit()`` was called, so a throttled message is never overtaken by a
  later one to the same handset. Messages to different handsets share the
  window and may be accepted out of call order when the SMSC pushes back
  (``window=1`` keeps a global order, at the cost of throughput).
* Lanes (``smsgw.lanes``): a HIGH message waits for the window and the rate
  gate ahead of every NORMAL one, so an OTP is not queued behind a campaign.
* TLS: given ``tls`` (an ``ssl.SSLContext``, see ``smsgw.smpp.tls``) every bind
  connects over TLS. A failed handshake on a first bind (untrusted certificate,
  no TLS on that port) makes ``start()`` raise SmppTlsError, as a refused bind
  raises SmppBindRejected: a deployment error; later ones are retried.
* Receipts and MO: a deliver_sm is acknowledged only after ``on_deliver``
  returned, so a crash or an exception before the event is safely recorded
  leaves the SMSC to redeliver it (at-least-once; consumers dedupe).

Over 500 lines on purpose: the ESME session is one state machine (bind, window,
enquire_link, submit, deliver) whose parts share the session's state; the pure parts (PDUs,
receipts, encodings) are in their own modules.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from smsgw.lanes import Lane, LaneSemaphore
from smsgw.smpp import constants as c
from smsgw.smpp.flow import SubmitGate, full_jitter
from smsgw.smpp.framing import ConnectionClosed, PduStream
from smsgw.smpp.inbound import InboundDeliver, from_deliver_sm
from smsgw.smpp.outbound import LONG_MESSAGE_MODES, LongMessage, address_fields, build_submits
from smsgw.smpp.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    DeliverSm,
    EnquireLink,
    GenericNack,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Unbind,
)
from smsgw.smpp.session import SmppSession
from smsgw.smpp.tls import describe_handshake_failure

__all__ = [
    "BindMode",
    "InboundDeliver",
    "LongMessage",
    "SmppBindRejected",
    "SmppClient",
    "SmppClientStats",
    "SmppError",
    "SmppTimeout",
    "SmppTlsError",
    "SmppUnavailable",
    "SubmitOutcome",
    "address_fields",
]

_log = logging.getLogger(__name__)

BindMode = Literal["transceiver", "pair"]
BIND_MODES: tuple[str, ...] = get_args(BindMode)
_Role = Literal["transceiver", "transmitter", "receiver"]
_BIND_PDU: dict[str, type[BindTransceiver | BindTransmitter | BindReceiver]] = {
    "transceiver": BindTransceiver,
    "transmitter": BindTransmitter,
    "receiver": BindReceiver,
}


class SmppError(Exception):
    """Base of the client's errors.

    ``in_doubt``: a submit_sm went out and its answer did not come back, so the SMSC may
    have the message; resending it may deliver it twice.
    """

    def __init__(self, detail: str, *, in_doubt: bool = False):
        super().__init__(detail)
        self.in_doubt = in_doubt


class SmppUnavailable(SmppError):
    """Not bound (nothing sent), or the connection was lost before the answer (in doubt):
    retry the message later."""


class SmppTimeout(SmppError, TimeoutError):
    """No response within response_timeout. The SMSC may or may not have the message."""

    def __init__(self, detail: str, *, in_doubt: bool = True):
        super().__init__(detail, in_doubt=in_doubt)


_MAX_PARTIALS = 10_000


@dataclass
class _PartialSubmit:
    """What went out of a long message whose submit ended early, so a retry resumes it."""

    reference: int
    accepted_ids: list[str]


class SmppRefusedForNow(SmppError):
    """The SMSC refused a submit_sm for a fault of the moment on its side (TEMPORARY_STATUSES):
    nothing of that part was taken (not in doubt); the message is to be tried again later. The
    parts of a long message taken before it are kept, so the retry sends only the rest."""

    def __init__(self, command_status: int):
        super().__init__(f"submit refused for now: {c.status_name(command_status)}")
        self.command_status = command_status


class SmppBindRejected(SmppError):
    """The SMSC answered our bind with an error (bad credentials, already bound, ...)."""

    def __init__(self, command_status: int):
        super().__init__(f"bind rejected: {c.status_name(command_status)}")
        self.command_status = command_status


class SmppTlsError(SmppError):
    """The TLS handshake failed: an untrusted certificate, a host name it does not hold, no TLS
    on that port, or our client certificate refused. Like a refused bind, a configuration problem."""


@dataclass(frozen=True)
class SubmitOutcome:
    #: Status of the part that failed, or 0 (ESME_ROK) when every part was accepted.
    command_status: int
    #: One per submit_sm as the SMSC returned it (raw), in part order; empty on failure.
    #: One per part, except with long_message="payload": one for the whole message.
    message_ids: list[str]
    #: SMS parts the handset receives (``plan_segments``), whatever the long-message mode.
    segments: int

    @property
    def ok(self) -> bool:
        return self.command_status == c.ESME_ROK


@dataclass(frozen=True)
class SmppClientStats:
    """A snapshot of one client, for metrics. Counters only grow; they count submit_sm PDUs.

    ``submits_total`` counts every submit_sm put on the wire (parts and
    retries). Each one ends as accepted, as one of ``submit_failures_total``
    (refused with a status, generic_nack, no answer in time, connection
    lost) or as one of ``throttled_total`` (ESME_RTHROTTLED / ESME_RMSGQFUL,
    sent again).
    """

    #: Per session, keyed by bind role: {"transceiver": ...} or {"transmitter": ..., "receiver": ...}.
    bound: Mapping[str, bool]
    #: submit_sm sent and not answered yet (at most ``window_size``).
    window_in_use: int
    window_size: int
    submits_total: int
    submit_failures_total: int
    throttled_total: int
    #: Binds re-established after a lost session, over all sessions.
    reconnects_total: int
    #: deliver_sm read as delivery receipts (redeliveries included).
    receipts_total: int
    #: deliver_sm read as mobile-originated messages (redeliveries included).
    mo_total: int
    #: submit_sm per second, averaged over the last 10 seconds.
    current_tps: float


DeliverCallback = Callable[[InboundDeliver], Awaitable[None]]


class _Link:
    """One bind the client keeps up: its role, its live session, its supervisor."""

    def __init__(self, role: _Role):
        self.role = role
        self.session: SmppSession | None = None
        self.bound_event = asyncio.Event()
        self.supervisor: asyncio.Task[None] | None = None
        self.first_bind: asyncio.Future[None] | None = None
        self.reconnects = 0

    @property
    def bound(self) -> bool:
        return self.session is not None and not self.session.closed


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
        bind_mode: BindMode = "transceiver",
        max_tps: float | None = None,
        long_message: LongMessage = "udh",
        tls: ssl.SSLContext | None = None,
        tls_server_hostname: str | None = None,
    ):
        """``tls``: connect with TLS using this context (``smsgw.smpp.tls.client_context``);
        the certificate is checked against ``tls_server_hostname``, by default ``host``."""
        if window < 1:
            raise ValueError("window must be at least 1")
        if bind_mode not in BIND_MODES:
            raise ValueError(f"bind_mode must be one of {BIND_MODES}, not {bind_mode!r}")
        if long_message not in LONG_MESSAGE_MODES:
            raise ValueError(f"long_message must be one of {LONG_MESSAGE_MODES}, not {long_message!r}")
        self._host = host
        self._port = port
        self._system_id = system_id
        self._password = password
        self._system_type = system_type
        self._window = LaneSemaphore(window)
        self._window_size = window
        self._enquire_link_interval = enquire_link_interval
        self._response_timeout = response_timeout
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._on_deliver = on_deliver
        self._bind_mode = bind_mode
        self._long_message = long_message
        self._tls = tls
        self._tls_server_hostname = tls_server_hostname
        self._gate = SubmitGate(max_tps=max_tps, pause_min=throttle_min, pause_max=throttle_max)

        roles: list[_Role] = ["transceiver"] if bind_mode == "transceiver" else ["transmitter", "receiver"]
        self._links = [_Link(role) for role in roles]
        #: The bind submits go through.
        self._tx = self._links[0]
        self._started = False
        self._closing = False
        # Concatenation reference, one per multipart message ("udh" uses the low
        # 8 bits, "sar" all 16). Random start so two adapter instances (or a
        # restart) are unlikely to reuse a reference towards the same handset
        # within its reassembly timeout.
        self._reference = random.randrange(0x10000)
        self._partials: OrderedDict[str, _PartialSubmit] = OrderedDict()
        # destination -> [lock, holders]: one message at a time per handset, FIFO.
        self._in_order: dict[str, list] = {}

        self._in_flight = 0
        self._submits_total = 0
        self._submit_failures_total = 0
        self._throttled_total = 0
        self._receipts_total = 0
        self._mo_total = 0

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Connect and bind (both binds of a pair); return once bound. Reconnects in the background after drops.

        Raises SmppBindRejected if the very first bind of a session is refused
        (wrong credentials should fail a deployment, not spin quietly); call
        close() then. Connection errors are retried until bound; wrap in
        asyncio.wait_for to bound it (the background reconnecting then carries
        on until close()).
        """
        if self._started:
            raise RuntimeError("start() called twice")
        self._started = True
        loop = asyncio.get_running_loop()
        for link in self._links:
            link.first_bind = loop.create_future()
            # start() stops at the first failure; a second one must not be logged as never retrieved.
            link.first_bind.add_done_callback(lambda f: f.cancelled() or f.exception())
            link.supervisor = asyncio.create_task(self._supervise(link), name=f"smpp-{link.role}-{self._system_id}")
            link.supervisor.add_done_callback(functools.partial(self._supervisor_done, link))
        all_bound = asyncio.gather(*(link.first_bind for link in self._links if link.first_bind))
        # start() may be cancelled (wait_for) and no longer await this; mark it retrieved then.
        all_bound.add_done_callback(lambda f: f.cancelled() or f.exception())
        await asyncio.shield(all_bound)

    def _supervisor_done(self, link: _Link, task: asyncio.Task[None]) -> None:
        # A supervisor that dies of a bug must not leave start() waiting forever.
        if link.first_bind is None or link.first_bind.done():
            return
        exc = None if task.cancelled() else task.exception()
        link.first_bind.set_exception(exc or SmppUnavailable("client stopped before binding"))

    async def wait_bound(self, timeout: float) -> None:
        """Wait until bound (every session of a pair); SmppTimeout after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                for link in self._links:
                    await link.bound_event.wait()
        except TimeoutError:
            raise SmppTimeout(f"not bound within {timeout}s", in_doubt=False) from None

    @property
    def bound(self) -> bool:
        """Every session is bound (the transceiver, or both binds of a pair)."""
        return all(link.bound for link in self._links)

    @property
    def bind_mode(self) -> BindMode:
        return self._bind_mode

    @property
    def long_message(self) -> LongMessage:
        return self._long_message

    async def close(self) -> None:
        """Stop taking submits, let outstanding ones finish (bounded), unbind, disconnect."""
        if self._closing:
            return
        self._closing = True
        if self._tx.bound:
            # Holding every window slot means no submit_sm is outstanding.
            try:
                async with asyncio.timeout(self._response_timeout):
                    for _ in range(self._window_size):
                        await self._window.acquire()
            except TimeoutError:
                _log.warning("closing with submit_sm still outstanding")
        await asyncio.gather(*(self._unbind(link) for link in self._links))
        for link in self._links:
            if link.supervisor is not None:
                link.supervisor.cancel()
        await asyncio.gather(*(link.supervisor for link in self._links if link.supervisor), return_exceptions=True)
        for link in self._links:
            link.bound_event.clear()
            link.session = None

    async def _unbind(self, link: _Link) -> None:
        session = link.session
        if session is None or session.closed:
            return
        await session.drain_handlers(self._response_timeout)
        try:
            await session.request(Unbind(), timeout=min(self._response_timeout, 5.0))
        except (ConnectionClosed, TimeoutError):
            pass
        await session.close("client closed")

    # --- connection supervisor ------------------------------------------------------

    async def _supervise(self, link: _Link) -> None:
        attempt = 0
        ever_bound = False
        while not self._closing:
            try:
                session = await self._connect_and_bind(link.role)
            except (SmppBindRejected, SmppTlsError) as exc:
                if not ever_bound and link.first_bind is not None and not link.first_bind.done():
                    link.first_bind.set_exception(exc)
                    return
                _log.warning("%s (%s); retrying", exc, link.role)
                session = None
            except (OSError, ConnectionClosed, TimeoutError) as exc:
                _log.info("connect to %s:%d (%s) failed: %s", self._host, self._port, link.role, exc)
                session = None
            if session is None:
                await asyncio.sleep(full_jitter(attempt, self._reconnect_min, self._reconnect_max))
                attempt += 1
                continue

            attempt = 0
            if ever_bound:
                link.reconnects += 1
            ever_bound = True
            link.session = session
            link.bound_event.set()
            session.add_close_callback(link.bound_event.clear)
            if link.first_bind is not None and not link.first_bind.done():
                link.first_bind.set_result(None)
            keepalive = asyncio.create_task(self._keepalive(session))
            try:
                await session.wait_closed()
            finally:
                keepalive.cancel()
                await asyncio.gather(keepalive, return_exceptions=True)
                link.bound_event.clear()
                if link.session is session:
                    link.session = None
            if not self._closing:
                _log.warning("SMPP %s session lost (%s); reconnecting", link.role, session.close_reason)
                # Even a clean drop waits a little: an SMSC that accepts and
                # immediately closes must not be hammered.
                await asyncio.sleep(full_jitter(0, self._reconnect_min, self._reconnect_max))

    async def _connect_and_bind(self, role: _Role) -> SmppSession:
        try:
            async with asyncio.timeout(self._response_timeout):
                if self._tls is None:
                    reader, writer = await asyncio.open_connection(self._host, self._port)
                else:
                    reader, writer = await asyncio.open_connection(
                        self._host,
                        self._port,
                        ssl=self._tls,
                        server_hostname=self._tls_server_hostname or self._host,
                        ssl_handshake_timeout=self._response_timeout,
                    )
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError):
            raise  # the connection went mid-handshake: a network fault, retried like one
        except ssl.SSLError as exc:
            raise SmppTlsError(describe_handshake_failure(exc, self._host, self._port)) from exc
        stream = PduStream(reader, writer)
        session = SmppSession(stream, handler=self._on_request, name=f"esme-{role}->{stream.peername}", logger=_log)
        session.start()
        bind = _BIND_PDU[role](system_id=self._system_id, password=self._password, system_type=self._system_type)
        try:
            resp = await session.request(bind, timeout=self._response_timeout)
        except ConnectionClosed as exc:
            session.abort("bind failed")
            if self._tls is not None:
                # TLS 1.3 servers check a client certificate after our handshake has ended; asyncio
                # shows their refusal as a plain close, so say what it may be (and keep retrying).
                raise ConnectionClosed(
                    f"{exc} before the bind was answered; over TLS this is also how an SMSC "
                    "refuses a missing or untrusted client certificate (tls_cert_file)"
                ) from exc
            raise
        except BaseException:
            session.abort("bind failed")
            raise
        if resp.command_status != c.ESME_ROK:
            await session.close("bind rejected")
            raise SmppBindRejected(resp.command_status)
        _log.info("bound to %s:%d as %s (%s)", self._host, self._port, self._system_id, role)
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
            if pdu._RESPONSE is not None:  # noqa: SLF001 - the PDU class table of this package
                await session.send(pdu.response(c.ESME_RINVBNDSTS))
            else:
                await session.send(GenericNack(command_status=c.ESME_RINVCMDID, sequence_number=pdu.sequence_number))
            return
        inbound = from_deliver_sm(pdu)
        if inbound.is_receipt:
            self._receipts_total += 1
        else:
            self._mo_total += 1
        if self._on_deliver is not None:
            try:
                await self._on_deliver(inbound)
            except Exception:  # noqa: BLE001 - any failure of the handler is the SMSC's temporary error
                # ESME_RX_T_APPN is the spec's "temporary application error":
                # the SMSC keeps the PDU and redelivers it later.
                _log.exception("on_deliver failed; asking the SMSC to redeliver")
                await session.send(pdu.response(c.ESME_RX_T_APPN))
                return
        await session.send(pdu.response())

    # --- submitting -----------------------------------------------------------------------

    def _next_reference(self) -> int:
        self._reference = (self._reference + 1) % 0x10000
        return self._reference

    async def submit(
        self,
        *,
        source: str,
        destination: str,
        text: str,
        registered_delivery: bool = True,
        key: str | None = None,
        expires_at: datetime | None = None,
        lane: Lane = Lane.NORMAL,
        resume: tuple[int, Sequence[str]] | None = None,
        on_parts_accepted: Callable[[int, list[str]], Awaitable[None]] | None = None,
    ) -> SubmitOutcome:
        """Send one message (split into parts if needed); return once every part is answered.

        Raises SmppUnavailable (not bound / connection lost / closing) and
        SmppTimeout (``in_doubt`` says whether the SMSC may have the part that was
        out). With a ``key`` (the message id), a retry of a long message whose
        earlier submit ended early resumes it: the parts the SMSC accepted are not
        sent again, and the rest keep the same concatenation reference, so the
        handset still reassembles one message. Only the in-doubt part can then
        reach the SMSC twice (handsets drop a repeated segment of the same
        reference). Resume state is in memory (the last 10,000 such messages); ``resume``
        (reference, ids of the parts taken) gives it from elsewhere, e.g. what a process that
        died recorded, and ``on_parts_accepted(reference, ids)`` is awaited after each part of a
        long message but the last, before the next goes out, so that it can be recorded.

        ``lane``: a HIGH message goes before the NORMAL ones waiting for the window and the
        rate gate (not before earlier messages to the same destination: their order holds), and
        asks the SMSC to queue it ahead (priority_flag 1).
        """
        partial = self._partials.pop(key, None) if key is not None else None
        if partial is None and resume is not None:
            partial = _PartialSubmit(reference=resume[0], accepted_ids=list(resume[1]))
        reference = partial.reference if partial else self._next_reference()
        message = build_submits(
            source=source,
            destination=destination,
            text=text,
            registered_delivery=registered_delivery,
            long_message=self._long_message,
            reference=reference,
            expires_at=expires_at,
            priority_flag=1 if lane is Lane.HIGH else 0,
        )
        if partial is None or len(partial.accepted_ids) >= len(message.pdus):
            partial = _PartialSubmit(reference=reference, accepted_ids=[])
        self._live_session()  # fail fast instead of queueing behind other messages
        message_ids = partial.accepted_ids
        try:
            async with self._one_at_a_time(message.pdus[0].destination_addr):
                for pdu in message.pdus[len(message_ids) :]:
                    resp = await self._submit_part(pdu, lane)
                    if resp.command_status in c.TEMPORARY_STATUSES:
                        raise SmppRefusedForNow(resp.command_status)
                    if resp.command_status != c.ESME_ROK:
                        # The rest of a multipart message is useless without this part.
                        return SubmitOutcome(
                            command_status=resp.command_status, message_ids=[], segments=message.segments
                        )
                    message_ids.append(resp.message_id if isinstance(resp, SubmitSmResp) else "")
                    if on_parts_accepted is not None and len(message_ids) < len(message.pdus):
                        await on_parts_accepted(reference, list(message_ids))
        except SmppError:
            if key is not None and message_ids:
                self._partials[key] = partial
                while len(self._partials) > _MAX_PARTIALS:
                    self._partials.popitem(last=False)
            raise
        return SubmitOutcome(command_status=c.ESME_ROK, message_ids=message_ids, segments=message.segments)

    @asynccontextmanager
    async def _one_at_a_time(self, destination: str) -> AsyncIterator[None]:
        # asyncio.Lock wakes waiters first come, first served: call order is send order.
        entry = self._in_order.setdefault(destination, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._in_order[destination]

    def _live_session(self) -> SmppSession:
        if self._closing:
            raise SmppUnavailable("client is closing")
        session = self._tx.session
        if session is None or session.closed:
            raise SmppUnavailable("not bound")
        return session

    async def _submit_part(self, pdu: SubmitSm, lane: Lane = Lane.NORMAL) -> Pdu:
        self._live_session()  # fail fast before queueing for a window slot
        # The slot is kept through a backpressure pause, so the retry goes before
        # anything that queued for the window meanwhile (with window=1: call order).
        async with self._window.held(lane):
            while True:
                await self._gate.admit(lane)
                session = self._live_session()
                self._submits_total += 1
                self._in_flight += 1
                try:
                    resp = await session.request(pdu, timeout=self._response_timeout)
                except ConnectionClosed as exc:
                    self._submit_failures_total += 1
                    raise SmppUnavailable(f"connection lost with a submit_sm unanswered: {exc}", in_doubt=True) from exc
                except TimeoutError:
                    self._submit_failures_total += 1
                    raise SmppTimeout(f"no submit_sm_resp within {self._response_timeout}s") from None
                finally:
                    self._in_flight -= 1
                if resp.command_status in c.BACKPRESSURE_STATUSES:
                    self._throttled_total += 1
                    delay = self._gate.pause()
                    _log.info("SMSC says %s; pausing the bind for %.2fs", c.status_name(resp.command_status), delay)
                    continue
                self._gate.accepted()
                if resp.command_status != c.ESME_ROK:
                    self._submit_failures_total += 1
                return resp

    def holds_part_of(self, key: str) -> bool:
        """Parts of the message `key` were accepted by the SMSC and the rest wait to be resumed."""
        partial = self._partials.get(key)
        return partial is not None and bool(partial.accepted_ids)

    def share_rate(self, share: float) -> None:
        """This replica's share of max_tps (the carrier's limit holds for every replica together)."""
        self._gate.share(share)

    # --- metrics -----------------------------------------------------------------------------

    def stats(self) -> SmppClientStats:
        """A snapshot of the client's state and counters (cheap; call it from the event loop)."""
        return SmppClientStats(
            bound={link.role: link.bound for link in self._links},
            window_in_use=self._in_flight,
            window_size=self._window_size,
            submits_total=self._submits_total,
            submit_failures_total=self._submit_failures_total,
            throttled_total=self._throttled_total,
            reconnects_total=sum(link.reconnects for link in self._links),
            receipts_total=self._receipts_total,
            mo_total=self._mo_total,
            current_tps=self._gate.current_tps(),
        )
