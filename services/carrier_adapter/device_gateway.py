"""Android phones as a carrier: the DeviceGatewayService they connect to, and the
CarrierClient the dispatcher submits through.

One AndroidCarrier (config) is one account's phones. Each phone holds a stream
(smsgw.v1.DeviceGatewayService/Connect); submit() hands a message to the connected
phone with the fewest messages outstanding and waits for its "sent" report. A phone
that drops its stream before accepting a message gives the message back (another
phone, or CarrierUnavailable so the dispatcher retries later); a message a phone has
accepted stays with that phone, across reconnects, until it reports. Protocol and
guarantees: docs/android-gateway.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

import grpc
from google.protobuf.duration_pb2 import Duration
from pydantic import BaseModel, Field, SecretStr, field_validator

from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import device_gateway_pb2 as dg
from smsgw.v1 import device_gateway_pb2_grpc as dg_grpc

from .device_outcomes import (
    PERMANENT_REJECTIONS,
    account_mismatch_failure,
    RADIO_DOWN_RESULTS,
    SendVerdict,
    carrier_message_id,
    delivery_of,
    device_rejected_failure,
    device_send_failure,
    media_not_supported_failure,
    result_name,
    send_verdict,
    validity_ended_failure,
)
from .dispatcher import CarrierReports, CarrierUnavailable, SubmitResult

log = logging.getLogger(__name__)

TOKEN_METADATA = "x-smsgw-device-token"
SERVICE_NAME = dg.DESCRIPTOR.services_by_name["DeviceGatewayService"].full_name
OK = dg.SmsManagerResult.SMS_MANAGER_RESULT_OK


# --- configuration ------------------------------------------------------------------

class DeviceToken(BaseModel):
    model_config = {"extra": "forbid"}

    token: SecretStr = Field(min_length=16, description="the phone's secret, e.g. secrets.token_urlsafe(24)")
    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
    sim_slot: int | None = Field(None, ge=0, le=7, description="preferred SIM slot; unset: the phone's default")


class AndroidCarrier(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,31}$")
    kind: Literal["android"] = "android"
    account_id: str = Field(min_length=1)
    device_tokens: list[DeviceToken] = Field(min_length=1)
    ack_timeout: float = Field(10.0, gt=0, description="seconds a phone has to accept a send command")
    # A submit that times out raises CarrierUnavailable; the dispatcher's retry waits on the same phone again.
    sent_timeout: float = Field(30.0, gt=0, description="seconds a submit waits for an accepted message's sent report")

    @field_validator("device_tokens")
    @classmethod
    def _unique(cls, tokens: list[DeviceToken]) -> list[DeviceToken]:
        ids = [t.device_id for t in tokens]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"device ids must be unique within a carrier; repeated: {repeated}")
        secrets = [t.token.get_secret_value() for t in tokens]
        if len(set(secrets)) != len(secrets):
            raise ValueError("each device needs its own token; two devices share one")
        return tokens


# --- state ----------------------------------------------------------------------------

@dataclass(frozen=True)
class AttemptOutcome:
    kind: Literal["sent", "failed", "rejected", "lost"]
    detail: str
    result: int = 0          # SmsManagerResult when failed
    error_code: int = 0
    reason: int = 0          # SendRejectReason when rejected
    note: str = ""           # the phone's own words (SendRejected.detail)
    part_count: int = 0      # when sent


class Attempt:
    """One hand-over of one message to one phone."""

    def __init__(self, device: DeviceState, message_id: str, attempt_id: str, *, adopted: bool = False):
        self.device = device
        self.message_id = message_id
        self.attempt_id = attempt_id
        self.adopted = adopted            # learnt from a hello's pending ids: the phone holds it, we never sent it
        self.accepted = adopted
        self.connection: DeviceConnection | None = device.connection
        self.parts: dict[int, dg.SendResult] = {}
        self.progress = asyncio.Event()   # set once accepted or resolved
        self.outcome: asyncio.Future[AttemptOutcome] = asyncio.get_running_loop().create_future()

    @property
    def resolved(self) -> bool:
        return self.outcome.done()

    def answers(self, attempt_id: str) -> bool:
        return self.adopted or attempt_id == self.attempt_id


class DeviceConnection:
    """One open stream of one phone: an outgoing queue and the reason it was closed, if it was."""

    def __init__(self, device_id: str, peer: str):
        self.device_id = device_id
        self.peer = peer
        self.session_id = str(uuid.uuid4())
        self.queue: asyncio.Queue[dg.ConnectResponse] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_code: grpc.StatusCode | None = None
        self.close_details = ""
        self.last_heard = time.monotonic()

    def write(self, frame: dg.ConnectResponse) -> None:
        if not self.closed.is_set():
            self.queue.put_nowait(frame)

    def close(self, code: grpc.StatusCode, details: str) -> None:
        if not self.closed.is_set():
            self.close_code, self.close_details = code, details
            self.closed.set()


class DeviceState:
    """A phone of an Android carrier, connected or not. What it accepted outlives its streams."""

    def __init__(self, account_id: str, config: DeviceToken):
        self.account_id = account_id
        self.device_id = config.device_id
        self.sim_slot = config.sim_slot
        self.connection: DeviceConnection | None = None
        self.hello: dg.DeviceHello | None = None
        self.attempts: dict[str, Attempt] = {}   # message id -> unresolved attempt on this phone
        self.radio_down_until = 0.0
        self.last_dispatch = 0.0

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.closed.is_set()

    @property
    def outstanding(self) -> int:
        return len(self.attempts)

    @property
    def accepted_ids(self) -> set[str]:
        return {mid for mid, a in self.attempts.items() if a.accepted}

    def number_of_slot(self, slot: int) -> str:
        for sim in (self.hello.sim_slots if self.hello else ()):
            if sim.slot_index == slot and sim.phone_number:
                return sim.phone_number
        return ""


class DeviceAuthError(Exception):
    """The token is unknown, or does not belong to the device id the phone claims."""


def _token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class DeviceRegistry:
    """Which phones may connect (the tokens of every Android carrier) and which are connected."""

    def __init__(self, *, ping_interval: float = 20.0, keepalive_timeout: float = 60.0, hello_timeout: float = 10.0):
        self.ping_interval = ping_interval
        self.keepalive_timeout = keepalive_timeout
        self.hello_timeout = hello_timeout
        self._tokens: dict[str, tuple[AndroidCarrierClient, DeviceState]] = {}

    def register(self, client: AndroidCarrierClient) -> None:
        keys = {}
        for token in client.config.device_tokens:
            key = _token_key(token.token.get_secret_value())
            owner = self._tokens.get(key)
            if owner is not None and owner[0] is not client and not owner[0].closed:
                raise ValueError(f"the token of device {token.device_id} (carrier {client.name}) is already used by "
                                 f"device {owner[1].device_id} of carrier {owner[0].name}; give each phone its own")
            keys[key] = (client, client.devices[token.device_id])
        self._tokens.update(keys)

    def unregister(self, client: AndroidCarrierClient) -> None:
        for key in [k for k, (c, _) in self._tokens.items() if c is client]:
            del self._tokens[key]

    def knows(self, token: str) -> bool:
        return _token_key(token) in self._tokens

    def authenticate(self, token: str, device_id: str) -> tuple[AndroidCarrierClient, DeviceState]:
        found = self._tokens.get(_token_key(token))
        if found is None:
            raise DeviceAuthError(f"unknown device token (hello.device_id {device_id!r}); check the token configured "
                                  f"in the app against the device_tokens of the account's Android carrier")
        client, device = found
        if device_id != device.device_id:
            raise DeviceAuthError(f"this device token was issued for device {device.device_id!r}, "
                                  f"not {device_id!r}; send the device id the token belongs to")
        return client, device

    def connected(self, account_id: str | None = None) -> list[DeviceState]:
        """Connected phones, of one account or of all."""
        return [d for _, d in self._tokens.values()
                if d.connected and (account_id is None or d.account_id == account_id)]


# --- the carrier client ---------------------------------------------------------------

def _expired(command: cp.DispatchCommand) -> bool:
    return command.HasField("expires_at") and command.expires_at.ToDatetime(tzinfo=timezone.utc) <= datetime.now(
        timezone.utc)


class AndroidCarrierClient:
    """The CarrierClient of one account's phones (see dispatcher.CarrierClient)."""

    def __init__(self, config: AndroidCarrier, reports: CarrierReports, registry: DeviceRegistry, *,
                 remember: int = 10_000, radio_down_pause: float = 30.0):
        self.name = config.name
        self.config = config
        self.account_id = config.account_id
        self.reports = reports
        self.registry = registry
        self.devices = {t.device_id: DeviceState(config.account_id, t) for t in config.device_tokens}
        self.radio_down_pause = radio_down_pause
        self._live: dict[str, Attempt] = {}                 # message id -> its unresolved attempt
        self._completed: OrderedDict[str, SubmitResult] = OrderedDict()
        self._remember = remember
        self._report_tasks: set[asyncio.Task] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self) -> None:
        self.registry.register(self)

    async def close(self) -> None:
        """Ends every phone's stream (they reconnect, to another replica if there is one) and makes waiting
        and later submits raise CarrierUnavailable at once. Call it as soon as the service stops, before
        waiting for in-flight dispatches: they end then instead of after sent_timeout."""
        self._closed = True
        for device in self.devices.values():
            if device.connection is not None:
                device.connection.close(grpc.StatusCode.UNAVAILABLE, f"carrier {self.name} is shutting down; reconnect")
                device.connection = None
            for attempt in list(device.attempts.values()):
                self._resolve(attempt, AttemptOutcome("lost", f"carrier {self.name} closed"))
        if self._report_tasks:
            await asyncio.wait(self._report_tasks, timeout=5.0)

    # submit --------------------------------------------------------------------------

    async def submit(self, command: cp.DispatchCommand) -> SubmitResult:
        message_id = command.message_id
        if command.account_id != self.account_id:
            return SubmitResult(failure=account_mismatch_failure(self.name, self.account_id, command.account_id))
        media = [url for url in getattr(command, "media_urls", ()) if url]
        if media:
            return SubmitResult(failure=media_not_supported_failure(self.name, len(media)))
        tried: set[str] = set()
        errors: list[str] = []
        for _ in range(2 * len(self.devices) + 2):
            if (done := self._completed.get(message_id)) is not None:
                return done
            if self._closed:
                raise CarrierUnavailable(f"{self.name}: the carrier is closing")
            attempt = self._live.get(message_id)
            if attempt is None:
                if _expired(command):
                    return self._remember_result(message_id, SubmitResult(failure=validity_ended_failure(
                        self.name, "; ".join(errors) or "no phone took it in time")))
                device = self._pick(exclude=tried)
                if device is None:
                    break
                attempt = self._dispatch(device, command)
            await self._settle(attempt, command)
            if (done := self._completed.get(message_id)) is not None:
                return done
            tried.add(attempt.device.device_id)
            errors.append(attempt.outcome.result().detail)
        connected = [d.device_id for d in self.devices.values() if d.connected]
        if not connected:
            raise CarrierUnavailable(f"{self.name}: no phone of account {self.account_id} is connected "
                                     f"(devices: {', '.join(self.devices)})")
        raise CarrierUnavailable(f"{self.name}: no connected phone could send {message_id} now: "
                                 f"{'; '.join(errors) or 'all tried'}")

    async def _settle(self, attempt: Attempt, command: cp.DispatchCommand) -> None:
        """Waits until the attempt is resolved; raises CarrierUnavailable when an accepted one stays silent."""
        if not attempt.progress.is_set():
            try:
                await asyncio.wait_for(attempt.progress.wait(), self.config.ack_timeout)
            except asyncio.TimeoutError:
                if not attempt.progress.is_set():
                    self._abandon(attempt, f"phone {attempt.device.device_id} did not accept within "
                                           f"{self.config.ack_timeout:g}s", cancel=True)
                    return
        if attempt.resolved:
            return
        try:
            await asyncio.wait_for(asyncio.shield(attempt.outcome), self.config.sent_timeout)
        except asyncio.TimeoutError:
            device = attempt.device.device_id
            if _expired(command):
                self._abandon(attempt, "validity ended while waiting")
                self._remember_result(attempt.message_id, SubmitResult(failure=validity_ended_failure(
                    self.name, f"phone {device} accepted it but never reported sending it (unconfirmed)")))
                return
            raise CarrierUnavailable(
                f"{self.name}: phone {device} accepted {attempt.message_id} but reported no send result within "
                f"{self.config.sent_timeout:g}s; waiting for it (it is never handed to another phone)") from None

    def _pick(self, exclude: set[str]) -> DeviceState | None:
        """The connected phone with the fewest outstanding messages; phones whose radio just failed last."""
        now = time.monotonic()
        candidates = [d for d in self.devices.values() if d.connected and d.device_id not in exclude]
        if not candidates:
            return None
        return min(candidates, key=lambda d: (d.radio_down_until > now, d.outstanding, d.last_dispatch))

    def _dispatch(self, device: DeviceState, command: cp.DispatchCommand) -> Attempt:
        send = dg.SendCommand(
            attempt_id=str(uuid.uuid4()), message_id=command.message_id, to=command.to, body=command.content.text,
            segments=max(1, command.segments), delivery_report=True,
        )
        if device.sim_slot is not None:
            send.preferred_sim_slot = device.sim_slot
        if command.HasField("expires_at"):
            send.expires_at.CopyFrom(command.expires_at)
            left = command.expires_at.ToDatetime(tzinfo=timezone.utc) - datetime.now(timezone.utc)
            send.validity.CopyFrom(Duration(seconds=max(0, int(left.total_seconds()))))
        attempt = Attempt(device, command.message_id, send.attempt_id)
        device.attempts[command.message_id] = attempt
        self._live[command.message_id] = attempt
        device.last_dispatch = time.monotonic()
        device.connection.write(dg.ConnectResponse(send=send))
        log.debug("%s: %s -> phone %s (attempt %s)", self.name, command.message_id, device.device_id, send.attempt_id)
        return attempt

    def _abandon(self, attempt: Attempt, detail: str, cancel: bool = False) -> None:
        if cancel and attempt.connection is not None:
            attempt.connection.write(dg.ConnectResponse(cancel=dg.CancelSend(
                attempt_id=attempt.attempt_id, message_id=attempt.message_id)))
        self._resolve(attempt, AttemptOutcome("lost", detail))

    def _resolve(self, attempt: Attempt, outcome: AttemptOutcome) -> None:
        if attempt.resolved:
            return
        attempt.outcome.set_result(outcome)
        attempt.progress.set()
        device, message_id = attempt.device, attempt.message_id
        if device.attempts.get(message_id) is attempt:
            del device.attempts[message_id]
        if self._live.get(message_id) is attempt:
            del self._live[message_id]
        if outcome.kind == "sent":
            self._remember_result(message_id, SubmitResult(carrier_ids=tuple(
                carrier_message_id(device.device_id, message_id, i) for i in range(outcome.part_count))))
        elif outcome.kind == "failed":
            if send_verdict(outcome.result) is SendVerdict.PERMANENT:
                self._remember_result(message_id, SubmitResult(failure=device_send_failure(
                    self.name, device.device_id, outcome.result, outcome.error_code)))
            elif outcome.result in RADIO_DOWN_RESULTS:
                device.radio_down_until = time.monotonic() + self.radio_down_pause
        elif outcome.kind == "rejected" and outcome.reason in PERMANENT_REJECTIONS:
            self._remember_result(message_id, SubmitResult(failure=device_rejected_failure(
                self.name, device.device_id, outcome.reason, outcome.note)))

    def _remember_result(self, message_id: str, result: SubmitResult) -> SubmitResult:
        """Final answers are kept (bounded) so a repeated submit of the message gets the same one, never a resend."""
        self._completed[message_id] = result
        self._completed.move_to_end(message_id)
        while len(self._completed) > self._remember:
            self._completed.popitem(last=False)
        return result

    # the phone's side -----------------------------------------------------------------

    def attach(self, device: DeviceState, connection: DeviceConnection, hello: dg.DeviceHello) -> None:
        old = device.connection
        if old is not None:
            old.close(grpc.StatusCode.ABORTED, f"device {device.device_id} connected again; this stream is replaced")
            self._release_unaccepted(device, old, "its stream was replaced")
        device.connection = connection
        device.hello = hello
        for message_id in hello.pending_message_ids:
            live = self._live.get(message_id)
            if live is None:
                attempt = Attempt(device, message_id, "", adopted=True)
                device.attempts[message_id] = attempt
                self._live[message_id] = attempt
            elif live.device is device:
                live.accepted = True
                live.progress.set()
            else:
                log.warning("%s: phone %s says it holds %s, which is now with phone %s: it may be sent twice",
                            self.name, device.device_id, message_id, live.device.device_id)
        log.info("%s: phone %s connected from %s (app %s, %d SIM(s), %d pending)", self.name, device.device_id,
                 connection.peer, hello.app_version or "?", len(hello.sim_slots), len(hello.pending_message_ids))

    def detach(self, device: DeviceState, connection: DeviceConnection) -> None:
        if device.connection is not connection:
            return
        device.connection = None
        released = self._release_unaccepted(device, connection, "it disconnected before accepting")
        log.info("%s: phone %s disconnected (%d unaccepted message(s) released, %d accepted kept)",
                 self.name, device.device_id, released, len(device.attempts))

    def _release_unaccepted(self, device: DeviceState, connection: DeviceConnection, why: str) -> int:
        released = [a for a in device.attempts.values() if not a.accepted and a.connection is connection]
        for attempt in released:
            self._resolve(attempt, AttemptOutcome("lost", f"phone {device.device_id}: {why}"))
        return len(released)

    def on_frame(self, device: DeviceState, connection: DeviceConnection, frame: dg.ConnectRequest) -> None:
        kind = frame.WhichOneof("frame")
        if kind == "accepted":
            self._on_accepted(device, frame.accepted)
        elif kind == "rejected":
            self._on_rejected(device, frame.rejected)
        elif kind == "sent":
            self._on_sent(device, frame.sent)
            connection.write(dg.ConnectResponse(report_ack=dg.ReportAck(report_ids=[frame.sent.report_id])))
        elif kind == "delivery":
            self._spawn(self._on_delivery(device, connection, frame.delivery))
        elif kind == "received":
            self._spawn(self._on_received(device, connection, frame.received))
        elif kind == "hello":
            log.warning("%s: phone %s sent a second hello; ignored", self.name, device.device_id)
        # keepalive: hearing anything is enough (connection.last_heard)

    def _attempt_for(self, device: DeviceState, message_id: str, attempt_id: str) -> Attempt | None:
        attempt = device.attempts.get(message_id)
        return attempt if attempt is not None and attempt.answers(attempt_id) else None

    def _on_accepted(self, device: DeviceState, frame: dg.SendAccepted) -> None:
        attempt = self._attempt_for(device, frame.message_id, frame.attempt_id)
        if attempt is None:
            if self._completed.get(frame.message_id) is None:
                log.warning("%s: phone %s accepted %s (attempt %s) after it was taken back: it may be sent twice",
                            self.name, device.device_id, frame.message_id, frame.attempt_id)
            return
        attempt.accepted = True
        attempt.progress.set()

    def _on_rejected(self, device: DeviceState, frame: dg.SendRejected) -> None:
        attempt = self._attempt_for(device, frame.message_id, frame.attempt_id)
        if attempt is not None:
            reason = dg.SendRejectReason.Name(frame.reason) if frame.reason in dg.SendRejectReason.values() \
                else str(frame.reason)
            self._resolve(attempt, AttemptOutcome("rejected", f"phone {device.device_id} rejected it: {reason} "
                                                              f"{frame.detail}".rstrip(), reason=frame.reason,
                                                  note=frame.detail))

    def _on_sent(self, device: DeviceState, frame: dg.SendResult) -> None:
        attempt = self._attempt_for(device, frame.message_id, frame.attempt_id)
        if attempt is None:
            log.info("%s: phone %s reported %s for %s part %d, no longer waited for", self.name, device.device_id,
                     result_name(frame.result), frame.message_id, frame.part_index)
            return
        attempt.accepted = True
        attempt.parts[frame.part_index] = frame
        if frame.result != OK:
            self._resolve(attempt, AttemptOutcome(
                "failed", f"phone {device.device_id}: {result_name(frame.result)}"
                          + (f" (radio error {frame.error_code})" if frame.error_code else ""),
                result=frame.result, error_code=frame.error_code))
            return
        part_count = max(1, max(p.part_count for p in attempt.parts.values()))
        if all(i in attempt.parts for i in range(part_count)):
            self._resolve(attempt, AttemptOutcome("sent", f"sent by phone {device.device_id}", part_count=part_count))
        else:
            attempt.progress.set()

    async def _on_delivery(self, device: DeviceState, connection: DeviceConnection, frame: dg.DeliveryReport) -> None:
        state, carrier_state, error = delivery_of(frame.format, frame.status)
        cid = carrier_message_id(device.device_id, frame.message_id, frame.part_index)
        await self.reports.on_receipt(self.name, cid, state, carrier_state, error)
        connection.write(dg.ConnectResponse(report_ack=dg.ReportAck(report_ids=[frame.report_id])))

    async def _on_received(self, device: DeviceState, connection: DeviceConnection, frame: dg.ReceivedSms) -> None:
        destination = frame.to or device.number_of_slot(frame.sim_slot)
        await self.reports.on_inbound(self.name, getattr(frame, "from"), destination, frame.body,
                                      parts=max(1, frame.parts))
        connection.write(dg.ConnectResponse(report_ack=dg.ReportAck(report_ids=[frame.report_id])))

    def _spawn(self, coro) -> None:
        """Reports are made durable off the read loop, so a slow log never delays accepts and results.
        A report that fails is not acknowledged: the phone writes it again after its next hello."""
        task = asyncio.create_task(coro)
        self._report_tasks.add(task)
        task.add_done_callback(self._report_done)

    def _report_done(self, task: asyncio.Task) -> None:
        self._report_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: a phone report could not be recorded; the phone will repeat it", self.name,
                      exc_info=task.exception())


# --- the gRPC service -----------------------------------------------------------------

class DeviceGatewayServicer(dg_grpc.DeviceGatewayServiceServicer):
    """Thin: authenticates the stream, then moves frames between it and the phone's carrier client."""

    def __init__(self, registry: DeviceRegistry):
        self.registry = registry

    async def Connect(self, request_iterator, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        metadata_token = metadata.get(TOKEN_METADATA)
        if metadata_token is not None and not self.registry.knows(metadata_token):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                f"unknown device token in metadata {TOKEN_METADATA}; check the token configured in "
                                f"the app against the device_tokens of the account's Android carrier")
        hello = await self._read_hello(context)
        if hello is None:
            return
        if metadata_token is not None and hello.device_token and not hmac.compare_digest(
                metadata_token.encode(), hello.device_token.encode()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                f"hello.device_token and metadata {TOKEN_METADATA} differ; send one token")
        token = hello.device_token or metadata_token
        if not token:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                f"no device token: put it in hello.device_token (or metadata {TOKEN_METADATA})")
        try:
            client, device = self.registry.authenticate(token, hello.device_id)
        except DeviceAuthError as exc:
            log.warning("refused a phone from %s: %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        if client.closed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"carrier {client.name} is shutting down; reconnect")
        connection = DeviceConnection(device.device_id, context.peer())
        client.attach(device, connection, hello)
        try:
            await self._serve(client, device, connection, context)
        finally:
            client.detach(device, connection)
        if connection.close_code is not None:
            await context.abort(connection.close_code, connection.close_details)

    async def _read_hello(self, context) -> dg.DeviceHello | None:
        try:
            first = await asyncio.wait_for(context.read(), self.registry.hello_timeout)
        except asyncio.TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"no hello within {self.registry.hello_timeout:g}s; the first frame must be hello")
        if first is grpc.aio.EOF:
            return None
        if first.WhichOneof("frame") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"the first frame must be hello, not {first.WhichOneof('frame')}")
        return first.hello

    async def _serve(self, client: AndroidCarrierClient, device: DeviceState, connection: DeviceConnection,
                     context) -> None:
        welcome = dg.DeviceWelcome(session_id=connection.session_id)
        welcome.ping_interval.FromTimedelta(timedelta(seconds=self.registry.ping_interval))
        welcome.keepalive_timeout.FromTimedelta(timedelta(seconds=self.registry.keepalive_timeout))
        welcome.server_time.GetCurrentTime()
        await context.write(dg.ConnectResponse(welcome=welcome))
        tasks = [
            asyncio.create_task(self._write_loop(connection, context)),
            asyncio.create_task(self._read_loop(client, device, connection, context)),
            asyncio.create_task(self._ping_loop(connection)),
            asyncio.create_task(connection.closed.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.info("%s: stream of phone %s ended: %r", client.name, device.device_id, task.exception())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _write_loop(connection: DeviceConnection, context) -> None:
        while True:
            frame = await connection.queue.get()
            await context.write(frame)

    @staticmethod
    async def _read_loop(client: AndroidCarrierClient, device: DeviceState, connection: DeviceConnection,
                         context) -> None:
        while True:
            frame = await context.read()
            if frame is grpc.aio.EOF:
                return
            connection.last_heard = time.monotonic()
            client.on_frame(device, connection, frame)

    async def _ping_loop(self, connection: DeviceConnection) -> None:
        ping_id = 0
        tick = min(self.registry.ping_interval, self.registry.keepalive_timeout / 2)
        last_ping = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            silent = now - connection.last_heard
            if silent > self.registry.keepalive_timeout:
                connection.close(grpc.StatusCode.UNAVAILABLE,
                                 f"nothing heard from device {connection.device_id} for {silent:.0f}s; reconnect")
                return
            if now - last_ping >= self.registry.ping_interval - 1e-3:
                ping_id += 1
                ping = dg.ServerPing(ping_id=ping_id)
                ping.sent_at.GetCurrentTime()
                connection.write(dg.ConnectResponse(ping=ping))
                last_ping = now


def add_device_gateway(server: grpc.aio.Server, registry: DeviceRegistry) -> DeviceGatewayServicer:
    """Registers smsgw.v1.DeviceGatewayService on the carrier-adapter's gRPC server (before it starts)."""
    servicer = DeviceGatewayServicer(registry)
    dg_grpc.add_DeviceGatewayServiceServicer_to_server(servicer, server)
    return servicer
