"""A simulated Android gateway phone: speaks smsgw.v1.DeviceGatewayService like the app.

It behaves as the app must (docs/android-gateway.md): it accepts a command before
sending, dedupes on message id (a repeated command is answered from what it knows,
never sent twice), keeps every report in an outbox until the server acknowledges it
and writes the outbox again after each hello, and lists in hello the messages it
accepted whose results the server has not acknowledged yet. Its "radio" keeps working
while the stream is down, like a phone that lost its data connection but not its
cellular service.

What the radio answers is switchable per destination (regular expressions, first match
wins): the sent result (an SmsManager result code), the delivery status (TP-Status),
a rejection; plus delays, and a flag to stop accepting commands.

Over 500 lines on purpose: a stand-alone simulator of the app's side of one protocol (stream,
outbox, radio, switchable answers), development and tests only.

Run standalone (reconnects until SIGINT/SIGTERM):

    python -m smsgw_dev.simulators.android_device --server 127.0.0.1:16053 --token T --device-id D
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import grpc

from smsgw.v1 import device_gateway_pb2 as dg
from smsgw.v1 import device_gateway_pb2_grpc as dg_grpc

__all__ = ["AndroidDeviceSimulator", "main"]

_log = logging.getLogger(__name__)

TOKEN_METADATA = "x-smsgw-device-token"
OK = dg.SmsManagerResult.SMS_MANAGER_RESULT_OK
TP_STATUS_DELIVERED = 0x00


def _first_match(rules: list[tuple[re.Pattern, int]], destination: str, default: int | None) -> int | None:
    for pattern, value in rules:
        if pattern.search(destination):
            return value
    return default


def _compile(rules: Mapping[str, int] | None) -> list[tuple[re.Pattern, int]]:
    return [(re.compile(p), int(v)) for p, v in (rules or {}).items()]


@dataclass
class _Job:
    """A command the phone accepted: what it did with it and which reports are still unacknowledged."""

    command: dg.SendCommand
    attempt_id: str
    started: bool = False
    canceled: bool = False
    results: list[dg.SendResult] = field(default_factory=list)
    done: bool = False  # every part has a sent result
    unacked_results: set[str] = field(default_factory=set)

    @property
    def pending(self) -> bool:
        return not self.done or bool(self.unacked_results)


async def _raise_final_status(call) -> None:
    """Raises the status the server ended the call with, if it was not OK."""
    code = await call.code()
    if code != grpc.StatusCode.OK:
        raise grpc.aio.AioRpcError(
            code, await call.initial_metadata(), await call.trailing_metadata(), details=await call.details()
        )


class AndroidDeviceSimulator:
    def __init__(
        self,
        server: str,
        token: str,
        device_id: str,
        *,
        app_version: str = "simulator",
        phone_number: str = "",
        results: Mapping[str, int] | None = None,
        deliveries: Mapping[str, int] | None = None,
        rejections: Mapping[str, int] | None = None,
        send_delay: float = 0.0,
        delivery_delay: float = 0.05,
        ack: bool = True,
        token_in_metadata: bool = True,
        keepalive_interval: float = 15.0,
        tls_ca: bytes | None = None,
    ):
        self.server = server
        self.token = token
        self.device_id = device_id
        self.app_version = app_version
        self.phone_number = phone_number
        self.results = _compile(results)  # destination regex -> SmsManagerResult (default RESULT_OK)
        self.deliveries = _compile(deliveries)  # destination regex -> TP-Status (default 0x00, delivered)
        self.rejections = _compile(rejections)  # destination regex -> SendRejectReason
        self.send_delay = send_delay
        self.delivery_delay = delivery_delay
        self.ack = ack  # False: record commands, never answer them
        self.token_in_metadata = token_in_metadata
        self.keepalive_interval = keepalive_interval
        #: The CA of the server's certificate when its port speaks TLS; None: plaintext.
        self.tls_ca = tls_ca
        self.send_gate = asyncio.Event()  # clear it to hold sends (accepted, not yet sent)
        self.send_gate.set()

        self.received: list[dg.SendCommand] = []  # every command, in arrival order, repeats included
        self.sent: list[str] = []  # message ids the radio sent (RESULT_OK), once each
        self.canceled: list[str] = []
        self.welcome: dg.DeviceWelcome | None = None
        self.pings = 0
        self.connections = 0
        self.end_status: tuple[grpc.StatusCode, str] | None = None  # how the last stream ended
        self.disconnected = asyncio.Event()
        self.disconnected.set()

        self._jobs: dict[str, _Job] = {}
        self._outbox: dict[str, dg.ConnectRequest] = {}  # report id -> frame, until acknowledged
        self._mo_acked: dict[str, asyncio.Event] = {}
        self._channel: grpc.aio.Channel | None = None
        self._call = None
        self._write_lock = asyncio.Lock()
        self._stream_tasks: list[asyncio.Task] = []
        self._radio_tasks: set[asyncio.Task] = set()

    # -- the stream ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return not self.disconnected.is_set()

    def received_ids(self) -> list[str]:
        return [c.message_id for c in self.received]

    def pending_message_ids(self) -> list[str]:
        return [mid for mid, job in self._jobs.items() if job.pending]

    async def connect(self, timeout: float = 5.0) -> dg.DeviceWelcome:
        """Opens the stream and waits for welcome. Raises grpc.aio.AioRpcError if refused (e.g. UNAUTHENTICATED)."""
        if self.connected and self.welcome is not None:
            return self.welcome
        self._channel = (
            grpc.aio.insecure_channel(self.server)
            if self.tls_ca is None
            else grpc.aio.secure_channel(self.server, grpc.ssl_channel_credentials(self.tls_ca))
        )
        metadata = ((TOKEN_METADATA, self.token),) if self.token_in_metadata else ()
        call = dg_grpc.DeviceGatewayServiceStub(self._channel).Connect(metadata=metadata)
        hello = dg.DeviceHello(
            device_token=self.token,
            device_id=self.device_id,
            app_version=self.app_version,
            android_sdk_int=34,
            pending_message_ids=self.pending_message_ids(),
        )
        hello.sim_slots.add(slot_index=0, subscription_id=1, carrier_name="Simulated", phone_number=self.phone_number)
        try:
            async with asyncio.timeout(timeout):
                if self.token_in_metadata:
                    # The server checks a metadata token before reading anything and answers with
                    # headers when it passes. Writing hello before that races a refusal: gRPC then
                    # reports the failed write (INTERNAL) instead of the server's UNAUTHENTICATED.
                    await call.initial_metadata()
                    if call.done():
                        await _raise_final_status(call)
                try:
                    await call.write(dg.ConnectRequest(hello=hello))
                except grpc.aio.AioRpcError:
                    # The server can end the call before the hello goes out (a token in metadata is
                    # checked first); then its status, not the failed write, is the answer.
                    await _raise_final_status(call)
                    raise
                first = await call.read()
                if first is grpc.aio.EOF:
                    await _raise_final_status(call)
                    raise ConnectionError("the server ended the stream without a welcome")
        except BaseException:
            call.cancel()
            await self._channel.close()
            self._channel = None
            raise
        self.welcome = first.welcome
        self._call = call
        self.connections += 1
        self.end_status = None
        self.disconnected.clear()
        self._stream_tasks = [asyncio.create_task(self._read_loop(call)), asyncio.create_task(self._keepalive_loop())]
        for frame in list(self._outbox.values()):  # reports the server has not acknowledged yet
            await self._write(frame)
        return self.welcome

    async def disconnect(self) -> None:
        """Drops the stream, as a phone losing its data connection; the radio keeps going."""
        call, channel = self._call, self._channel
        self._call, self._channel = None, None
        self.disconnected.set()
        for task in self._stream_tasks:
            task.cancel()
        await asyncio.gather(*self._stream_tasks, return_exceptions=True)
        self._stream_tasks = []
        if call is not None:
            call.cancel()
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        await self.disconnect()
        for task in list(self._radio_tasks):
            task.cancel()
        await asyncio.gather(*self._radio_tasks, return_exceptions=True)

    async def _read_loop(self, call) -> None:
        try:
            while True:
                frame = await call.read()
                if frame is grpc.aio.EOF:
                    break
                await self._on_frame(frame)
            self.end_status = (await call.code(), await call.details())
        except grpc.aio.AioRpcError as error:
            self.end_status = (error.code(), error.details())
        except asyncio.CancelledError:
            raise
        finally:
            if self._call is call:
                self.disconnected.set()
        if self.end_status:
            _log.info("device %s: stream ended %s %s", self.device_id, self.end_status[0].name, self.end_status[1])

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_interval)
            keepalive = dg.DeviceKeepalive()
            keepalive.sent_at.GetCurrentTime()
            await self._write(dg.ConnectRequest(keepalive=keepalive))

    async def _write(self, frame: dg.ConnectRequest) -> bool:
        call = self._call
        if call is None or not self.connected:
            return False
        try:
            async with self._write_lock:
                await call.write(frame)
            return True
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, RuntimeError) as error:
            _log.debug("device %s: write failed: %r", self.device_id, error)
            return False

    async def _on_frame(self, frame: dg.ConnectResponse) -> None:
        kind = frame.WhichOneof("frame")
        if kind == "send":
            await self._on_send(frame.send)
        elif kind == "ping":
            self.pings += 1
            keepalive = dg.DeviceKeepalive(ping_id=frame.ping.ping_id)
            keepalive.sent_at.GetCurrentTime()
            await self._write(dg.ConnectRequest(keepalive=keepalive))
        elif kind == "report_ack":
            for report_id in frame.report_ack.report_ids:
                self._on_report_acked(report_id)
        elif kind == "cancel":
            job = self._jobs.get(frame.cancel.message_id)
            if job is not None and not job.started:
                job.canceled = True
                del self._jobs[frame.cancel.message_id]
            self.canceled.append(frame.cancel.message_id)

    def _on_report_acked(self, report_id: str) -> None:
        self._outbox.pop(report_id, None)
        for job in self._jobs.values():
            job.unacked_results.discard(report_id)
        if report_id in self._mo_acked:
            self._mo_acked[report_id].set()

    # -- the phone's behaviour -------------------------------------------------------

    async def _on_send(self, command: dg.SendCommand) -> None:
        self.received.append(command)
        if not self.ack:
            return
        job = self._jobs.get(command.message_id)
        if job is not None:  # already accepted once: answer from what we know, never send again
            job.attempt_id = command.attempt_id
            await self._write(
                dg.ConnectRequest(
                    accepted=dg.SendAccepted(attempt_id=command.attempt_id, message_id=command.message_id)
                )
            )
            for result in list(job.results):
                await self._report_sent(job, self._copy_result(result, command.attempt_id))
            return
        reason = _first_match(self.rejections, command.to, None)
        if reason is None and command.HasField("expires_at") and command.expires_at.ToNanoseconds() <= time.time_ns():
            reason = dg.SendRejectReason.SEND_REJECT_REASON_EXPIRED
        if reason is not None:
            await self._write(
                dg.ConnectRequest(
                    rejected=dg.SendRejected(
                        attempt_id=command.attempt_id,
                        message_id=command.message_id,
                        reason=cast("dg.SendRejectReason", reason),
                        detail="simulated rejection",
                    )
                )
            )
            return
        job = _Job(command=command, attempt_id=command.attempt_id)
        self._jobs[command.message_id] = job
        await self._write(
            dg.ConnectRequest(accepted=dg.SendAccepted(attempt_id=command.attempt_id, message_id=command.message_id))
        )
        task = asyncio.create_task(self._radio(job))
        self._radio_tasks.add(task)
        task.add_done_callback(self._radio_tasks.discard)

    async def _radio(self, job: _Job) -> None:
        await self.send_gate.wait()
        if self.send_delay:
            await asyncio.sleep(self.send_delay)
        if job.canceled:
            return
        job.started = True
        command = job.command
        result = _first_match(self.results, command.to, OK)
        parts = max(1, command.segments)
        if result == OK:
            # Recorded before the results are reported: a reader that saw the gateway take the
            # result must also see it here (the report's write can yield to that reader first).
            self.sent.append(command.message_id)
        for index in range(parts if result == OK else 1):
            frame = dg.SendResult(
                report_id=str(uuid.uuid4()),
                attempt_id=job.attempt_id,
                message_id=command.message_id,
                part_index=index,
                part_count=parts,
                result=cast("dg.SmsManagerResult", result),
                sim_slot=command.preferred_sim_slot if command.HasField("preferred_sim_slot") else 0,
            )
            frame.sent_at.GetCurrentTime()
            job.results.append(frame)
            await self._report_sent(job, frame)
        job.done = True
        if result != OK:
            return
        if not command.delivery_report:
            return
        await asyncio.sleep(self.delivery_delay)
        status = _first_match(self.deliveries, command.to, TP_STATUS_DELIVERED)
        for index in range(parts):
            report = dg.DeliveryReport(
                report_id=str(uuid.uuid4()),
                attempt_id=job.attempt_id,
                message_id=command.message_id,
                part_index=index,
                format="3gpp",
                status=status,
            )
            report.reported_at.GetCurrentTime()
            await self._report(dg.ConnectRequest(delivery=report))

    @staticmethod
    def _copy_result(result: dg.SendResult, attempt_id: str) -> dg.SendResult:
        copy = dg.SendResult()
        copy.CopyFrom(result)
        copy.attempt_id = attempt_id
        copy.report_id = str(uuid.uuid4())
        return copy

    async def _report_sent(self, job: _Job, frame: dg.SendResult) -> None:
        job.unacked_results.add(frame.report_id)
        await self._report(dg.ConnectRequest(sent=frame))

    async def _report(self, frame: dg.ConnectRequest) -> None:
        report_id = getattr(frame, frame.WhichOneof("frame")).report_id
        self._outbox[report_id] = frame
        await self._write(frame)

    async def send_mo(
        self, source: str, body: str, to: str = "", sim_slot: int = 0, wait_ack: float | None = 5.0
    ) -> str:
        """The phone received an SMS. Returns its report id; waits (bounded) for the server's ack unless wait_ack is None."""
        received = dg.ReceivedSms(report_id=str(uuid.uuid4()), to=to, body=body, sim_slot=sim_slot, parts=1)
        setattr(received, "from", source)
        received.received_at.GetCurrentTime()
        acked = self._mo_acked[received.report_id] = asyncio.Event()
        await self._report(dg.ConnectRequest(received=received))
        if wait_ack is not None:
            await asyncio.wait_for(acked.wait(), wait_ack)
        return received.report_id

    @property
    def outbox(self) -> int:
        return len(self._outbox)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Polls a condition (bounded in time)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)

    async def run(
        self,
        stop: asyncio.Event,
        on_ready: Callable[[dg.DeviceWelcome], None] | None = None,
        backoff_min: float = 0.5,
        backoff_max: float = 10.0,
    ) -> None:
        """Connects and stays connected (reconnecting with backoff) until `stop` is set.
        A refused token (UNAUTHENTICATED) is raised: retrying cannot fix it."""
        delay = backoff_min
        ready = False
        while not stop.is_set():
            try:
                welcome = await self.connect()
            except (grpc.aio.AioRpcError, ConnectionError, TimeoutError) as error:
                if isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.UNAUTHENTICATED:
                    raise
                _log.warning(
                    "device %s: cannot connect to %s (%s); retrying in %.1fs",
                    self.device_id,
                    self.server,
                    error.details() if isinstance(error, grpc.aio.AioRpcError) else error,
                    delay,
                )
            else:
                delay = backoff_min
                if not ready and on_ready is not None:
                    on_ready(welcome)
                ready = True
                await _wait_any(stop, self.disconnected)
                if stop.is_set():
                    break
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, backoff_max)
        await self.close()


async def _wait_any(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _rules(values: list[str], parse: Callable[[str], int]) -> dict[str, int]:
    rules = {}
    for item in values:
        pattern, sep, value = item.rpartition("=")
        if not sep or not pattern:
            raise SystemExit(f"expected PATTERN=VALUE, got {item!r}")
        rules[pattern] = parse(value)
    return rules


def _result_code(text: str) -> int:
    name = text.strip().upper()
    try:
        return int(name, 0)
    except ValueError:
        pass
    try:
        return dg.SmsManagerResult.Value("SMS_MANAGER_" + name.removeprefix("SMS_MANAGER_"))
    except ValueError:
        raise SystemExit(f"unknown SmsManager result {text!r} (e.g. RESULT_ERROR_NO_SERVICE or a number)") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m smsgw_dev.simulators.android_device", description="A simulated Android gateway phone."
    )
    parser.add_argument("--server", required=True, help="host:port of the carrier-adapter's gRPC server")
    parser.add_argument("--token", required=True, help="the device token (carrier config device_tokens)")
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--phone-number", default="", help="this SIM's E.164 number (destination of MO)")
    parser.add_argument(
        "--result",
        action="append",
        default=[],
        metavar="REGEX=RESULT",
        help="sent result for destinations matching REGEX, e.g. '^\\+1415555066=RESULT_ERROR_NO_SERVICE'",
    )
    parser.add_argument(
        "--delivery",
        action="append",
        default=[],
        metavar="REGEX=TP_STATUS",
        help="delivery TP-Status for matching destinations, e.g. '^\\+1415555067=0x46'",
    )
    parser.add_argument("--send-delay", type=float, default=0.0)
    parser.add_argument("--delivery-delay", type=float, default=0.5)
    parser.add_argument("--no-ack", action="store_true", help="never accept commands (they time out on the server)")
    parser.add_argument(
        "--tls-ca",
        default="",
        help="PEM file of the CA the server's certificate chains to (the server's port speaks TLS); default: plaintext",
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        device = AndroidDeviceSimulator(
            args.server,
            args.token,
            args.device_id,
            phone_number=args.phone_number,
            results=_rules(args.result, _result_code),
            deliveries=_rules(args.delivery, lambda v: int(v, 0)),
            send_delay=args.send_delay,
            delivery_delay=args.delivery_delay,
            ack=not args.no_ack,
            tls_ca=Path(args.tls_ca).read_bytes() if args.tls_ca else None,
        )

        def ready(welcome: dg.DeviceWelcome) -> None:
            print(
                f"android-device {args.device_id} connected to {args.server} (session {welcome.session_id})", flush=True
            )

        try:
            await device.run(stop, on_ready=ready)
        except grpc.aio.AioRpcError as error:
            print(
                f"android-device {args.device_id}: refused by {args.server}: {error.code().name}: {error.details()}",
                file=sys.stderr,
                flush=True,
            )
            return 2
        return 0

    raise SystemExit(asyncio.run(run()))


if __name__ == "__main__":
    main()
