"""A development/test SMSC: accepts binds and submit_sm, sends receipts and MO.

It speaks real SMPP 3.4 over TCP through the same codec and session layer as
our client, so anything that talks SMPP (our SmppClient, smpplib, a carrier
tool) can be pointed at it. Behaviour that real carriers inflict on us is
switchable: hex message ids with decimal ids in the receipt text, rejected
destinations, throttling, dropped connections, receipts as text or TLVs.

Like a real SMSC it keeps a receipt or MO that could not be delivered (no
receiver bound, connection lost, negative or missing deliver_sm_resp) and
retries it, a bounded number of times, on whatever receiver is bound then.

Run standalone: ``python -m smsgw_dev.simulators.smsc --port 2775``.

Over 500 lines on purpose: a stand-alone SMSC simulator (sessions, receipts, its control
API and CLI), read as a whole by whoever changes it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from smsgw import eventloop
from smsgw.domain.encoding import Encoding, concat_udh, parse_concat_udh, split_encoded
from smsgw.smpp import constants as c
from smsgw.smpp.framing import ConnectionClosed, PduStream
from smsgw.smpp.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    DeliverSm,
    GenericNack,
    Pdu,
    SubmitSm,
    tlv_cstr,
    tlv_int,
    tlv_u8,
    tlv_u16,
)
from smsgw.smpp.receipts import (
    DELIVRD,
    ENROUTE,
    MESSAGE_STATE_DELIVERED,
    MESSAGE_STATE_ENROUTE,
    MESSAGE_STATE_UNDELIVERABLE,
    UNDELIV,
    format_receipt_text,
)
from smsgw.smpp.session import SmppSession
from smsgw.smpp.tls import server_context

__all__ = ["MO_LONG_FORMS", "SmscSimulator", "SubmittedMessage", "main", "mo_pdus"]

_log = logging.getLogger(__name__)

#: Hex ids start here so every hex id contains a letter: auto-detection in
#: normalize_message_id is then unambiguous (see docs/smpp.md, message ids).
_HEX_ID_BASE = 0xA0000000
#: With hex_digits_only, ids start here and skip every value with a letter.
_HEX_DIGITS_ONLY_BASE = 0x10000000


@dataclass(frozen=True)
class SubmittedMessage:
    """One accepted submit_sm, as received."""

    destination: str
    source: str
    data_coding: int
    esm_class: int
    #: short_message (or message_payload) octets, UDH included.
    short_message: bytes
    registered_delivery: int
    message_id: str
    system_id: str
    tlvs: dict[int, bytes] = field(default_factory=dict)
    #: How the submit said what it is: "single" (a whole SMS), "udh" (concatenation
    #: UDH), "sar" (sar_* TLVs) or "payload" (the whole text in message_payload).
    long_message: str = "single"
    #: (reference, total, sequence) of a "udh" or "sar" part; None otherwise.
    concat: tuple[int, int, int] | None = None
    #: time.monotonic() when the submit_sm arrived (rate checks).
    received_at: float = 0.0
    #: time.time() when it arrived: what a send_at (wall-clock time) is checked against.
    received_wall: float = 0.0
    #: As the ESME wrote it (SMPP absolute or relative time; "" for the SMSC's default).
    validity_period: str = ""
    #: 0 non-priority; 1-3 the ESME asked for the message to be queued ahead.
    priority_flag: int = 0

    @property
    def user_data(self) -> bytes:
        """The text octets: short_message (or message_payload) without the UDH."""
        if self.esm_class & c.ESM_CLASS_UDHI and self.short_message:
            return self.short_message[1 + self.short_message[0] :]
        return self.short_message


def _long_message_form(pdu: SubmitSm) -> tuple[str, tuple[int, int, int] | None]:
    """("single" | "udh" | "sar" | "payload", concatenation info) of a submit_sm."""
    if pdu.esm_class & c.ESM_CLASS_UDHI:
        parsed = parse_concat_udh(pdu.payload)
        if parsed is not None:
            reference, total, sequence, _rest = parsed
            return "udh", (reference, total, sequence)
    sar = [pdu.tlvs.get(tag) for tag in (c.TAG_SAR_MSG_REF_NUM, c.TAG_SAR_TOTAL_SEGMENTS, c.TAG_SAR_SEGMENT_SEQNUM)]
    if all(value is not None for value in sar):
        reference, total, sequence = (tlv_int(value) for value in sar if value is not None)
        return "sar", (reference, total, sequence)
    if not pdu.short_message and c.TAG_MESSAGE_PAYLOAD in pdu.tlvs:
        return "payload", None
    return "single", None


def _invalid_long_message(pdu: SubmitSm) -> bool:
    """Checks a strict SMSC makes: one form at a time, and SAR fields in range (§5.3.2.22-24)."""
    sar_tags = (c.TAG_SAR_MSG_REF_NUM, c.TAG_SAR_TOTAL_SEGMENTS, c.TAG_SAR_SEGMENT_SEQNUM)
    present = [tag in pdu.tlvs for tag in sar_tags]
    if any(present) and not all(present):
        return True
    if all(present):
        total = tlv_int(pdu.tlvs[c.TAG_SAR_TOTAL_SEGMENTS])
        sequence = tlv_int(pdu.tlvs[c.TAG_SAR_SEGMENT_SEQNUM])
        if not 1 <= sequence <= total <= 255 or pdu.esm_class & c.ESM_CLASS_UDHI:
            return True
    # message_payload and short_message are mutually exclusive (§5.3.2.32).
    return bool(pdu.short_message) and c.TAG_MESSAGE_PAYLOAD in pdu.tlvs


@dataclass(eq=False)
class _Esme:
    """One TCP connection from an ESME and what it has bound as."""

    session: SmppSession | None = None
    system_id: str | None = None
    can_transmit: bool = False
    can_receive: bool = False

    @property
    def bound(self) -> bool:
        return self.system_id is not None

    @property
    def kind(self) -> str | None:
        """'transceiver', 'transmitter' or 'receiver' once bound."""
        if not self.bound:
            return None
        if self.can_transmit and self.can_receive:
            return "transceiver"
        return "transmitter" if self.can_transmit else "receiver"


class SmscSimulator:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        system_id: str = "smsgw",
        password: str = "secret",
        dlr_delay: float = 0.2,
        hex_ids: bool = False,
        fail_pattern: str | None = None,
        flaky_pattern: str | None = None,
        blocked_text_pattern: str | None = None,
        throttle_every: int = 0,
        send_dlrs: bool = True,
        dlr_format: str = "text",
        response_timeout: float = 5.0,
        redeliver_interval: float = 0.2,
        # 5 minutes: an SMSC keeps a receipt until a bind of its account takes it (real ones for
        # hours or days); 10 s here once lost the receipts of a 10 s link cut (make chaos).
        redeliver_attempts: int = 1500,
        no_dlr_pattern: str | None = None,
        undeliverable_pattern: str | None = None,
        extra_accounts: dict[str, str] | None = None,
        hex_digits_only: bool = False,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_port: int = 0,
        tls_client_ca_file: str | None = None,
        first_id: int = 1,
    ):
        if dlr_format not in ("text", "tlv", "both"):
            raise ValueError("dlr_format must be 'text', 'tlv' or 'both'")
        self._host = host
        self._requested_port = port
        # A second listener speaking SMPP over TLS (as SMSCs do on 3550), when given a certificate;
        # with tls_client_ca_file it also requires a client certificate signed by that CA.
        self._tls_context = (
            server_context(cert_file=tls_cert_file, key_file=tls_key_file, client_ca_file=tls_client_ca_file)
            if tls_cert_file
            else None
        )
        self._requested_tls_port = tls_port
        self._tls_server: asyncio.Server | None = None
        self._tls_port: int | None = None
        self._system_id = system_id
        self._password = password
        # Like a real SMSC, several ESME accounts; receipts go back to binds of the submitting account.
        self._accounts = {system_id: password, **(extra_accounts or {})}
        self._dlr_delay = dlr_delay
        self._hex_ids = hex_ids
        # Hex ids spelled with the digits 0-9 only ("10000001" = 268435457): the
        # carriers that auto-detection reads as decimal (docs/smpp.md, message ids).
        self._hex_digits_only = hex_digits_only
        self._fail_pattern = re.compile(fail_pattern) if fail_pattern else None
        # Destinations whose messages are answered ESME_RSYSERR (a temporary fault) at their first
        # submit, and taken at the next: what a carrier's retries are for.
        self._flaky_pattern = re.compile(flaky_pattern) if flaky_pattern else None
        self._flaky_seen: set[tuple[str, bytes]] = set()
        # Texts refused ESME_RSUBMITFAIL, as a carrier's content filter refuses: for good.
        self._blocked_text = re.compile(blocked_text_pattern.encode("latin-1")) if blocked_text_pattern else None
        # Destinations whose receipts never come, and those whose receipts say UNDELIV.
        self._no_dlr_pattern = re.compile(no_dlr_pattern) if no_dlr_pattern else None
        self._undeliverable_pattern = re.compile(undeliverable_pattern) if undeliverable_pattern else None
        self._throttle_every = throttle_every
        self._send_dlrs = send_dlrs
        self._dlr_format = dlr_format
        self._response_timeout = response_timeout
        self._redeliver_interval = redeliver_interval
        self._redeliver_attempts = redeliver_attempts

        self._server: asyncio.Server | None = None
        self._port = 0
        self._esmes: set[_Esme] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # A real SMSC never hands out an id twice; a simulator restarted over a kept log must not
        # either (a receipt would match the old message): it can be told where to start.
        self._next_id = first_id - 1
        self._submit_count = 0
        #: Armed by drop_on_submit: (submits still to answer first, record the dropping one?).
        self._drop_armed: tuple[int, bool] | None = None
        #: Armed by mute_on_submit: submits still to answer before the one taken and never answered.
        self._mute_armed: int | None = None
        #: mute_every_for: every N-th submit taken and never answered, until the monotonic time.
        self._mute_every = 0
        self._mute_until = 0.0
        #: Submits taken and never answered (mute_on_submit, mute_every_for).
        self.muted = 0
        self._mo_reference = 0
        #: Until when (monotonic) receipts come duplicated, reordered, early and among unknown ones.
        self._disorder_until = 0.0
        self._receipts_made = 0
        #: What disorder_receipts_for sent: receipts before their submit_sm_resp, copies of final
        #: receipts, stale ENROUTE receipts after a final one, receipts for ids never issued.
        self.disorder_counts = {"early": 0, "copies": 0, "stale": 0, "unknown_ids": 0}
        #: Malformed deliver_sm sent (send_malformed) and answered, ESME_ROK or not.
        self.malformed_sent = 0

        #: Every accepted submit_sm, in arrival order.
        self.submitted: list[SubmittedMessage] = []
        #: How many submit_sm were answered ESME_RTHROTTLED.
        self.throttled = 0
        #: deliver_sm (receipts and MO) the ESME acknowledged with ESME_ROK.
        self.delivered: list[DeliverSm] = []
        #: deliver_sm given up on after redeliver_attempts.
        self.undeliverable: list[DeliverSm] = []

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, self._host, self._requested_port)
        self._port = self._server.sockets[0].getsockname()[1]
        if self._tls_context is not None:
            self._tls_server = await asyncio.start_server(
                self._on_connect, self._host, self._requested_tls_port, ssl=self._tls_context
            )
            self._tls_port = self._tls_server.sockets[0].getsockname()[1]
            _log.info("SMSC simulator listening for SMPP over TLS on %s:%d", self._host, self._tls_port)
        _log.info("SMSC simulator listening on %s:%d", self._host, self._port)

    @property
    def port(self) -> int:
        return self._port

    @property
    def tls_port(self) -> int | None:
        """The TLS listener's port once started; None without a TLS certificate."""
        return self._tls_port

    @property
    def host(self) -> str:
        return self._host

    @property
    def bound_count(self) -> int:
        return sum(1 for esme in self._esmes if esme.bound)

    @property
    def binds(self) -> list[tuple[str, str]]:
        """(system_id, 'transceiver' | 'transmitter' | 'receiver') of every live bind, sorted."""
        return sorted(
            (esme.system_id or "", esme.kind or "")
            for esme in self._esmes
            if esme.bound and esme.session is not None and not esme.session.closed
        )

    async def stop(self) -> None:
        servers = [server for server in (self._server, self._tls_server) if server is not None]
        for server in servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.drop_connections()
        for server in servers:
            await server.wait_closed()
        self._server = self._tls_server = None

    def drop_on_submit(self, after: int = 0, *, accept: bool = False) -> None:
        """Cut the connection when a submit_sm arrives, once: the one after ``after`` more are
        answered. ``accept``: keep that message (as an SMSC that took it and lost the answer on
        the way back, the in-doubt case) or not (it never arrived)."""
        self._drop_armed = (after, accept)

    def throttle_for(self, every: int, seconds: float) -> None:
        """Answer every `every`-th submit_sm ESME_RTHROTTLED for `seconds` (1: all of them), then
        as configured again: a carrier's throttling storm."""
        configured = self._throttle_every
        self._throttle_every = every

        async def restore() -> None:
            await asyncio.sleep(seconds)
            self._throttle_every = configured

        self._spawn(restore())

    def disorder_receipts_for(self, seconds: float) -> None:
        """For `seconds`, receipts come as a careless SMSC sends them: each final receipt twice
        (the copy 0.5 s later), followed by a stale ENROUTE one for the same id (an intermediate
        state that arrives after the final one), every 4th before the submit_sm_resp carrying its
        id (early), and every 10th beside a receipt for an id this SMSC never issued (unknown)."""
        self._disorder_until = time.monotonic() + seconds

    def _disordered(self) -> bool:
        return time.monotonic() < self._disorder_until

    def mute_every_for(self, every: int, seconds: float) -> None:
        """For `seconds`, take every `every`-th submit_sm and never answer it (its response lost on
        the way back, again and again): each is in doubt at the ESME, which resubmits or fails it."""
        self._mute_every = every
        self._mute_until = time.monotonic() + seconds

    def _muting(self) -> bool:
        return time.monotonic() < self._mute_until

    def mute_on_submit(self, after: int = 0) -> None:
        """Take a submit_sm and never answer it, once: the one after ``after`` more are answered.
        The connection stays up: the ESME waits for an answer the SMSC will not send (an SMSC that
        took the message, seen by an ESME that dies before its response timeout)."""
        self._mute_armed = after

    async def drop_connections(self, kind: str | None = None) -> None:
        """Cut every ESME connection (or only the binds of ``kind``) without unbind, as a network failure would."""
        esmes = [esme for esme in self._esmes if kind is None or esme.kind == kind]
        for esme in esmes:
            if esme.session is not None:
                esme.session.abort("dropped by simulator")
        # Let the readers notice, so bound_count is 0 when this returns.
        for esme in esmes:
            if esme.session is not None:
                await esme.session.wait_closed()
            self._esmes.discard(esme)

    # --- connections ----------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = PduStream(reader, writer)
        esme = _Esme()

        async def handle(session: SmppSession, pdu: Pdu) -> None:
            await self._on_request(esme, session, pdu)

        session = SmppSession(stream, handler=handle, name=f"smsc<-{stream.peername}", logger=_log)
        esme.session = session
        self._esmes.add(esme)
        session.start()
        try:
            await session.wait_closed()
        finally:
            self._esmes.discard(esme)

    async def _on_request(self, esme: _Esme, session: SmppSession, pdu: Pdu) -> None:
        if isinstance(pdu, (BindTransceiver, BindTransmitter, BindReceiver)):
            await self._on_bind(esme, session, pdu)
        elif isinstance(pdu, SubmitSm):
            await self._on_submit(esme, session, pdu)
        elif pdu._RESPONSE is not None:  # noqa: SLF001 - the PDU class table of our own smpp package
            # deliver_sm from an ESME, etc.: valid PDU, wrong direction.
            await session.send(pdu.response(c.ESME_RINVBNDSTS))
        else:
            await session.send(GenericNack(command_status=c.ESME_RINVCMDID, sequence_number=pdu.sequence_number))

    async def _on_bind(
        self, esme: _Esme, session: SmppSession, pdu: BindTransceiver | BindTransmitter | BindReceiver
    ) -> None:
        if esme.bound:
            await session.send(pdu.response(c.ESME_RALYBND))
            return
        if pdu.system_id not in self._accounts:
            await session.send(pdu.response(c.ESME_RINVSYSID))
            return
        if pdu.password != self._accounts[pdu.system_id]:
            await session.send(pdu.response(c.ESME_RINVPASWD))
            return
        esme.system_id = pdu.system_id
        esme.can_transmit = not isinstance(pdu, BindReceiver)
        esme.can_receive = not isinstance(pdu, BindTransmitter)
        await session.send(pdu.response(system_id="SMSCSIM", tlvs={c.TAG_SC_INTERFACE_VERSION: tlv_u8(c.SMPP_VERSION)}))

    def _allocate_id(self) -> tuple[str, str]:
        """(id for submit_sm_resp and the TLV, id for the receipt text)."""
        self._next_id += 1
        if self._hex_ids and self._hex_digits_only:
            value = _HEX_DIGITS_ONLY_BASE + self._next_id
            while not f"{value:X}".isdigit():
                self._next_id += 1
                value = _HEX_DIGITS_ONLY_BASE + self._next_id
            return f"{value:08X}", f"{value:010d}"
        if self._hex_ids:
            value = _HEX_ID_BASE + self._next_id
            # Real SMSCs with hex ids often print the receipt text id in
            # decimal, zero-padded to the 10 characters Appendix B shows.
            return f"{value:08X}", f"{value:010d}"
        return str(self._next_id), str(self._next_id)

    async def _on_submit(self, esme: _Esme, session: SmppSession, pdu: SubmitSm) -> None:
        if not esme.can_transmit:
            await session.send(pdu.response(c.ESME_RINVBNDSTS))
            return
        self._submit_count += 1
        if self._throttle_every and self._submit_count % self._throttle_every == 0:
            self.throttled += 1
            await session.send(pdu.response(c.ESME_RTHROTTLED))
            return
        if self._fail_pattern is not None and self._fail_pattern.search(pdu.destination_addr):
            await session.send(pdu.response(c.ESME_RINVDSTADR))
            return
        text = pdu.short_message or pdu.tlvs.get(c.TAG_MESSAGE_PAYLOAD, b"")
        if self._blocked_text is not None and self._blocked_text.search(text):
            await session.send(pdu.response(c.ESME_RSUBMITFAIL))
            return
        if self._flaky_pattern is not None and self._flaky_pattern.search(pdu.destination_addr):
            seen = (pdu.destination_addr, bytes(text))
            if seen not in self._flaky_seen:
                self._flaky_seen.add(seen)
                await session.send(pdu.response(c.ESME_RSYSERR))
                return
        if _invalid_long_message(pdu):
            await session.send(pdu.response(c.ESME_RINVOPTPARAMVAL))
            return
        drop_now = False
        if self._drop_armed is not None:
            after, accept = self._drop_armed
            if after > 0:
                self._drop_armed = (after - 1, accept)
            else:
                self._drop_armed = None
                if not accept:
                    session.abort("dropped by simulator on submit_sm")
                    return
                drop_now = True
        mute_now = self._mute_every > 0 and self._submit_count % self._mute_every == 0 and self._muting()
        if self._mute_armed is not None:
            if self._mute_armed > 0:
                self._mute_armed -= 1
            else:
                self._mute_armed = None
                mute_now = True
        long_message, concat = _long_message_form(pdu)
        message_id, text_id = self._allocate_id()
        submitted = SubmittedMessage(
            destination=pdu.destination_addr,
            source=pdu.source_addr,
            data_coding=pdu.data_coding,
            esm_class=pdu.esm_class,
            short_message=pdu.payload,
            registered_delivery=pdu.registered_delivery,
            message_id=message_id,
            system_id=esme.system_id or "",
            tlvs=dict(pdu.tlvs),
            long_message=long_message,
            concat=concat,
            received_at=time.monotonic(),
            received_wall=time.time(),
            validity_period=pdu.validity_period,
            priority_flag=pdu.priority_flag,
        )
        # Record before answering: a test that saw the resp must see the message.
        self.submitted.append(submitted)
        if drop_now:
            session.abort("dropped by simulator after taking a submit_sm")
            return
        if mute_now:
            self.muted += 1
            return  # taken, never answered (mute_on_submit, mute_every_for)
        wants_receipt = pdu.registered_delivery & c.REGISTERED_DELIVERY_RECEIPT_MASK == c.REGISTERED_DELIVERY_RECEIPT
        never = self._no_dlr_pattern is not None and self._no_dlr_pattern.search(pdu.destination_addr)
        receipt = self._send_dlrs and wants_receipt and not never
        if receipt and self._disordered():
            self._receipts_made += 1
            number = self._receipts_made
            if number % 4 == 0:
                # Early: the receipt is taken by the ESME before it learns the id from the resp
                # (waited for at most 1 s, so that a missing receiver does not hold the answer).
                self.disorder_counts["early"] += 1
                first = asyncio.Event()
                self._spawn(self._disordered_receipts(submitted, text_id, time.time(), number, delay=0.0, first=first))
                try:
                    await asyncio.wait_for(first.wait(), timeout=1.0)
                except TimeoutError:
                    pass
                await session.send(pdu.response(message_id=message_id))
                return
            await session.send(pdu.response(message_id=message_id))
            self._spawn(self._disordered_receipts(submitted, text_id, time.time(), number, delay=self._dlr_delay))
            return
        await session.send(pdu.response(message_id=message_id))
        if receipt:
            self._spawn(self._receipt_later(submitted, text_id, time.time()))

    # --- outbound deliver_sm (receipts, MO) ------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _receipt_pdu(
        self, submitted: SubmittedMessage, text_id: str, submitted_at: float, *, stale: bool = False
    ) -> DeliverSm:
        """The message's final receipt; `stale`: an ENROUTE one, as an intermediate state would be."""
        undeliverable = self._undeliverable_pattern is not None and self._undeliverable_pattern.search(
            submitted.destination
        )
        stat, state = (UNDELIV, MESSAGE_STATE_UNDELIVERABLE) if undeliverable else (DELIVRD, MESSAGE_STATE_DELIVERED)
        if stale:
            stat, state = ENROUTE, MESSAGE_STATE_ENROUTE
        tlvs: dict[int, bytes] = {}
        short_message = b""
        if self._dlr_format in ("tlv", "both"):
            tlvs[c.TAG_RECEIPTED_MESSAGE_ID] = tlv_cstr(submitted.message_id)
            tlvs[c.TAG_MESSAGE_STATE] = tlv_u8(state)
            tlvs[c.TAG_NETWORK_ERROR_CODE] = bytes((0x03, 0x00, 0x00))  # GSM, no error
        if self._dlr_format in ("text", "both"):
            stamp = "%y%m%d%H%M"
            text = format_receipt_text(
                message_id=text_id,
                stat=stat,
                submit_date=time.strftime(stamp, time.gmtime(submitted_at)),
                done_date=time.strftime(stamp, time.gmtime()),
                text=_receipt_excerpt(submitted),
            )
            short_message = text.encode("ascii", errors="replace")
        return DeliverSm(
            source_addr=submitted.destination,
            destination_addr=submitted.source,
            esm_class=c.ESM_CLASS_SMSC_DELIVERY_RECEIPT,
            data_coding=c.DATA_CODING_DEFAULT,
            short_message=short_message,
            tlvs=tlvs,
        )

    async def _receipt_later(self, submitted: SubmittedMessage, text_id: str, submitted_at: float) -> None:
        await asyncio.sleep(self._dlr_delay)
        await self._deliver(self._receipt_pdu(submitted, text_id, submitted_at), submitted.system_id or None)

    async def _disordered_receipts(
        self,
        submitted: SubmittedMessage,
        text_id: str,
        submitted_at: float,
        number: int,
        *,
        delay: float,
        first: asyncio.Event | None = None,
    ) -> None:
        """disorder_receipts_for's receipts of one message (the `number`-th): final, its copy, a
        stale ENROUTE after them, and every 10th time one for an unknown id. `first` is set once
        the final receipt was taken."""
        await asyncio.sleep(delay)
        system_id = submitted.system_id or None
        await self._deliver(self._receipt_pdu(submitted, text_id, submitted_at), system_id)
        if first is not None:
            first.set()
        if number % 10 == 0:
            self.disorder_counts["unknown_ids"] += 1
            await self.send_receipt(message_id=f"99{number:08d}", destination=submitted.source)
        await asyncio.sleep(0.5)
        await self._deliver(self._receipt_pdu(submitted, text_id, submitted_at), system_id)
        self.disorder_counts["copies"] += 1
        await self._deliver(self._receipt_pdu(submitted, text_id, submitted_at, stale=True), system_id)
        self.disorder_counts["stale"] += 1

    def malformed_deliver_sms(self, destination: str) -> list[DeliverSm]:
        """Well-framed deliver_sm whose content is broken, one of each way a careless SMSC breaks it."""
        receipt = c.ESM_CLASS_SMSC_DELIVERY_RECEIPT
        return [
            # A receipt whose text is not a receipt (random bytes, no id).
            DeliverSm(esm_class=receipt, destination_addr=destination, short_message=os.urandom(120)),
            # A receipt whose TLVs are cut short: an id that is not a C string, an empty state.
            DeliverSm(
                esm_class=receipt,
                destination_addr=destination,
                tlvs={c.TAG_RECEIPTED_MESSAGE_ID: b"\xff" * 70, c.TAG_MESSAGE_STATE: b""},
            ),
            # UCS-2 text of an odd number of bytes.
            DeliverSm(
                source_addr="+14155550199",
                destination_addr=destination,
                data_coding=c.DATA_CODING_UCS2,
                short_message=b"\x00h\x00i\x00",
            ),
            # A user data header whose length runs past the message.
            DeliverSm(
                source_addr="+14155550199",
                destination_addr=destination,
                esm_class=c.ESM_CLASS_UDHI,
                short_message=b"\xf0\x00\x03\x01",
            ),
            # No sender, 254 bytes of 0xff in the default alphabet.
            DeliverSm(source_addr="", destination_addr=destination, short_message=b"\xff" * 254),
        ]

    async def send_malformed(self, count: int) -> int:
        """Sends `count` malformed deliver_sm (in turn, of malformed_deliver_sms's kinds) to a bound
        receiver, once each (never redelivered); returns how many the ESME answered ESME_ROK."""
        esme = self._receiver(self._system_id)
        if esme is None or esme.session is None:
            return 0
        kinds = self.malformed_deliver_sms("+14155550000")
        taken = 0
        for n in range(count):
            try:
                resp = await esme.session.request(kinds[n % len(kinds)], timeout=self._response_timeout)
            except (ConnectionClosed, TimeoutError):
                continue
            self.malformed_sent += 1
            taken += resp.command_status == c.ESME_ROK
        return taken

    async def send_receipt(
        self, *, message_id: str, stat: str = DELIVRD, source: str = "", destination: str = ""
    ) -> None:
        """A receipt for any id (e.g. one this SMSC never issued: an orphan), delivered in the background."""
        stamp = time.strftime("%y%m%d%H%M", time.gmtime())
        text = format_receipt_text(message_id=message_id, stat=stat, submit_date=stamp, done_date=stamp, text="")
        self._spawn(
            self._deliver(
                DeliverSm(
                    source_addr=source,
                    destination_addr=destination,
                    esm_class=c.ESM_CLASS_SMSC_DELIVERY_RECEIPT,
                    data_coding=c.DATA_CODING_DEFAULT,
                    short_message=text.encode("ascii", errors="replace"),
                ),
                self._system_id,
            )
        )

    async def send_mo(
        self,
        *,
        source: str,
        destination: str,
        text: str,
        long_message: str = "udh",
        parts: Sequence[int] | None = None,
        reference: int | None = None,
    ) -> int:
        """Queue a mobile-originated message to the bound receivers; return how many parts it has.

        A text longer than one SMS travels as ``long_message`` says (``MO_LONG_FORMS``):
        "udh" (concatenation UDH, 8-bit reference), "udh16" (16-bit reference, IE 0x08),
        "sar" (sar_* TLVs, no UDH) or "payload" (one deliver_sm, the whole text in
        message_payload: 1 part). ``parts`` lists the part numbers to send, in that order
        (1-based): a number left out never arrives, a repeated one arrives twice (as an
        SMSC redelivering it); default: every part, in order. ``reference``: the
        concatenation reference (default: the next of the simulator's), so a message can be
        sent in several calls. Raises ValueError for a form, part number or reference that
        does not exist.

        Returns once queued; delivery (and redelivery) happens in the background, one
        deliver_sm after another.
        """
        if reference is None:
            self._mo_reference = (self._mo_reference + 1) % 0x10000
            reference = self._mo_reference
        elif (
            isinstance(reference, bool)
            or not isinstance(reference, int)
            or not 0 <= reference <= (0xFF if long_message == "udh" else 0xFFFF)
        ):
            raise ValueError(f"reference: {reference!r}; 0..255 with udh, 0..65535 with udh16 and sar")
        pdus = mo_pdus(
            source=source, destination=destination, text=text, long_message=long_message, reference=reference
        )
        total = len(pdus)
        order = list(range(1, total + 1)) if parts is None else list(parts)
        wrong = [n for n in order if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= total]
        if wrong or not order:
            raise ValueError(f"parts: {wrong or 'none'} given; the message has parts 1..{total}")
        pdus = [pdus[n - 1] for n in order]

        async def deliver_in_order() -> None:
            for pdu in pdus:
                await self._deliver(pdu, self._system_id)  # MO goes to the primary account's binds

        self._spawn(deliver_in_order())
        return total

    def _receiver(self, system_id: str | None = None) -> _Esme | None:
        for esme in self._esmes:
            if (
                esme.bound
                and esme.can_receive
                and esme.session is not None
                and not esme.session.closed
                and (system_id is None or esme.system_id == system_id)
            ):
                return esme
        return None

    async def _deliver(self, pdu: DeliverSm, system_id: str | None = None) -> None:
        """Deliver to a bound receiver (of `system_id` if given); on none, error or timeout, retry (bounded)."""
        for _attempt in range(self._redeliver_attempts):
            esme = self._receiver(system_id)
            if esme is not None and esme.session is not None:
                try:
                    resp = await esme.session.request(pdu, timeout=self._response_timeout)
                except (ConnectionClosed, TimeoutError):
                    resp = None
                if resp is not None and resp.command_status == c.ESME_ROK:
                    self.delivered.append(pdu)
                    return
            await asyncio.sleep(self._redeliver_interval)
        _log.warning("giving up on deliver_sm to %s after %d attempts", pdu.destination_addr, self._redeliver_attempts)
        self.undeliverable.append(pdu)


#: How send_mo sends a text longer than one SMS.
MO_LONG_FORMS = ("udh", "udh16", "sar", "payload")


def mo_pdus(
    *, source: str, destination: str, text: str, long_message: str = "udh", reference: int = 0
) -> list[DeliverSm]:
    """The deliver_sm a handset's SMS arrives as, one per part, in part order (no I/O)."""
    if long_message not in MO_LONG_FORMS:
        raise ValueError(f"long_message must be one of {MO_LONG_FORMS}, not {long_message!r}")
    encoding, parts = split_encoded(text)
    data_coding = c.DATA_CODING_DEFAULT if encoding is Encoding.GSM7 else c.DATA_CODING_UCS2

    def deliver(short_message: bytes, esm_class: int = 0, tlvs: dict[int, bytes] | None = None) -> DeliverSm:
        return DeliverSm(
            source_addr=source,
            destination_addr=destination,
            esm_class=esm_class,
            data_coding=data_coding,
            short_message=short_message,
            tlvs=tlvs or {},
        )

    if len(parts) == 1:
        return [deliver(parts[0])]
    total = len(parts)
    if long_message == "payload":
        return [deliver(b"", tlvs={c.TAG_MESSAGE_PAYLOAD: b"".join(parts)})]
    if long_message == "sar":
        return [
            deliver(
                part,
                tlvs={
                    c.TAG_SAR_MSG_REF_NUM: tlv_u16(reference & 0xFFFF),
                    c.TAG_SAR_TOTAL_SEGMENTS: tlv_u8(total),
                    c.TAG_SAR_SEGMENT_SEQNUM: tlv_u8(seq),
                },
            )
            for seq, part in enumerate(parts, start=1)
        ]
    if long_message == "udh16":
        # The parts are cut for the 6-octet UDH; one more octet still fits a deliver_sm (254).
        return [
            deliver(
                bytes((0x06, 0x08, 0x04, (reference >> 8) & 0xFF, reference & 0xFF, total, seq)) + part,
                c.ESM_CLASS_UDHI,
            )
            for seq, part in enumerate(parts, start=1)
        ]
    return [
        deliver(concat_udh(reference & 0xFF, total, seq) + part, c.ESM_CLASS_UDHI)
        for seq, part in enumerate(parts, start=1)
    ]


def _receipt_excerpt(submitted: SubmittedMessage) -> str:
    """First characters of the message for the receipt's text: field, ASCII-safe."""
    payload = submitted.user_data
    if submitted.data_coding == c.DATA_CODING_UCS2:
        text = payload.decode("utf-16-be", errors="replace")
    else:
        text = payload.decode("latin-1")
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)[:20]


# --- CLI -----------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m smsgw_dev.simulators.smsc", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2775)
    parser.add_argument("--system-id", default="smsgw")
    parser.add_argument(
        "--account", action="append", default=[], metavar="SYSTEM_ID:PASSWORD", help="another ESME account (repeatable)"
    )
    parser.add_argument("--password", default="secret")
    parser.add_argument("--dlr-delay", type=float, default=0.2, help="seconds from submit to receipt")
    parser.add_argument("--hex-ids", action="store_true", help="hex message ids (receipt text id in decimal)")
    parser.add_argument(
        "--hex-digits-only",
        action="store_true",
        help="with --hex-ids: hex ids spelled with 0-9 only (ambiguous to auto-detection)",
    )
    parser.add_argument("--fail-pattern", default=None, help="regex of destinations answered ESME_RINVDSTADR")
    parser.add_argument(
        "--flaky-pattern", default=None, help="regex of destinations answered ESME_RSYSERR at a message's first submit"
    )
    parser.add_argument(
        "--blocked-text-pattern", default=None, help="regex of message texts answered ESME_RSUBMITFAIL (content filter)"
    )
    parser.add_argument("--throttle-every", type=int, default=0, help="answer every Nth submit ESME_RTHROTTLED")
    parser.add_argument("--no-dlrs", action="store_true", help="never send delivery receipts")
    parser.add_argument("--no-dlr-pattern", default=None, help="regex of destinations whose receipts never come")
    parser.add_argument("--undeliverable-pattern", default=None, help="regex of destinations receipted UNDELIV")
    parser.add_argument("--dlr-format", choices=("text", "tlv", "both"), default="text")
    parser.add_argument(
        "--control-port",
        type=int,
        default=0,
        help="HTTP control API on 127.0.0.1 (POST /mo {from,to,text[,long_message,parts,reference]}: a "
        "handset sends an SMS, a long one as udh|udh16|sar|payload, parts in the order given; "
        "POST /dlr {id,stat}: a receipt; POST /drop {after,accept}: cut the connection on a "
        "coming submit_sm; POST /mute {after}: take a coming submit_sm and never answer it ({every,seconds}: every N-th for a while; GET /mute: how many); POST /throttle "
        "{every,seconds}: answer every N-th submit_sm ESME_RTHROTTLED for a while; POST /disorder-receipts "
        "{seconds}: receipts duplicated, followed by a stale ENROUTE, some early, some for unknown ids; GET "
        "/disorder-receipts: how many of each were sent; POST /malformed {count}: deliver_sm of broken "
        "content, once each); 0 = off",
    )
    parser.add_argument(
        "--tls-cert",
        default=None,
        metavar="PEM",
        help="also listen for SMPP over TLS with this certificate (key inside, or --tls-key)",
    )
    parser.add_argument("--tls-key", default=None, metavar="PEM", help="private key of --tls-cert")
    parser.add_argument("--tls-port", type=int, default=3550, help="port of the TLS listener (with --tls-cert)")
    parser.add_argument(
        "--tls-client-ca",
        default=None,
        metavar="PEM",
        help="require client certificates signed by this CA on the TLS listener (mutual TLS)",
    )
    parser.add_argument(
        "--first-id",
        type=int,
        default=1,
        help="the first message id handed out (restarted over a kept log: start past the old ones)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    simulator = SmscSimulator(
        host=args.host,
        port=args.port,
        system_id=args.system_id,
        password=args.password,
        dlr_delay=args.dlr_delay,
        hex_ids=args.hex_ids,
        hex_digits_only=args.hex_digits_only,
        fail_pattern=args.fail_pattern,
        flaky_pattern=args.flaky_pattern,
        blocked_text_pattern=args.blocked_text_pattern,
        throttle_every=args.throttle_every,
        send_dlrs=not args.no_dlrs,
        dlr_format=args.dlr_format,
        no_dlr_pattern=args.no_dlr_pattern,
        extra_accounts=dict(a.split(":", 1) for a in args.account),
        undeliverable_pattern=args.undeliverable_pattern,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        tls_port=args.tls_port,
        tls_client_ca_file=args.tls_client_ca,
        first_id=args.first_id,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await simulator.start()
    control = await _start_control(simulator, args.control_port) if args.control_port else None
    # Scripts wait for this exact line before connecting.
    print(f"SMSC simulator listening on {simulator.host}:{simulator.port}", flush=True)
    if simulator.tls_port is not None:
        print(f"SMSC simulator listening for TLS on {simulator.host}:{simulator.tls_port}", flush=True)
    try:
        await stop.wait()
    finally:
        if control is not None:
            await control.cleanup()
        await simulator.stop()


async def _start_control(simulator: SmscSimulator, port: int):
    """A tiny HTTP API so scripts (and `smsgw simulate mo`) can play a handset."""
    from aiohttp import web

    async def mo(request: web.Request) -> web.Response:
        data = await request.json()
        missing = [k for k in ("from", "to", "text") if not data.get(k)]
        if missing:
            return web.json_response({"error": f"missing {missing}"}, status=400)
        try:
            total = await simulator.send_mo(
                source=data["from"],
                destination=data["to"],
                text=data["text"],
                long_message=data.get("long_message", "udh"),
                parts=data.get("parts"),
                reference=data.get("reference"),
            )
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"queued": True, "parts": total})

    async def receipt(request: web.Request) -> web.Response:
        data = await request.json()
        if not data.get("id"):
            return web.json_response({"error": "missing id"}, status=400)
        await simulator.send_receipt(message_id=str(data["id"]), stat=data.get("stat", DELIVRD))
        return web.json_response({"queued": True})

    async def drop(request: web.Request) -> web.Response:
        data = await request.json() if request.can_read_body else {}
        after, accept = data.get("after", 0), data.get("accept", False)
        if not isinstance(after, int) or after < 0 or not isinstance(accept, bool):
            return web.json_response({"error": "after: an integer >= 0; accept: true or false"}, status=400)
        simulator.drop_on_submit(after, accept=accept)
        return web.json_response({"armed": True, "after": after, "accept": accept})

    async def mute(request: web.Request) -> web.Response:
        data = await request.json() if request.can_read_body else {}
        if "every" in data:
            every, seconds = data["every"], data.get("seconds", 10)
            valid_every = isinstance(every, int) and not isinstance(every, bool) and every >= 1
            if not valid_every or not isinstance(seconds, int | float) or not 0 < seconds <= 3600:
                return web.json_response(
                    {"error": "every: an integer >= 1; seconds: a number in (0, 3600]"}, status=400
                )
            simulator.mute_every_for(every, float(seconds))
            return web.json_response({"muting": True, "every": every, "seconds": seconds})
        after = data.get("after", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            return web.json_response({"error": "after: an integer >= 0"}, status=400)
        simulator.mute_on_submit(after)
        return web.json_response({"armed": True, "after": after})

    async def throttle(request: web.Request) -> web.Response:
        data = await request.json() if request.can_read_body else {}
        every, seconds = data.get("every", 1), data.get("seconds", 10)
        valid_every = isinstance(every, int) and not isinstance(every, bool) and every >= 1
        if not valid_every or not isinstance(seconds, int | float) or not 0 < seconds <= 3600:
            return web.json_response({"error": "every: an integer >= 1; seconds: a number in (0, 3600]"}, status=400)
        simulator.throttle_for(every, float(seconds))
        return web.json_response({"throttling": True, "every": every, "seconds": seconds})

    async def disorder(request: web.Request) -> web.Response:
        data = await request.json() if request.can_read_body else {}
        seconds = data.get("seconds", 20)
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 < seconds <= 3600:
            return web.json_response({"error": "seconds: a number in (0, 3600]"}, status=400)
        simulator.disorder_receipts_for(float(seconds))
        return web.json_response({"disordered": True, "seconds": seconds})

    async def disorder_counts(_request: web.Request) -> web.Response:
        return web.json_response(simulator.disorder_counts)

    async def malformed(request: web.Request) -> web.Response:
        data = await request.json() if request.can_read_body else {}
        count = data.get("count", 10)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 100_000:
            return web.json_response({"error": "count: an integer in [1, 100000]"}, status=400)
        taken = await simulator.send_malformed(count)
        return web.json_response({"answered": simulator.malformed_sent, "rok": taken})

    async def muted(_request: web.Request) -> web.Response:
        return web.json_response({"muted": simulator.muted})

    async def submitted(_request: web.Request) -> web.Response:
        # What reached the SMSC, so tests can count submits of the same message (duplicates).
        return web.json_response(
            [
                {
                    "message_id": m.message_id,
                    "destination": m.destination,
                    "source": m.source,
                    "data_coding": m.data_coding,
                    "user_data_hex": m.user_data.hex(),
                    "long_message": m.long_message,
                    "concat": list(m.concat) if m.concat else None,
                    "system_id": m.system_id,
                    "received_at": m.received_at,  # the simulator's monotonic clock: for rates
                    "received_wall": m.received_wall,  # the wall clock: for times such as send_at
                    "validity_period": m.validity_period,
                    "priority_flag": m.priority_flag,
                }
                for m in simulator.submitted
            ]
        )

    async def submitted_count(_request: web.Request) -> web.Response:
        # How many: cheap to poll while hundreds of thousands have come (make soak).
        return web.json_response({"count": len(simulator.submitted)})

    async def submitted_repeated(_request: web.Request) -> web.Response:
        # The user data that came more than once, with how many times: duplicates without the list.
        times = Counter(m.user_data for m in simulator.submitted)
        return web.json_response({data.hex(): n for data, n in times.items() if n > 1})

    app = web.Application()
    app.router.add_get("/submitted", submitted)
    app.router.add_get("/submitted/count", submitted_count)
    app.router.add_get("/submitted/repeated", submitted_repeated)
    app.router.add_post("/drop", drop)
    app.router.add_post("/mute", mute)
    app.router.add_get("/mute", muted)
    app.router.add_post("/malformed", malformed)
    app.router.add_post("/throttle", throttle)
    app.router.add_post("/disorder-receipts", disorder)
    app.router.add_get("/disorder-receipts", disorder_counts)
    app.router.add_post("/mo", mo)
    app.router.add_post("/dlr", receipt)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    eventloop.run(_serve(args), os.environ.get("SMSGW_EVENT_LOOP", "uvloop"))  # as the services take it


if __name__ == "__main__":
    main()
