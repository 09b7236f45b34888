"""Android phones as a carrier: the DeviceGatewayService they connect to, and the
CarrierClient the dispatcher submits through.

One AndroidCarrier (config) is one account's phones. Each phone holds a stream
(smsgw.v1.DeviceGatewayService/Connect); submit() hands a message to the connected
phone with the fewest messages outstanding and waits for its "sent" report. A phone
that drops its stream before accepting a message gives the message back (another
phone, or CarrierUnavailable so the dispatcher retries later); a message a phone has
accepted stays with that phone, across reconnects, until it reports.

With several carrier-adapter replicas, a phone may be connected to another replica than
the one with the command: ReplicaLinks gives the client the directory of every replica's
phones (directory.py, fed from Kafka by presence.py) and the relay call to
the replica holding one (relay.py). That replica runs the attempt (serve_relay())
and owns what the phone reports. Protocol and guarantees: docs/android-gateway.md.

Over 500 lines on purpose: AndroidCarrierClient is one state machine (attempts, hand-over
between phones and replicas, the phones' reports) over per-phone state; its pure parts are out
(outcomes.py, directory.py), and so are config, state, registry and the servicer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from datetime import UTC, datetime

import grpc
from google.protobuf.duration_pb2 import Duration

from smsgw.events.envelope import random_id
from smsgw.recent_rate import RecentRate
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import device_gateway_pb2 as dg

from ..carrier import CarrierReports, CarrierUnavailable, SubmitProgress, SubmitResult
from ..carrier_metrics import CarrierMetrics
from .config import AndroidCarrier
from .directory import Candidate, Presence, pick_phone
from .links import RelayAnswer, ReplicaLinks
from .outcomes import (
    PERMANENT_REJECTIONS,
    RADIO_DOWN_RESULTS,
    SendVerdict,
    account_mismatch_failure,
    carrier_message_id,
    delivery_of,
    device_rejected_failure,
    device_send_failure,
    media_not_supported_failure,
    result_name,
    send_verdict,
    validity_ended_failure,
)
from .registry import DeviceRegistry
from .state import Attempt, AttemptOutcome, DeviceConnection, DeviceState

log = logging.getLogger(__name__)

OK = dg.SmsManagerResult.SMS_MANAGER_RESULT_OK


def _expired(command: cp.DispatchCommand) -> bool:
    return command.HasField("expires_at") and command.expires_at.ToDatetime(tzinfo=UTC) <= datetime.now(UTC)


class AndroidCarrierClient:
    """The CarrierClient of one account's phones (see dispatcher.CarrierClient)."""

    # A phone that may hold a message keeps it (the attempt is resolved by what the phone reports),
    # so the dispatcher never fails a message for doubt here.
    in_doubt_policy = "retry"
    # A message goes to one phone of many, each taking its own; no bound of the carrier's own.
    concurrency = None

    @property
    def connected(self) -> bool:
        """A phone attached to this replica (phones on other replicas report from theirs)."""
        return any(device.connected for device in self.devices.values())

    def __init__(
        self,
        config: AndroidCarrier,
        reports: CarrierReports,
        registry: DeviceRegistry,
        *,
        remember: int = 10_000,
        radio_down_pause: float = 30.0,
        links: ReplicaLinks | None = None,
    ):
        self.name = config.name
        self.config = config
        self.account_id = config.account_id
        self.reports = reports
        self.registry = registry
        self.devices = {
            t.device_id: DeviceState(config.account_id, t.device_id, t.sim_slot) for t in config.device_tokens
        }
        self.radio_down_pause = radio_down_pause
        self._live: dict[str, Attempt] = {}  # message id -> its unresolved attempt
        self._completed: OrderedDict[str, SubmitResult] = OrderedDict()
        self._remember = remember
        # message id -> the phone that accepted it (or may have): it never goes to another phone.
        self._pins: OrderedDict[str, str] = OrderedDict()
        self.links = links
        self._report_tasks: set[asyncio.Task] = set()
        self._closed = False
        self._closing = asyncio.Event()  # ends relay calls in flight at once
        # For metrics(): counted where each thing happens, nowhere else.
        self._counts: Counter[str] = Counter()
        self._sent_rate = RecentRate()

    @property
    def closed(self) -> bool:
        return self._closed

    def holds_part_of(self, message_id: str) -> bool:
        return False  # one request per message: all of it or nothing

    def share_rate(self, share: float) -> None:
        """Phones pace themselves (each sends what its SIM allows); nothing to share."""

    async def start(self) -> None:
        self.registry.register(self)

    def add_device(self, device_id: str, sim_slot: int | None) -> DeviceState:
        """A phone given a token through the admin API (or the one of that id already here)."""
        device = self.devices.get(device_id)
        if device is None:
            device = self.devices[device_id] = DeviceState(self.account_id, device_id, sim_slot)
        return device

    async def close(self) -> None:
        """Ends every phone's stream (they reconnect, to another replica if there is one) and makes waiting
        and later submits raise CarrierUnavailable at once. Call it as soon as the service stops, before
        waiting for in-flight dispatches: they end then instead of after sent_timeout."""
        for device in self.devices.values():
            if device.connection is not None:
                device.connection.close(grpc.StatusCode.UNAVAILABLE, f"carrier {self.name} is shutting down; reconnect")
                device.connection = None
            # Published while the accepted messages are still here: other replicas keep them with their phone.
            self._presence_changed(device)
        self._closed = True
        self._closing.set()
        for device in self.devices.values():
            for attempt in list(device.attempts.values()):
                self._resolve(attempt, AttemptOutcome("lost", f"carrier {self.name} closed"))
        if self._report_tasks:
            await asyncio.wait(self._report_tasks, timeout=5.0)

    # submit --------------------------------------------------------------------------

    async def submit(self, command: cp.DispatchCommand, progress: SubmitProgress | None = None) -> SubmitResult:
        message_id = command.message_id
        if (refused := self._refusal(command)) is not None:
            return refused
        tried: set[str] = set()
        errors: list[str] = []
        for _ in range(2 * len(self.devices) + 2):
            if (done := self._completed.get(message_id)) is not None:
                return done
            if self._closed:
                raise CarrierUnavailable(f"{self.name}: the carrier is closing")
            attempt = self._live.get(message_id)
            pinned = None if attempt is not None else self._pinned_device(message_id)
            if attempt is not None:  # under way on a phone of this replica: wait for it
                device_id = attempt.device.device_id
                answer = await self._await_attempt(attempt, command)
            elif pinned is not None:  # accepted by a phone (maybe elsewhere): only that phone
                device_id = pinned
                answer = await self._submit_to_holder(command, pinned)
            else:
                if _expired(command):
                    return self._remember_result(
                        message_id,
                        SubmitResult(
                            failure=validity_ended_failure(self.name, "; ".join(errors) or "no phone took it in time")
                        ),
                    )
                candidate = self._pick(exclude=tried)
                if candidate is None:
                    break
                device_id = candidate.device_id
                answer = await self._try_phone(command, candidate)
            if answer.result is not None:
                return answer.result
            if self._closed:
                raise CarrierUnavailable(f"{self.name}: the carrier is closing")
            if answer.moved:
                continue  # follow the phone to the replica it moved to
            if answer.held:
                raise CarrierUnavailable(
                    answer.reason if answer.reason.startswith(f"{self.name}:") else f"{self.name}: {answer.reason}",
                    reason="DEVICE_HOLDS_MESSAGE",
                )
            if pinned is not None:
                self._unpin(message_id, pinned)  # the phone answered without holding it: free to go elsewhere
            tried.add(device_id)
            errors.append(answer.reason)
        if not self._reachable_phones():
            raise CarrierUnavailable(
                f"{self.name}: no phone of account {self.account_id} is connected (devices: {', '.join(self.devices)})",
                reason="NO_DEVICE",
            )
        raise CarrierUnavailable(
            f"{self.name}: no connected phone could send {message_id} now: {'; '.join(errors) or 'all tried'}",
            reason="DEVICE_UNAVAILABLE",
        )

    def _refusal(self, command: cp.DispatchCommand) -> SubmitResult | None:
        """A message this carrier can never send: another account's, or with media."""
        if command.account_id != self.account_id:
            return SubmitResult(failure=account_mismatch_failure(self.name, self.account_id, command.account_id))
        media = [url for url in getattr(command, "media_urls", ()) if url]
        if media:
            return SubmitResult(failure=media_not_supported_failure(self.name, len(media)))
        return None

    async def serve_relay(self, command: cp.DispatchCommand, device_id: str, caller: str = "") -> RelayAnswer:
        """DeviceRelayService.Submit: another replica asks this one to send through a phone connected here.
        This replica owns the attempt; an accepted message stays with its phone (answered as held)."""
        message_id = command.message_id
        if (refused := self._refusal(command)) is not None:
            return RelayAnswer(result=refused)
        if (done := self._completed.get(message_id)) is not None:
            return RelayAnswer(result=done)
        attempt = self._live.get(message_id)
        if attempt is None:
            if self._closed:
                return RelayAnswer(reason=f"{self.name}: this replica is closing", not_connected=True)
            device = self.devices.get(device_id)
            if device is None or not device.connected:
                return RelayAnswer(
                    reason=f"phone {device_id} is not connected to replica "
                    f"{self.links.replica_id if self.links else '?'}",
                    not_connected=True,
                )
            if _expired(command):
                return RelayAnswer(
                    result=self._remember_result(
                        message_id, SubmitResult(failure=validity_ended_failure(self.name, "no phone took it in time"))
                    )
                )
            attempt = self._dispatch(device, command)
            log.debug("%s: %s -> phone %s for replica %s", self.name, message_id, device_id, caller or "?")
        return await self._await_attempt(attempt, command)

    async def _await_attempt(self, attempt: Attempt, command: cp.DispatchCommand) -> RelayAnswer:
        """Waits for an attempt on a phone of this replica and says what it gave."""
        try:
            await self._settle(attempt, command)
        except CarrierUnavailable as exc:  # accepted, no report yet: it stays with that phone
            return RelayAnswer(reason=str(exc), held=True)
        if (done := self._completed.get(attempt.message_id)) is not None:
            return RelayAnswer(result=done)
        outcome = attempt.outcome.result()
        return RelayAnswer(
            reason=outcome.detail,
            moved=outcome.kind == "moved",
            held=outcome.kind == "moved" or (outcome.kind == "lost" and attempt.accepted),
            radio_down=outcome.kind == "failed" and outcome.result in RADIO_DOWN_RESULTS,
        )

    async def _try_phone(self, command: cp.DispatchCommand, candidate: Candidate) -> RelayAnswer:
        device = self.devices[candidate.device_id]
        if candidate.presence is None:
            return await self._await_attempt(self._dispatch(device, command), command)
        return await self._relay(command, device, candidate.presence)

    async def _submit_to_holder(self, command: cp.DispatchCommand, device_id: str) -> RelayAnswer:
        """A message pinned to a phone goes to that phone wherever it is connected now, or waits for it.
        Sending it to the same phone again is safe: the phone dedupes on message id."""
        device = self.devices[device_id]
        if device.connected:
            return await self._await_attempt(self._dispatch(device, command), command)
        presence = self._remote_presence(device_id)
        if presence is not None:
            answer = await self._relay(command, device, presence)
            if answer.result is None and (answer.not_connected or answer.unreachable):
                return RelayAnswer(
                    reason=f"phone {device_id} holds {command.message_id} and its replica "
                    f"cannot be reached ({answer.reason}); waiting for it",
                    held=True,
                )
            return answer
        if _expired(command):
            return RelayAnswer(
                result=self._remember_result(
                    command.message_id,
                    SubmitResult(
                        failure=validity_ended_failure(
                            self.name, f"phone {device_id} accepted it but never reported sending it (unconfirmed)"
                        )
                    ),
                )
            )
        return RelayAnswer(
            reason=f"phone {device_id} holds {command.message_id} (accepted) and is connected to no "
            f"replica; waiting for it (it is never handed to another phone)",
            held=True,
        )

    async def _relay(self, command: cp.DispatchCommand, device: DeviceState, presence: Presence) -> RelayAnswer:
        """Sends through a phone another replica holds; that replica answers once the phone reported."""
        message_id = command.message_id
        assert self.links is not None  # only phones another replica holds are relayed to
        device.relaying += 1
        device.last_dispatch = time.monotonic()
        call = asyncio.ensure_future(
            self.links.relay.submit(
                presence.replica_address,
                command,
                device.device_id,
                presence.session_id,
                timeout=self.config.ack_timeout + self.config.sent_timeout,
            )
        )
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({call, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            device.relaying -= 1
            closing.cancel()
            if not call.done():
                call.cancel()
        if not call.done() or call.cancelled():
            # Shutting down mid-call: the phone may have accepted it; the next owner's retry finds out.
            return RelayAnswer(reason=f"{self.name}: closing while phone {device.device_id} was trying it", held=True)
        answer = call.result()
        if answer.result is not None:
            self._remember_result(message_id, answer.result)
        elif answer.held:
            self._pin(message_id, device.device_id)
        if answer.radio_down:
            device.radio_down_until = time.monotonic() + self.radio_down_pause
        log.debug(
            "%s: %s relayed to phone %s at %s: %s",
            self.name,
            message_id,
            device.device_id,
            presence.replica_address,
            "answered" if answer.result else answer.reason,
        )
        return answer

    async def _settle(self, attempt: Attempt, command: cp.DispatchCommand) -> None:
        """Waits until the attempt is resolved; raises CarrierUnavailable when an accepted one stays silent."""
        if not attempt.progress.is_set():
            # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancellation (a stop) that
            # arrives with the phone's answer, and the attempt would wait on for its outcome.
            try:
                async with asyncio.timeout(self.config.ack_timeout):
                    await attempt.progress.wait()
            except TimeoutError:
                if not attempt.progress.is_set():
                    self._abandon(
                        attempt,
                        f"phone {attempt.device.device_id} did not accept within {self.config.ack_timeout:g}s",
                        cancel=True,
                    )
                    return
        if attempt.resolved:
            return
        try:
            async with asyncio.timeout(self.config.sent_timeout):
                await asyncio.shield(attempt.outcome)
        except TimeoutError:
            device = attempt.device.device_id
            if _expired(command):
                self._abandon(attempt, "validity ended while waiting")
                self._remember_result(
                    attempt.message_id,
                    SubmitResult(
                        failure=validity_ended_failure(
                            self.name, f"phone {device} accepted it but never reported sending it (unconfirmed)"
                        )
                    ),
                )
                return
            raise CarrierUnavailable(
                f"{self.name}: phone {device} accepted {attempt.message_id} but reported no send result within "
                f"{self.config.sent_timeout:g}s; waiting for it (it is never handed to another phone)",
                reason="DEVICE_HOLDS_MESSAGE",
            ) from None

    def _pick(self, exclude: set[str]) -> Candidate | None:
        """Among this replica's phones and those other replicas hold (directory.pick_phone)."""
        now = time.monotonic()
        candidates = [
            Candidate(d.device_id, d.outstanding, d.radio_down_until > now, d.last_dispatch)
            for d in self.devices.values()
            if d.connected and d.device_id not in exclude
        ]
        for presence in self._reachable_elsewhere():
            device = self.devices[presence.device_id]
            if device.device_id not in exclude:
                # What the holder last published, plus what this replica has sent there since.
                candidates.append(
                    Candidate(
                        device.device_id,
                        presence.outstanding + device.relaying,
                        device.radio_down_until > now,
                        device.last_dispatch,
                        presence,
                    )
                )
        return pick_phone(candidates)

    def _reachable_elsewhere(self) -> list[Presence]:
        """Phones of this carrier connected to other replicas (fresh presence), and not to this one."""
        if self.links is None:
            return []
        return [
            p
            for p in self.links.directory.reachable(self.account_id, time.time())
            if p.carrier == self.name
            and p.replica_id != self.links.replica_id
            and p.device_id in self.devices
            and not self.devices[p.device_id].connected
        ]

    def _reachable_phones(self) -> list[str]:
        return [d.device_id for d in self.devices.values() if d.connected] + [
            p.device_id for p in self._reachable_elsewhere()
        ]

    def _remote_presence(self, device_id: str) -> Presence | None:
        return next((p for p in self._reachable_elsewhere() if p.device_id == device_id), None)

    # pins: which phone holds which accepted message ------------------------------------

    def _pinned_device(self, message_id: str) -> str | None:
        """The phone a message must stay with: one this replica saw accept it (or may have, through a relay
        whose answer was lost), or one another replica published as holding it."""
        if (device_id := self._pins.get(message_id)) is not None:
            return device_id
        if self.links is not None:
            holder = self.links.directory.holder_of(self.account_id, message_id)
            if (
                holder is not None
                and holder.carrier == self.name
                and holder.device_id in self.devices
                and holder.replica_id != self.links.replica_id
            ):
                return holder.device_id
        return None

    def _pin(self, message_id: str, device_id: str) -> None:
        self._pins[message_id] = device_id
        self._pins.move_to_end(message_id)
        while len(self._pins) > self._remember:
            self._pins.popitem(last=False)

    def _unpin(self, message_id: str, device_id: str | None = None) -> None:
        if device_id is None or self._pins.get(message_id) == device_id:
            self._pins.pop(message_id, None)

    def _dispatch(self, device: DeviceState, command: cp.DispatchCommand) -> Attempt:
        send = dg.SendCommand(
            attempt_id=random_id(),
            message_id=command.message_id,
            to=command.to,
            body=command.content.text,
            segments=max(1, command.segments),
            delivery_report=True,
        )
        if device.sim_slot is not None:
            send.preferred_sim_slot = device.sim_slot
        if command.HasField("expires_at"):
            send.expires_at.CopyFrom(command.expires_at)
            left = command.expires_at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)
            send.validity.CopyFrom(Duration(seconds=max(0, int(left.total_seconds()))))
        attempt = Attempt(device, command.message_id, send.attempt_id)
        device.attempts[command.message_id] = attempt
        self._live[command.message_id] = attempt
        device.last_dispatch = time.monotonic()
        connection = device.connection
        assert connection is not None  # chosen among connected phones, in this same step
        connection.write(dg.ConnectResponse(send=send))
        self._counts["commands_sent"] += 1
        log.debug("%s: %s -> phone %s (attempt %s)", self.name, command.message_id, device.device_id, send.attempt_id)
        return attempt

    def _abandon(self, attempt: Attempt, detail: str, cancel: bool = False) -> None:
        if cancel and attempt.connection is not None:
            attempt.connection.write(
                dg.ConnectResponse(cancel=dg.CancelSend(attempt_id=attempt.attempt_id, message_id=attempt.message_id))
            )
        self._resolve(attempt, AttemptOutcome("lost", detail))

    def _resolve(self, attempt: Attempt, outcome: AttemptOutcome) -> None:
        if attempt.resolved:
            return
        attempt.outcome.set_result(outcome)
        attempt.progress.set()
        self._counts[self._counter_of(outcome)] += 1
        if outcome.kind == "sent":
            self._sent_rate.mark()
        device, message_id = attempt.device, attempt.message_id
        if device.attempts.get(message_id) is attempt:
            del device.attempts[message_id]
        if self._live.get(message_id) is attempt:
            del self._live[message_id]
        if outcome.kind == "sent":
            self._remember_result(
                message_id,
                SubmitResult(
                    carrier_ids=tuple(
                        carrier_message_id(device.device_id, message_id, i) for i in range(outcome.part_count)
                    )
                ),
            )
        elif outcome.kind == "failed":
            if send_verdict(outcome.result) is SendVerdict.PERMANENT:
                self._remember_result(
                    message_id,
                    SubmitResult(
                        failure=device_send_failure(self.name, device.device_id, outcome.result, outcome.error_code)
                    ),
                )
            else:
                self._unpin(message_id, device.device_id)  # the phone tried and failed: it holds nothing
                if outcome.result in RADIO_DOWN_RESULTS:
                    device.radio_down_until = time.monotonic() + self.radio_down_pause
        elif outcome.kind == "rejected":
            if outcome.reason in PERMANENT_REJECTIONS:
                self._remember_result(
                    message_id,
                    SubmitResult(
                        failure=device_rejected_failure(self.name, device.device_id, outcome.reason, outcome.note)
                    ),
                )
            else:
                self._unpin(message_id, device.device_id)
        self._presence_changed(device)

    def _remember_result(self, message_id: str, result: SubmitResult) -> SubmitResult:
        """Final answers are kept (bounded) so a repeated submit of the message gets the same one, never a resend."""
        self._unpin(message_id)
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
        if device.hello is not None:
            self._counts["reconnects"] += 1  # attached before: every attach after the first
        device.connection = connection
        device.hello = hello
        device.last_connected_at = connection.connected_at
        for message_id in hello.pending_message_ids:
            live = self._live.get(message_id)
            if live is None:
                attempt = Attempt(device, message_id, "", adopted=True)
                device.attempts[message_id] = attempt
                self._live[message_id] = attempt
                self._pin(message_id, device.device_id)
            elif live.device is device:
                live.accepted = True
                live.progress.set()
            else:
                log.warning(
                    "%s: phone %s says it holds %s, which is now with phone %s: it may be sent twice",
                    self.name,
                    device.device_id,
                    message_id,
                    live.device.device_id,
                )
        log.info(
            "%s: phone %s connected from %s (app %s, %d SIM(s), %d pending)",
            self.name,
            device.device_id,
            connection.peer,
            hello.app_version or "?",
            len(hello.sim_slots),
            len(hello.pending_message_ids),
        )
        self._presence_changed(device)

    def detach(self, device: DeviceState, connection: DeviceConnection) -> None:
        if device.connection is not connection:
            return
        device.connection = None
        released = self._release_unaccepted(device, connection, "it disconnected before accepting")
        log.info(
            "%s: phone %s disconnected (%d unaccepted message(s) released, %d accepted kept)",
            self.name,
            device.device_id,
            released,
            len(device.attempts),
        )
        self._presence_changed(device)

    def on_presence(self, presence: Presence) -> None:
        """Another replica published one of this carrier's phones. When it is a newer session than this
        replica's, the phone moved: a stream still open here is a leftover (closed, as when a device connects
        twice), and what the phone accepted went with it ("moved": waiting submits follow it there)."""
        if self.links is None or presence.carrier != self.name or presence.replica_id == self.links.replica_id:
            return
        device = self.devices.get(presence.device_id)
        if device is None or not presence.connected or presence.connected_at <= device.last_connected_at:
            return
        if device.connection is not None:
            device.connection.close(
                grpc.StatusCode.ABORTED,
                f"device {device.device_id} connected to another replica; this stream is replaced",
            )
        for attempt in [a for a in device.attempts.values() if a.accepted]:
            self._resolve(
                attempt,
                AttemptOutcome("moved", f"phone {device.device_id} reconnected to replica {presence.replica_id}"),
            )

    def _presence_changed(self, device: DeviceState) -> None:
        """Other replicas learn where the phone is and which messages it holds (presence.py)."""
        if self.links is not None and self.links.presence is not None and not self._closed:
            self.links.presence.changed(self, device)

    def _release_unaccepted(self, device: DeviceState, connection: DeviceConnection, why: str) -> int:
        released = [a for a in device.attempts.values() if not a.accepted and a.connection is connection]
        for attempt in released:
            self._resolve(attempt, AttemptOutcome("lost", f"phone {device.device_id}: {why}"))
        self._counts["redispatches"] += len(released)
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
                log.warning(
                    "%s: phone %s accepted %s (attempt %s) after it was taken back: it may be sent twice",
                    self.name,
                    device.device_id,
                    frame.message_id,
                    frame.attempt_id,
                )
            return
        if not attempt.accepted:
            self._counts["commands_accepted"] += 1
            self._pin(attempt.message_id, device.device_id)
            self._presence_changed(device)
        attempt.accepted = True
        attempt.progress.set()

    def _on_rejected(self, device: DeviceState, frame: dg.SendRejected) -> None:
        attempt = self._attempt_for(device, frame.message_id, frame.attempt_id)
        if attempt is not None:
            reason = (
                dg.SendRejectReason.Name(frame.reason)
                if frame.reason in dg.SendRejectReason.values()
                else str(frame.reason)
            )
            self._resolve(
                attempt,
                AttemptOutcome(
                    "rejected",
                    f"phone {device.device_id} rejected it: {reason} {frame.detail}".rstrip(),
                    reason=frame.reason,
                    note=frame.detail,
                ),
            )

    def _on_sent(self, device: DeviceState, frame: dg.SendResult) -> None:
        attempt = self._attempt_for(device, frame.message_id, frame.attempt_id)
        if attempt is None:
            log.info(
                "%s: phone %s reported %s for %s part %d, no longer waited for",
                self.name,
                device.device_id,
                result_name(frame.result),
                frame.message_id,
                frame.part_index,
            )
            return
        if not attempt.accepted:
            self._pin(attempt.message_id, device.device_id)
        attempt.accepted = True
        attempt.parts[frame.part_index] = frame
        if frame.result != OK:
            self._resolve(
                attempt,
                AttemptOutcome(
                    "failed",
                    f"phone {device.device_id}: {result_name(frame.result)}"
                    + (f" (radio error {frame.error_code})" if frame.error_code else ""),
                    result=frame.result,
                    error_code=frame.error_code,
                ),
            )
            return
        part_count = max(1, *(p.part_count for p in attempt.parts.values()))
        if all(i in attempt.parts for i in range(part_count)):
            self._resolve(attempt, AttemptOutcome("sent", f"sent by phone {device.device_id}", part_count=part_count))
        else:
            attempt.progress.set()

    async def _on_delivery(self, device: DeviceState, connection: DeviceConnection, frame: dg.DeliveryReport) -> None:
        self._counts["receipts"] += 1
        state, carrier_state, error = delivery_of(frame.format, frame.status)
        cid = carrier_message_id(device.device_id, frame.message_id, frame.part_index)
        await self.reports.on_receipt(self.name, cid, state, carrier_state, error)
        connection.write(dg.ConnectResponse(report_ack=dg.ReportAck(report_ids=[frame.report_id])))

    async def _on_received(self, device: DeviceState, connection: DeviceConnection, frame: dg.ReceivedSms) -> None:
        self._counts["inbound"] += 1
        destination = frame.to or device.number_of_slot(frame.sim_slot)
        await self.reports.on_inbound(
            self.name, getattr(frame, "from"), destination, frame.body, parts=max(1, frame.parts)
        )
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
            log.error(
                "%s: a phone report could not be recorded; the phone will repeat it",
                self.name,
                exc_info=task.exception(),
            )

    # metrics --------------------------------------------------------------------------

    _THROTTLING_RESULTS = frozenset({dg.SmsManagerResult.SMS_MANAGER_RESULT_ERROR_LIMIT_EXCEEDED})
    _THROTTLING_REJECTIONS = frozenset({dg.SendRejectReason.SEND_REJECT_REASON_BUSY})

    @classmethod
    def _counter_of(cls, outcome: AttemptOutcome) -> str:
        """The counter an attempt's end moves: Android's send limit and a full phone queue are throttling."""
        if outcome.kind == "sent":
            return "sends_ok"
        if outcome.kind == "lost":
            return "commands_lost"
        if outcome.kind == "moved":
            return "moved_to_another_replica"
        if (outcome.kind == "failed" and outcome.result in cls._THROTTLING_RESULTS) or (
            outcome.kind == "rejected" and outcome.reason in cls._THROTTLING_REJECTIONS
        ):
            return "throttled"
        return "send_failures"

    def metrics(self) -> CarrierMetrics:
        """A session per configured phone (up while its stream is attached); in flight: messages the phones
        hold without a final report; TPS: messages the phones reported sent, per second."""
        counts = self._counts
        return CarrierMetrics(
            kind="android",
            sessions={device_id: d.connected for device_id, d in self.devices.items()},
            current_tps=self._sent_rate.per_second(),
            in_flight=sum(d.outstanding for d in self.devices.values()),
            submits=counts["commands_sent"],
            submit_failures=counts["send_failures"],
            throttled=counts["throttled"],
            reconnects=counts["reconnects"],
            receipts=counts["receipts"],
            inbound=counts["inbound"],
            extra_counters={
                name: counts[name] for name in ("commands_accepted", "sends_ok", "commands_lost", "redispatches")
            },
        )


# --- the gRPC service -----------------------------------------------------------------
