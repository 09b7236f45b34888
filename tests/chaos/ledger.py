"""What a fault scenario is judged by: steady load through the public API, a watcher, a webhook
receiver, the SMSC's own record of what it received, and afterwards, for every message the API
acknowledged, its final status, the submits the carrier saw for it, and whether the watcher and
the account's webhook endpoint were told that final status.

The load is bounded in count and time; each message's body names its scenario and number, so
the SMSC simulator's record (GET /submitted) says how many times each reached the carrier.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import grpc
from aiohttp import web

from smsgw.domain import status as st
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw.v1.message_pb2 import MessageStatus
from smsgw_dev.platform import HOOKS_ACCOUNT, Platform
from tests.integration.helpers import scraped_metrics, send_request

# The development platform's account with a default webhook URL (Platform.webhooks()): its
# messages' statuses are POSTed to http://127.0.0.1:<account_webhook_port>/account.
ACCOUNT = (("x-smsgw-account", HOOKS_ACCOUNT),)


@dataclass
class Load:
    """Sends `count` messages at `rate` per second (at most `seconds`), one call at a time, as a
    careful client does: each with an idempotency key, sent again with the same key when the
    call fails without an answer (UNAVAILABLE, DEADLINE_EXCEEDED: the outcome is unknown), up to
    `attempts` times. A message sent twice at the carrier would show that the key did not hold."""

    tag: str
    rate: float
    count: int
    seconds: float
    accepted: dict[str, int] = field(default_factory=dict)  # message id -> its number in the body
    refused: Counter[str] = field(default_factory=Counter)  # gRPC status name -> calls
    accepted_at: list[float] = field(default_factory=list)
    #: (loop time the call was made, seconds it took) of every accepted call: good traffic's latency.
    latencies: list[tuple[float, float]] = field(default_factory=list)
    attempts: int = 5
    resent: int = 0  # calls made again with the same key
    #: Distinct recipients, taken in turn (1: all to one number, which carrier-adapter submits
    #: one at a time, in order, so one unanswered submit holds every later one).
    recipients: int = 1

    def body(self, n: int) -> str:
        return f"{self.tag} {n}"

    async def run(self, stub: api_grpc.MessagingServiceStub) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n in range(self.count):
            due = started + n / self.rate
            if due - started > self.seconds:
                return
            await asyncio.sleep(max(0.0, due - loop.time()))
            to = "+14155550100" if self.recipients == 1 else f"+1415556{n % self.recipients:04d}"
            request = send_request(to=to, body=self.body(n), idempotency_key=f"{self.tag}-{n}")
            for attempt in range(self.attempts):
                called = loop.time()
                try:
                    reply = await stub.SendMessage(request, metadata=ACCOUNT, timeout=5)
                except grpc.aio.AioRpcError as error:
                    self.refused[error.code().name] += 1
                    if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        break  # refused for good: not acknowledged, so not owed
                    if attempt + 1 < self.attempts:
                        self.resent += 1
                        await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                self.accepted[reply.message.id] = n
                self.accepted_at.append(loop.time())
                self.latencies.append((called, loop.time() - called))
                break


@dataclass
class Watcher:
    """WatchMessages from the start, resumed from its cursor whenever the stream breaks (intake
    killed, the broker away): every status change it was told, per message."""

    seen: dict[str, set[int]] = field(default_factory=dict)
    reconnects: int = 0

    async def run(self, channel: grpc.aio.Channel, stop: asyncio.Event) -> None:
        stub = api_grpc.MessagingServiceStub(channel)
        cursor = ""
        while not stop.is_set():
            try:
                call = stub.WatchMessages(api.WatchMessagesRequest(cursor=cursor), metadata=ACCOUNT)
                async for update in call:
                    self.seen.setdefault(update.message.id, set()).add(update.message.status)
                    cursor = update.cursor or cursor
            except grpc.aio.AioRpcError:
                self.reconnects += 1
            await asyncio.sleep(0.5)


@dataclass
class WebhookReceiver:
    """The account's webhook endpoint: every status it was POSTed, per message (copies included)."""

    port: int
    seen: dict[str, set[int]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/account", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        message = body.get("message", {})
        if "id" in message and "status" in message:
            self.seen.setdefault(message["id"], set()).add(MessageStatus.Value(message["status"]))
        return web.Response(status=204)


@dataclass
class SubmitCounter:
    """The SMSC simulator's count of submits, sampled twice a second: the carrier's view of the rate."""

    control_port: int
    samples: list[tuple[float, int]] = field(default_factory=list)

    async def submitted(self) -> list[dict]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.control_port}/submitted") as reply:
                return await reply.json()

    async def count(self) -> int:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.control_port}/submitted/count") as reply:
                return (await reply.json())["count"]

    async def repeated(self) -> dict[bytes, int]:
        """User data the SMSC received more than once, and how many times."""
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.control_port}/submitted/repeated") as reply:
                return {bytes.fromhex(data): n for data, n in (await reply.json()).items()}

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                self.samples.append((loop.time(), await self.count()))
            except aiohttp.ClientError:
                pass  # the simulator is not what is under test
            await asyncio.sleep(0.5)

    def recovered_after(self, fault_end: float, rate: float, window: float = 2.0) -> float | None:
        """Seconds from the fault's end until the carrier received at least 80 % of the offered
        rate over `window` seconds; None if it never did while sampled."""
        for i, (t, count) in enumerate(self.samples):
            if t < fault_end:
                continue
            later = [(t2, c2) for t2, c2 in self.samples[i:] if t2 >= t + window]
            if later and later[0][1] - count >= 0.8 * rate * (later[0][0] - t):
                return max(0.0, t - fault_end)
        return None


@dataclass
class Verdict:
    scenario: str
    accepted: int
    refused: str
    lost: int
    stuck: int
    duplicated: int
    #: Of `duplicated`: the copy the guarantee allows, reported on the message (an attempt recorded
    #: as failed in doubt: a lost answer, or a replica killed before it recorded the answer).
    reported_in_doubt: int
    unwatched: int
    unhooked: int
    fault_seconds: float
    recovered_after: float | None
    details: list[str] = field(default_factory=list)
    #: Final but not DELIVERED, where the scenario requires every message delivered (else 0).
    not_delivered: int = 0
    #: SendMessage p99 (ms) of the calls made during the fault, over the scenario's bound (else None).
    slow_during: float | None = None

    @property
    def ok(self) -> bool:
        unreported = self.duplicated - self.reported_in_doubt
        return not (
            self.lost
            or self.stuck
            or unreported
            or self.unwatched
            or self.unhooked
            or self.not_delivered
            or self.slow_during is not None
        )

    def row(self) -> str:
        recovery = "-" if self.recovered_after is None else f"{self.recovered_after:.1f}"
        return (
            f"| {self.scenario} | {self.accepted} | {self.refused or '0'} | {self.lost} | "
            f"{self.duplicated - self.reported_in_doubt} | {self.reported_in_doubt} | "
            f"{self.stuck} | {self.unwatched} | {self.unhooked} | {self.fault_seconds:.1f} | {recovery} |"
        )


HEADER = (
    "| scenario | accepted | failed calls (status) | lost | duplicated at the carrier, unreported | sent twice, reported in doubt "
    "| stuck | final status not watched | not webhooked | fault lasted (s) | full rate again after (s) |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


async def judge(
    scenario: str,
    platform: Platform,
    load: Load,
    watcher: Watcher,
    hooks: WebhookReceiver,
    counter: SubmitCounter,
    fault: tuple[float, float],
    drain_seconds: float,
    every_delivered: bool = False,
    max_p99_during_ms: float | None = None,
) -> Verdict:
    """Waits (at most `drain_seconds`) for every acknowledged message to end, then checks the ledger;
    `every_delivered`: each must have ended DELIVERED."""
    final: dict[str, int] = {}
    last: dict[str, int] = {}  # each message's status when last read
    missing: set[str] = set()
    deadline = time.monotonic() + drain_seconds
    async with grpc.aio.insecure_channel(platform.intake_address) as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        pending = set(load.accepted)
        while pending and time.monotonic() < deadline:
            missing = set()
            for message_id in sorted(pending):
                try:
                    message = await stub.GetMessage(api.GetMessageRequest(id=message_id), metadata=ACCOUNT, timeout=10)
                except grpc.aio.AioRpcError as error:
                    if error.code() == grpc.StatusCode.NOT_FOUND:
                        missing.add(message_id)
                        continue
                    break  # intake not answering yet: try again
                last[message_id] = message.status
                if st.is_final(message.status):
                    final[message_id] = message.status
            pending -= set(final)
            if pending:
                await asyncio.sleep(2.0)
        await asyncio.sleep(2.0)  # the watcher's last updates
        # Webhooks retried after an endpoint outage come later than the statuses they report.
        while time.monotonic() < deadline and any(s not in hooks.seen.get(m, set()) for m, s in final.items()):
            await asyncio.sleep(2.0)
        submitted = Counter(bytes.fromhex(s["user_data_hex"]).decode("latin-1") for s in await counter.submitted())
        ours = {load.body(n): message_id for message_id, n in load.accepted.items()}
        duplicated = [body for body, times in submitted.items() if body in ours and times > 1]
        reported = [body for body in duplicated if await _attempt_in_doubt(stub, ours[body])]
    stuck = sorted(set(load.accepted) - set(final) - missing)
    unwatched = [m for m, status in final.items() if status not in watcher.seen.get(m, set())]
    unhooked = [m for m, status in final.items() if status not in hooks.seen.get(m, set())]
    fault_start, fault_end = fault
    verdict = Verdict(
        scenario=scenario,
        accepted=len(load.accepted),
        refused=", ".join(f"{n} {code}" for code, n in sorted(load.refused.items())),
        lost=len(missing),
        stuck=len(stuck),
        duplicated=len(duplicated),
        reported_in_doubt=len(reported),
        unwatched=len(unwatched),
        unhooked=len(unhooked),
        fault_seconds=fault_end - fault_start,
        recovered_after=counter.recovered_after(fault_end, load.rate),
    )
    before = [seconds for t, seconds in load.latencies if t < fault_start]
    during = [seconds for t, seconds in load.latencies if fault_start <= t <= fault_end]
    if before and during:
        verdict.details.append(
            f"SendMessage latency, accepted calls: before the fault p50 {_ms(before, 0.5)}, p99 {_ms(before, 0.99)} "
            f"ms ({len(before)} calls); during it p50 {_ms(during, 0.5)}, p99 {_ms(during, 0.99)} ms ({len(during)} calls)"
        )
        if max_p99_during_ms is not None and _ms(during, 0.99) > max_p99_during_ms:
            verdict.slow_during = _ms(during, 0.99)
            verdict.details.append(f"p99 during the fault above the scenario's bound of {max_p99_during_ms:.0f} ms")
    if every_delivered:
        other = sorted(m for m, status in final.items() if status != st.DELIVERED)
        verdict.not_delivered = len(other)
        if other:
            verdict.details.append(f"final but not DELIVERED (every message must be): {other[:5]}")
    statuses = Counter(st.status_name(s) for s in final.values())
    verdict.details.append(
        f"final statuses: {dict(statuses)}; calls sent again with their idempotency key: {load.resent}; "
        f"watcher reconnects: {watcher.reconnects}"
    )
    if missing:
        verdict.details.append(f"lost (NOT_FOUND): {sorted(missing)[:5]}")
    if stuck:
        by_status = Counter(st.status_name(last[m]) for m in stuck if m in last)
        verdict.details.append(f"stuck (not final after {drain_seconds:.0f} s): {dict(by_status)}, e.g. {stuck[:3]}")
    if duplicated:
        verdict.details.append(f"submitted more than once: {duplicated[:5]} (reported in doubt: {reported[:5]})")
    if unwatched:
        verdict.details.append(f"final status not watched: {unwatched[:5]}")
    if unhooked:
        numbers = sorted(load.accepted[m] for m in unhooked)
        got = Counter(
            "+".join(sorted(st.status_name(s) for s in hooks.seen.get(m, set()))) or "nothing" for m in unhooked
        )
        verdict.details.append(
            f"final status not webhooked: {unhooked[:5]}; message numbers {numbers[0]}..{numbers[-1]} "
            f"(sent at {load.rate:.0f}/s from 0); what their webhooks said: {dict(got)}; "
            f"receipt's webhook counters: {await _webhook_counters(platform)}"
        )
    return verdict


def _ms(seconds: list[float], q: float) -> float:
    ordered = sorted(seconds)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def _attempt_in_doubt(stub: api_grpc.MessagingServiceStub, message_id: str) -> bool:
    """Whether the message's history reports an attempt that may have reached the carrier."""
    history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=message_id), metadata=ACCOUNT, timeout=10)
    return any(
        entry.event.WhichOneof("payload") == "submit_attempt_failed" and entry.event.submit_attempt_failed.in_doubt
        for entry in history.entries
    )


async def _webhook_counters(platform: Platform) -> dict[str, float]:
    """receipt's smsgw_webhooks_* counters (since its last start), for a report of missing webhooks."""
    try:
        metrics = await scraped_metrics(platform.metrics_port_of("receipt"))
    except (aiohttp.ClientError, AssertionError) as error:
        return {"unreadable": repr(error)}  # type: ignore[dict-item]
    return {
        name.removeprefix("smsgw_webhooks_").removesuffix("_total"): value
        for (name, _labels), value in metrics.items()
        if name.startswith("smsgw_webhooks_") and name.endswith("_total")
    }
