"""Status webhooks over real HTTP (127.0.0.1): retries, dedupe, circuit breakers, dead letters, redelivery.

The receivers are aiohttp servers started here; each records every request and
processes an event id once, as the docs tell receivers to.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from smsgw.domain.message_state import MessageState, apply
from smsgw.domain.public_urls import UrlPolicy
from smsgw.events.envelope import new_event
from smsgw.v1 import events_pb2 as ev
from smsgw_receipt.webhooks import (
    DEAD_LETTERED,
    DUPLICATE,
    QUEUED,
    BreakerPolicy,
    DispatcherConfig,
    MemoryDeadLetterStore,
    RetryPolicy,
    SqliteDeadLetterStore,
    StaticAccountSecrets,
    Webhook,
    WebhookDispatcher,
    status_webhook,
)
from smsgw_receipt.webhooks.accounts import derived_secret
from smsgw_receipt.webhooks.breaker import OPEN
from smsgw_receipt.webhooks.cli import webhooks_main
from smsgw_receipt.webhooks.signing import EVENT_ID_HEADER, TIMESTAMP_HEADER, WebhookSignatureError, sign, verify

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SECRET = "whsec-integration"
SECRETS = StaticAccountSecrets.single(SECRET)
#: What signs the webhooks of this file's account ("acct"): its own secret, derived from SECRET
#: (the platform's) for it alone; account "default" signs with SECRET itself.
ACCT_SECRET = derived_secret(SECRET, "acct")
DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
FAST_RETRIES = RetryPolicy(base_delay=0.05, max_delay=0.3, max_attempts=6, jitter=0.5)

# The receivers here listen on loopback over http: the development policy (production: public https only).
LOCAL = UrlPolicy(allow_http=True, allow_private=True)


# -- receivers -------------------------------------------------------------------------------------


@dataclass
class Request:
    event_id: str
    headers: dict
    body: bytes
    at: float


@dataclass
class Receiver:
    """Answers by `behaviour(event_id, nth request for that id)`: "ok", "fail" (500), "slow" (answers 200
    after the client gave up, having processed it), "hang" (until the test ends)."""

    url: str = ""
    behaviour: Callable[[str, int], str] = lambda event_id, nth: "ok"
    requests: list[Request] = field(default_factory=list)
    processed: dict[str, bytes] = field(default_factory=dict)  # event id -> body, first time only
    duplicates: int = 0
    #: Requests whose handler has ended (a slow one goes on after its client gave up).
    answered: int = 0
    slow_seconds: float = 0.0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            return await self._answer(request)
        finally:
            self.answered += 1

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        event_id = request.headers.get(EVENT_ID_HEADER, "")
        nth = sum(1 for r in self.requests if r.event_id == event_id) + 1
        self.requests.append(Request(event_id, dict(request.headers), body, asyncio.get_running_loop().time()))
        try:
            verify(ACCT_SECRET, request.headers, body)
        except WebhookSignatureError as error:
            return web.Response(status=401, text=str(error))
        action = self.behaviour(event_id, nth)
        if action == "fail":
            return web.Response(status=500, text="receiver is down")
        if action == "hang":
            await self.release.wait()
            return web.Response(status=503)
        if action == "slow":
            await asyncio.sleep(self.slow_seconds)
        self._process(json.loads(body)["event_id"], body)
        return web.Response(status=204)

    def _process(self, event_id: str, body: bytes) -> None:
        if event_id in self.processed:
            self.duplicates += 1
        else:
            self.processed[event_id] = body

    def attempts_of(self, event_id: str) -> int:
        return sum(1 for r in self.requests if r.event_id == event_id)


@pytest.fixture
async def receivers():
    runners, made = [], []

    async def start(**kwargs) -> Receiver:
        receiver = Receiver(**kwargs)
        app = web.Application()
        app.router.add_post("/hooks", receiver.handle)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        receiver.url = f"http://{host}:{port}/hooks"
        runners.append(runner)
        made.append(receiver)
        return receiver

    yield start
    for receiver in made:
        receiver.release.set()
    for runner in runners:
        await runner.cleanup()


# -- webhooks as the receipt service makes them -----------------------------------------------------


def status_webhooks(url: str, messages: int, tag: str) -> list[Webhook]:
    """The webhooks of `messages` messages going QUEUED -> SENDING -> SENT -> DELIVERED, from real folds."""
    t0 = datetime.now(UTC)
    hooks: list[Webhook] = []
    for m in range(messages):
        message_id = f"{tag}-{m}"

        def event(payload, service, seq, message_id=message_id):
            return new_event(
                payload,
                service=service,
                producer="test",
                message_id=message_id,
                account_id="acct",
                sequence=seq,
                occurred_at=t0 + timedelta(seconds=seq),
            )

        queued = ev.MessageQueued(
            to="+14155550100", content=ev.MessageContent(text=f"m{m}"), segments=1, status_callback_url=url
        )
        events = [
            event(queued, "intake", 1),
            event(ev.MessageRouted(carrier="smsc-sim"), "routing", 2),
            event(
                ev.CarrierAccepted(carrier="smsc-sim", carrier_message_ids=[str(m)], segments=1), "carrier-adapter", 3
            ),
            event(
                ev.DeliveryReported(
                    carrier="smsc-sim",
                    carrier_message_id=str(m),
                    part_index=0,
                    total_parts=1,
                    state=ev.DeliveryState.DELIVERY_STATE_DELIVERED,
                ),
                "receipt",
                4,
            ),
        ]
        state: MessageState | None = None
        for envelope in events:
            previous, state = state, apply(state, envelope)
            hook = status_webhook(previous, state, envelope)
            assert hook is not None, f"{envelope.type} changed the status: it has a webhook"
            hooks.append(hook)
    return hooks


async def eventually(predicate, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)


# -- tests ----------------------------------------------------------------------------------------


async def test_a_receiver_that_fails_then_recovers_gets_every_event_exactly_once(receivers):
    # First request of each event: 500. Second: every other event is processed but answered too late
    # (the client times out: a lost 2xx). Then: 200. The receiver dedupes by event id.
    order: dict[str, int] = {}

    def behaviour(event_id, nth):
        index = order.setdefault(event_id, len(order))
        if nth == 1:
            return "fail"
        if nth == 2 and index % 2 == 0:
            return "slow"
        return "ok"

    receiver = await receivers(behaviour=behaviour, slow_seconds=0.6)
    hooks = status_webhooks(receiver.url, messages=5, tag="flaky")
    config = DispatcherConfig(
        urls=LOCAL, retry=FAST_RETRIES, breaker=BreakerPolicy(failure_threshold=1000), request_timeout=0.3
    )
    async with WebhookDispatcher(SECRETS, MemoryDeadLetterStore(), config) as dispatcher:
        assert [dispatcher.enqueue(h) for h in hooks] == [QUEUED] * len(hooks)
        assert dispatcher.enqueue(hooks[0]) == DUPLICATE
        async with asyncio.timeout(20):
            await dispatcher.wait_idle()
        await eventually(lambda: receiver.answered == len(receiver.requests), 5, "slow handlers finished")
        stats = dispatcher.stats
        assert dispatcher.store.dead_letters() == [] and dispatcher.store.pending() == []

    sent = {h.event_id for h in hooks}
    assert set(receiver.processed) == sent  # every event, once after dedupe
    assert {h.event_id: h.body for h in hooks} == receiver.processed  # byte for byte as signed
    assert receiver.duplicates >= 1  # lost 2xx were resent...
    assert all(receiver.attempts_of(e) >= 2 for e in sent)  # ...and retries are visible
    assert max(receiver.attempts_of(e) for e in sent) == 3
    assert stats.delivered == len(hooks) and stats.retries_scheduled >= len(hooks)
    # Every attempt was signed afresh and verified by the receiver (a bad one would have been a 401).
    assert all(verify(ACCT_SECRET, r.headers, r.body, now=int(r.headers[TIMESTAMP_HEADER])) for r in receiver.requests)


async def test_a_dead_endpoint_opens_its_circuit_and_does_not_delay_a_healthy_one(receivers):
    dead = await receivers(behaviour=lambda e, n: "hang")
    healthy = await receivers()
    config = DispatcherConfig(
        urls=LOCAL,
        retry=RetryPolicy(base_delay=0.2, max_delay=1.0, max_attempts=50, jitter=0.5),
        breaker=BreakerPolicy(failure_threshold=3, open_seconds=30.0),
        request_timeout=1.0,
        concurrency=4,
    )
    to_dead = status_webhooks(dead.url, messages=5, tag="dead")
    to_healthy = status_webhooks(healthy.url, messages=5, tag="healthy")
    loop = asyncio.get_running_loop()
    async with WebhookDispatcher(SECRETS, MemoryDeadLetterStore(), config) as dispatcher:
        started = loop.time()
        for pair in zip(to_dead, to_healthy):  # interleaved, dead first
            for hook in pair:
                assert dispatcher.enqueue(hook) == QUEUED
        assert loop.time() - started < 0.05  # enqueue never waits for the network
        await eventually(lambda: len(healthy.processed) == len(to_healthy), 5, "healthy endpoint served")
        healthy_done = loop.time() - started
        # Done before the dead endpoint's first requests even timed out.
        assert healthy_done < config.request_timeout, healthy_done
        assert 0 < len(dead.requests) <= config.concurrency

        await eventually(lambda: dispatcher.breaker_state(dead.url) == OPEN, 5, "dead endpoint's circuit open")
        # Requests already on the wire when it opened may still land: let them, then count.
        await asyncio.sleep(config.request_timeout + 0.2)
        requests_when_opened = len(dead.requests)
        # While it is open, the dead endpoint is left alone and the healthy one is served at once.
        more = status_webhooks(healthy.url, messages=5, tag="healthy-2")
        started = loop.time()
        for hook in more:
            dispatcher.enqueue(hook)
        await eventually(lambda: len(healthy.processed) == len(to_healthy) + len(more), 2, "second healthy batch")
        assert loop.time() - started < 0.5
        await asyncio.sleep(0.5)
        assert len(dead.requests) == requests_when_opened
        assert dispatcher.breaker_state(healthy.url) == "closed"
        # The dead endpoint's webhooks are still being retried, not dropped.
        pending = {r.event_id for r in dispatcher.store.pending() if r.url == dead.url}
        assert pending == {h.event_id for h in to_dead}
        assert dispatcher.stats.refused_by_circuit > 0
    assert healthy.duplicates == 0 and set(healthy.processed) == {h.event_id for h in to_healthy + more}


async def test_exhausted_retries_are_dead_letters_that_redeliver_sends_once_the_receiver_is_back(
    receivers, tmp_path, monkeypatch, capsys, caplog
):
    state = {"up": False}
    receiver = await receivers(behaviour=lambda e, n: "ok" if state["up"] else "fail")
    hooks = status_webhooks(receiver.url, messages=2, tag="dlq")  # 8 webhooks
    store_path = tmp_path / "webhooks.sqlite3"
    config = DispatcherConfig(
        urls=LOCAL,
        retry=RetryPolicy(base_delay=0.02, max_delay=0.1, max_attempts=3, jitter=0.5),
        breaker=BreakerPolicy(failure_threshold=1000),
        request_timeout=1.0,
        dead_letter_log_every=0.2,
    )
    store = SqliteDeadLetterStore(store_path)
    async with WebhookDispatcher(SECRETS, store, config) as dispatcher:
        for hook in hooks:
            dispatcher.enqueue(hook)
        async with asyncio.timeout(10):
            await dispatcher.wait_idle()
        await asyncio.sleep(0.3)  # the summary of those dead-lettered after the first
        letters = store.dead_letters()
        assert {d.event_id for d in letters} == {h.event_id for h in hooks}
        assert {d.attempts for d in letters} == {3} and all(d.last_error.startswith("HTTP 500") for d in letters)
        assert all(receiver.attempts_of(h.event_id) == 3 for h in hooks) and receiver.processed == {}
        # Logged by endpoint, never by whole URL: a customer's path or query may hold a token.
        buried = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
        assert len(buried) == 2 and f"{len(hooks) - 1} more dead-lettered" in buried[1], buried
        assert all(receiver.url.removesuffix("/hooks") in m and receiver.url not in m for m in buried)
        # A dead letter stays dead when the same webhook comes again (e.g. the log is reprocessed).
        assert dispatcher.enqueue(hooks[0]) == DEAD_LETTERED

        state["up"] = True
        first = [d.id for d in letters[:3]]
        assert [d.id for d in dispatcher.redeliver(first)] == first
        async with asyncio.timeout(10):
            await dispatcher.wait_idle()
        assert set(receiver.processed) == {d.event_id for d in letters[:3]}
        assert [d.id for d in store.dead_letters()] == [d.id for d in letters[3:]]

    # The operator's way: the CLI, against the same file, while nothing else runs.
    monkeypatch.setenv("SMSGW_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("SMSGW_WEBHOOK_ALLOW_HTTP", "true")  # the receiver: http on loopback
    monkeypatch.setenv("SMSGW_WEBHOOK_ALLOW_PRIVATE", "true")
    assert await asyncio.to_thread(webhooks_main, ["dead-letters", "--store", str(store_path)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 5 and all(str(d.id) in line for d, line in zip(letters[3:], listed))
    assert await asyncio.to_thread(webhooks_main, ["redeliver", "--all", "--store", str(store_path)]) == 0
    report = capsys.readouterr().out
    assert report.count("delivered (HTTP 204)") == 5
    assert store.dead_letters() == [] and store.pending() == []
    store.close()
    assert set(receiver.processed) == {h.event_id for h in hooks} and receiver.duplicates == 0


async def test_the_cli_reports_a_failed_redelivery_and_keeps_the_letter(receivers, tmp_path, monkeypatch, capsys):
    receiver = await receivers(behaviour=lambda e, n: "fail")
    store_path = tmp_path / "webhooks.sqlite3"
    store = SqliteDeadLetterStore(store_path)
    letter = store.mark_dead(status_webhooks(receiver.url, 1, "cli")[0], attempts=12, error="HTTP 500")
    monkeypatch.setenv("SMSGW_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("SMSGW_WEBHOOK_ALLOW_HTTP", "true")  # the receiver: http on loopback
    monkeypatch.setenv("SMSGW_WEBHOOK_ALLOW_PRIVATE", "true")
    code = await asyncio.to_thread(webhooks_main, ["redeliver", str(letter.id), "4242", "--store", str(store_path)])
    out = capsys.readouterr().out
    assert code == 1 and "failed: HTTP 500" in out and "4242  no such dead letter" in out
    assert [(d.id, d.attempts) for d in store.dead_letters()] == [(letter.id, 13)]
    assert await asyncio.to_thread(webhooks_main, ["redeliver", "--store", str(store_path)]) == 2
    store.close()


async def test_a_full_endpoint_queue_dead_letters_at_once_without_blocking(receivers):
    dead = await receivers(behaviour=lambda e, n: "hang")
    hooks = status_webhooks(dead.url, messages=2, tag="full")
    config = DispatcherConfig(urls=LOCAL, queue_size=3, retry=FAST_RETRIES, request_timeout=5.0)
    async with WebhookDispatcher(SECRETS, MemoryDeadLetterStore(), config) as dispatcher:
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcomes = [dispatcher.enqueue(h) for h in hooks]
        assert loop.time() - started < 0.05
        assert outcomes == [QUEUED] * 3 + [DEAD_LETTERED] * 5
        letters = dispatcher.store.dead_letters()
        assert {d.event_id for d in letters} == {h.event_id for h in hooks[3:]}
        assert {(d.last_error, d.attempts) for d in letters} == {("queue full", 0)}


@pytest.mark.parametrize("keep_pending", [False, True], ids=["offsets", "pending-rows"])
async def test_webhooks_that_found_the_queue_full_go_out_once_the_endpoint_is_back(receivers, tmp_path, keep_pending):
    """An endpoint down long enough for its queue to fill: what came after is dead-lettered at
    once ("queue full", never tried), and sent by itself once the endpoint answers again; no
    operator, no `smsgw webhooks redeliver`. Receipt runs with offsets (keep_pending=False)."""
    state = {"up": False}
    receiver = await receivers(behaviour=lambda e, n: "ok" if state["up"] else "fail")
    hooks = status_webhooks(receiver.url, messages=5, tag=f"overflow-{keep_pending}")  # 20 webhooks
    config = DispatcherConfig(
        urls=LOCAL,
        queue_size=8,
        retry=RetryPolicy(base_delay=0.1, max_delay=0.2, max_attempts=1000),
        breaker=BreakerPolicy(failure_threshold=1000),
    )
    store = SqliteDeadLetterStore(tmp_path / "webhooks.sqlite3")
    async with WebhookDispatcher(SECRETS, store, config, keep_pending=keep_pending) as dispatcher:
        outcomes = [dispatcher.enqueue(h) for h in hooks]
        assert outcomes == [QUEUED] * 8 + [DEAD_LETTERED] * 12
        await eventually(lambda: len(receiver.requests) >= 16, 10, "the queued ones tried twice")
        assert {d.last_error for d in store.dead_letters()} == {"queue full"} and dispatcher.stats.overflow_resent == 0
        state["up"] = True
        async with asyncio.timeout(15):
            while store.dead_letters() or store.pending() or dispatcher.active:
                await asyncio.sleep(0.05)
        assert dispatcher.stats.overflow_resent == 12
    assert set(receiver.processed) == {h.event_id for h in hooks}
    store.close()


async def test_a_flood_of_dead_letters_is_logged_in_one_line_per_endpoint(receivers, caplog):
    """An endpoint down under load buries hundreds of webhooks a second: the first is logged
    whole, the rest counted by error in one line a while later, not a warning each."""
    dead = await receivers(behaviour=lambda e, n: "hang")
    hooks = status_webhooks(dead.url, messages=10, tag="floodlog")  # 40 webhooks
    config = DispatcherConfig(urls=LOCAL, queue_size=4, request_timeout=5.0, dead_letter_log_every=0.3)
    with caplog.at_level(logging.WARNING, logger="smsgw.receipt.webhooks"):
        async with WebhookDispatcher(SECRETS, MemoryDeadLetterStore(), config) as dispatcher:
            outcomes = [dispatcher.enqueue(h) for h in hooks]
            assert outcomes.count(DEAD_LETTERED) == 36
            await asyncio.sleep(0.6)
    lines = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "dead-lettered as #" in lines[0] and lines[0].endswith("queue full")
    assert "35 more dead-lettered in 0 s (queue full: 35)" in lines[1], lines[1]


async def test_webhooks_pending_at_shutdown_are_sent_after_a_restart(receivers, tmp_path):
    state = {"up": False}
    receiver = await receivers(behaviour=lambda e, n: "ok" if state["up"] else "fail")
    hooks = status_webhooks(receiver.url, messages=1, tag="restart")
    path = tmp_path / "webhooks.sqlite3"
    config = DispatcherConfig(urls=LOCAL, retry=RetryPolicy(base_delay=5.0, max_delay=5.0, max_attempts=10))
    store = SqliteDeadLetterStore(path)
    async with WebhookDispatcher(SECRETS, store, config) as dispatcher:
        for hook in hooks:
            dispatcher.enqueue(hook)
        await eventually(lambda: len(receiver.requests) == len(hooks), 5, "first attempts")
    store.close()  # the process "dies" with every webhook waiting for its retry

    state["up"] = True
    store = SqliteDeadLetterStore(path)
    assert len(store.pending()) == len(hooks)
    dispatcher = WebhookDispatcher(SECRETS, store, config)
    assert await dispatcher.start() == len(hooks)
    try:
        async with asyncio.timeout(10):
            await dispatcher.wait_idle()
    finally:
        await dispatcher.close()
    assert set(receiver.processed) == {h.event_id for h in hooks}
    assert store.pending() == [] and store.dead_letters() == []
    store.close()


async def test_on_settled_tells_when_an_event_no_longer_needs_its_offset_uncommitted(receivers):
    """The alternative to pending rows: the consumer commits an offset once its webhook settled."""
    up = await receivers(behaviour=lambda e, n: "fail" if n == 1 else "ok")
    down = await receivers(behaviour=lambda e, n: "fail")
    settled: list[str] = []
    config = DispatcherConfig(
        urls=LOCAL,
        retry=RetryPolicy(base_delay=0.02, max_delay=0.1, max_attempts=3),
        breaker=BreakerPolicy(failure_threshold=1000),
    )
    store = MemoryDeadLetterStore()
    hooks = status_webhooks(up.url, 1, "settle-up") + status_webhooks(down.url, 1, "settle-down")
    async with WebhookDispatcher(SECRETS, store, config, keep_pending=False) as dispatcher:
        for hook in hooks:
            assert dispatcher.enqueue(hook, on_settled=lambda e=hook.event_id: settled.append(e)) == QUEUED
        assert dispatcher.enqueue(hooks[0], on_settled=lambda: settled.append("copy")) == DUPLICATE
        assert store.pending() == []  # no rows: durability is the caller's offsets
        assert settled == []
        async with asyncio.timeout(10):
            await dispatcher.wait_idle()
    assert sorted(settled) == sorted([h.event_id for h in hooks] + ["copy"])
    assert set(up.processed) == {h.event_id for h in hooks[:4]}
    assert {d.event_id for d in store.dead_letters()} == {h.event_id for h in hooks[4:]}  # settled = buried

    # Redelivery without pending rows: a letter stays listed as dead until it is delivered.
    down.behaviour = lambda e, n: "ok"
    async with WebhookDispatcher(SECRETS, store, config, keep_pending=False) as dispatcher:
        assert len(dispatcher.redeliver()) == 4
        assert len(store.dead_letters()) == 4 and store.pending() == []
        async with asyncio.timeout(10):
            await dispatcher.wait_idle()
    assert store.dead_letters() == [] and set(down.processed) == {h.event_id for h in hooks[4:]}


async def test_an_account_without_a_secret_gets_no_unsigned_webhook(receivers):
    receiver = await receivers()
    hook = status_webhooks(receiver.url, 1, "nosecret")[0]
    secrets = StaticAccountSecrets({})  # no entry for the account, and no platform secret
    async with WebhookDispatcher(secrets, MemoryDeadLetterStore(), DispatcherConfig(urls=LOCAL)) as dispatcher:
        dispatcher.enqueue(hook)
        async with asyncio.timeout(5):
            await dispatcher.wait_idle()
        assert [d.last_error for d in dispatcher.store.dead_letters()] == ["no webhook secret for account 'acct'"]
    assert receiver.requests == []


# -- the receivers' snippets in docs/webhooks.md, run as written --------------------------------------


def doc_snippet(name: str) -> str:
    match = re.search(rf"<!-- snippet: {name} -->\s*```\w+\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"docs/webhooks.md lost its {name} snippet"
    return match.group(1)


async def captured_delivery(receivers) -> Request:
    receiver = await receivers()
    async with WebhookDispatcher(SECRETS, MemoryDeadLetterStore(), DispatcherConfig(urls=LOCAL)) as dispatcher:
        dispatcher.enqueue(status_webhooks(receiver.url, 1, "doc")[-1])
        async with asyncio.timeout(5):
            await dispatcher.wait_idle()
    assert len(receiver.requests) == 1
    return receiver.requests[0]


def forgeries(real: Request) -> dict[str, tuple[dict, bytes]]:
    tampered = real.body.replace(b'"DELIVERED"', b'"UNDELIVERED"', 1)
    assert tampered != real.body
    stale = sign(ACCT_SECRET, real.body, event_id=real.event_id, now=time.time() - 3600)
    return {
        "tampered body": (real.headers, tampered),
        "another secret": (sign("attacker", real.body, event_id=real.event_id), real.body),
        "replayed an hour later": (stale, real.body),
        "no signature": ({EVENT_ID_HEADER: real.event_id}, real.body),
    }


async def test_the_documented_python_snippet_accepts_a_real_delivery_and_refuses_forgeries(receivers):
    namespace: dict = {}
    exec(compile(doc_snippet("verify-python"), str(DOC), "exec"), namespace)
    verify_smsgw_webhook = namespace["verify_smsgw_webhook"]
    real = await captured_delivery(receivers)
    assert verify_smsgw_webhook(ACCT_SECRET, real.headers, real.body) is True
    for name, (headers, body) in forgeries(real).items():
        assert verify_smsgw_webhook(ACCT_SECRET, headers, body) is False, name


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
async def test_the_documented_node_snippet_accepts_a_real_delivery_and_refuses_forgeries(receivers, tmp_path):
    (tmp_path / "verify.js").write_text(doc_snippet("verify-node"))
    (tmp_path / "check.js").write_text(
        'const { verifySmsgwWebhook } = require("./verify.js");\n'
        'const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));\n'
        "console.log(JSON.stringify(cases.map((c) => verifySmsgwWebhook(c.secret, c.headers,"
        ' Buffer.from(c.body, "base64")))));\n'
    )
    real = await captured_delivery(receivers)
    cases = [(real.headers, real.body)] + list(forgeries(real).values())
    payload = json.dumps(
        [
            {
                "secret": ACCT_SECRET,
                "headers": {k.lower(): v for k, v in headers.items()},
                "body": base64.b64encode(body).decode(),
            }
            for headers, body in cases
        ]
    )
    result = await asyncio.to_thread(
        subprocess.run, ["node", "check.js"], cwd=tmp_path, input=payload, capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [True] + [False] * (len(cases) - 1)


async def test_by_default_a_callback_into_the_platforms_network_is_never_called(receivers):
    # SSRF: a customer's URL on loopback (http or https, by IP, by "localhost", or by a name that
    # resolves there when the connection is made) is refused before any connection; the webhook
    # ends as a dead letter that says why.
    import socket

    receiver = await receivers()
    port = receiver.url.split(":")[2].split("/")[0]
    host_name = socket.gethostname()  # this machine's name: it resolves to a loopback address here
    assert {a[4][0] for a in socket.getaddrinfo(host_name, None)} <= {"127.0.0.1", "127.0.1.1", "::1"}
    hooks = [
        status_webhooks(url, messages=1, tag=tag)[0]
        for tag, url in (
            ("ssrf-http", receiver.url),
            ("ssrf-ip", f"https://127.0.0.1:{port}/hook"),
            ("ssrf-localhost", f"https://localhost:{port}/hook"),
            ("ssrf-name", f"https://{host_name}:{port}/hook"),
        )
    ]
    config = DispatcherConfig(retry=RetryPolicy(base_delay=0.01, max_delay=0.01, max_attempts=2))
    async with WebhookDispatcher(SECRETS, MemoryDeadLetterStore(), config) as dispatcher:
        assert [dispatcher.enqueue(h) for h in hooks] == [QUEUED] * 4
        async with asyncio.timeout(20):
            await dispatcher.wait_idle()
        dead = {d.webhook.url: d.last_error for d in dispatcher.store.dead_letters()}
    assert receiver.requests == []
    assert len(dead) == 4
    assert "is not an absolute https URL" in dead[receiver.url]
    assert "points at a non-public address" in dead[f"https://127.0.0.1:{port}/hook"]
    assert "points at a non-public address" in dead[f"https://localhost:{port}/hook"]
    # Only the resolver, at connect time, can know this one (DNS rebinding is the same case).
    assert "resolves only to non-public addresses" in dead[f"https://{host_name}:{port}/hook"]


async def test_an_endpoint_is_crowded_while_it_answers_slowly_but_not_once_its_circuit_opens(receivers):
    """What the webhook feed's backpressure reads: a healthy but slow receiver's half-full queue
    holds the feed back; a failing one's (circuit open) does not, its overflow is dead-lettered."""
    slow = await receivers(behaviour=lambda e, n: "hang")
    config = DispatcherConfig(urls=LOCAL, queue_size=4, retry=FAST_RETRIES, request_timeout=5.0)
    async with WebhookDispatcher(SECRETS, MemoryDeadLetterStore(), config) as dispatcher:
        hooks = status_webhooks(slow.url, messages=1, tag="crowded")
        dispatcher.enqueue(hooks[0])
        assert not dispatcher.crowded()  # 1 of 4
        dispatcher.enqueue(hooks[1])
        assert dispatcher.crowded()  # 2 of 4: half full, circuit closed

    failing = await receivers(behaviour=lambda e, n: "fail")
    config = DispatcherConfig(
        urls=LOCAL,
        queue_size=4,
        retry=RetryPolicy(base_delay=5.0, max_delay=5.0, max_attempts=10),
        breaker=BreakerPolicy(failure_threshold=1, open_seconds=30.0),
        request_timeout=5.0,
    )
    async with WebhookDispatcher(SECRETS, MemoryDeadLetterStore(), config) as dispatcher:
        for hook in status_webhooks(failing.url, messages=1, tag="open")[:3]:
            dispatcher.enqueue(hook)
        await eventually(lambda: dispatcher.breaker_state(failing.url) == OPEN, 5, "the circuit opens")
        assert not dispatcher.crowded()
