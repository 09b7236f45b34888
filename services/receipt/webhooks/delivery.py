"""Sending status webhooks: at least once, without ever holding up the pipeline.

`WebhookDispatcher.enqueue()` is synchronous and returns at once: it records
the webhook as pending in the store and schedules it on its endpoint. Each
endpoint (scheme, host, port) has its own bounded schedule, its own worker with
at most `concurrency` requests in flight, and its own circuit breaker, so a
dead or slow receiver only ever delays its own webhooks.

A failed attempt (timeout, connection error, any non-2xx answer, or an open
circuit refusing the attempt without a request) is retried after an
exponential, jittered delay. When `max_attempts` are spent, or the endpoint
already holds `queue_size` webhooks, the webhook becomes a dead letter;
`redeliver()` (or `smsgw webhooks redeliver`) sends dead letters again. Those
that found the queue full were never really tried: once the endpoint answers
2xx again they are sent again by themselves, a quarter of its queue at a time.

Webhooks are not ordered: a retry may arrive after a later status. Receivers
order by `message.version` and dedupe by `event_id`.

Over 500 lines on purpose: one delivery mechanism (per-endpoint schedule, worker, breaker and
dead letters) whose parts share one pending-webhook record; the store, signing and SSRF checks
are separate modules.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import aiohttp

from smsgw.domain import errors as de
from smsgw.domain.public_urls import UrlPolicy, check_public_url
from smsgw.http_guard import guarded_connector

from .accounts import AccountSecrets
from .breaker import CLOSED, BreakerPolicy, CircuitBreaker
from .dead_letters import (
    DEAD,
    QUEUE_FULL,
    DeadLetterStore,
    MemoryDeadLetterStore,
    StoredDelivery,
    endpoint_of,
    is_http_url,
)
from .payload import Webhook
from .signing import sign

log = logging.getLogger("smsgw.receipt.webhooks")

QUEUED = "queued"
DUPLICATE = "duplicate"  # the same (url, event id) is already on its way
DEAD_LETTERED = "dead-lettered"


@dataclass(frozen=True)
class RetryPolicy:
    base_delay: float = 1.0  # seconds before the 2nd attempt; doubles after each failure
    max_delay: float = 300.0
    max_attempts: int = 12  # including the first
    jitter: float = 0.5  # share of each delay that is random: 0 none, 1 "full jitter"

    def __post_init__(self) -> None:
        if (
            self.max_attempts < 1
            or self.base_delay < 0
            or self.max_delay < self.base_delay
            or not 0 <= self.jitter <= 1
        ):
            raise ValueError(f"invalid retry policy: {self}")

    def delay(self, failed_attempts: int, rand: float) -> float:
        """Seconds to wait after the `failed_attempts`-th failure; `rand` is uniform in [0, 1)."""
        capped = min(self.max_delay, self.base_delay * 2 ** (failed_attempts - 1))
        return capped * (1 - self.jitter * rand)


@dataclass(frozen=True)
class DispatcherConfig:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    queue_size: int = 1000  # per endpoint: waiting + retrying + in flight
    # Requests in flight per endpoint. An endpoint takes about this many over its response time:
    # 4 to one 50 ms away was 77 webhooks/s, behind a platform sending 1,000 statuses/s
    # (bench/webhooks.py; docs/benchmarks.md).
    concurrency: int = 32
    connect_timeout: float = 5.0
    request_timeout: float = 10.0  # whole request, connect included
    idle_seconds: float = 60.0  # an endpoint's worker retires after this long with nothing to do
    dead_letter_log_every: float = 10.0  # one line per endpoint for what it dead-lettered in this long
    user_agent: str = "smsgw-webhooks/1"
    # Callback URLs must be public https ones (SSRF); make run and the tests allow local http.
    urls: UrlPolicy = field(default_factory=UrlPolicy)

    def client_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.request_timeout, sock_connect=self.connect_timeout)


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    status: int | None  # HTTP status, None when no answer came
    error: str = ""
    retry_after: float | None = None


async def post_webhook(
    session: aiohttp.ClientSession,
    webhook: Webhook,
    secret: str,
    *,
    timeout: aiohttp.ClientTimeout,
    user_agent: str = "smsgw-webhooks/1",
    urls: UrlPolicy = UrlPolicy(),
) -> AttemptResult:
    """One signed POST. Redirects are not followed (a 3xx is a failure): the URL is what the client gave.

    The URL is checked again here (an IP literal never meets the session's resolver, which refuses
    names that resolve to non-public addresses)."""
    try:
        check_public_url(webhook.url, field="callback URL", policy=urls)
    except de.InvalidArgument as refused:
        return AttemptResult(ok=False, status=None, error=refused.message)
    headers = sign(secret, webhook.body, event_id=webhook.event_id)
    headers["Content-Type"] = "application/json"
    headers["User-Agent"] = user_agent
    try:
        async with session.post(
            webhook.url, data=webhook.body, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            if 200 <= response.status < 300:
                return AttemptResult(ok=True, status=response.status)
            text = (await response.content.read(200)).decode(errors="replace").strip()
            return AttemptResult(
                ok=False,
                status=response.status,
                error=f"HTTP {response.status}" + (f": {text}" if text else ""),
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
    except TimeoutError:
        return AttemptResult(ok=False, status=None, error=f"timeout after {timeout.total}s")
    except (aiohttp.ClientError, ValueError, OSError) as error:
        return AttemptResult(ok=False, status=None, error=f"{type(error).__name__}: {error}"[:500])


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass
class _Job:
    webhook: Webhook
    stored_id: int | None  # its pending row, when pending rows are kept
    attempts: int = 0
    last_error: str = ""
    on_settled: list[Callable[[], None]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return self.webhook.url, self.webhook.event_id


class _Endpoint:
    def __init__(self, key: str, config: DispatcherConfig) -> None:
        self.key = key
        self.breaker = CircuitBreaker(config.breaker)
        self.schedule: list[tuple[float, int, _Job]] = []  # (due, tie-breaker, job): a heap
        self.in_flight = 0
        self.wakeup = asyncio.Event()
        self.slots = asyncio.Semaphore(config.concurrency)
        self.worker: asyncio.Task | None = None
        #: Letters that found this endpoint's queue full may be in the store (unknown at first:
        #: an earlier run may have left some), to send again once it takes webhooks.
        self.overflow_stored = True

    @property
    def size(self) -> int:
        return len(self.schedule) + self.in_flight


@dataclass
class DispatcherStats:
    enqueued: int = 0
    attempts: int = 0  # requests made, plus attempts an open circuit refused
    refused_by_circuit: int = 0
    retries_scheduled: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    overflow_resent: int = 0


class WebhookDispatcher:
    def __init__(
        self,
        secrets: AccountSecrets,
        store: DeadLetterStore | None = None,
        config: DispatcherConfig = DispatcherConfig(),
        *,
        keep_pending: bool = True,
        session: aiohttp.ClientSession | None = None,
        rand=random.random,
    ) -> None:
        """`keep_pending`: record each webhook in the store until it is settled, so that a restart resends
        it (the store is then the durable queue). False when the caller keeps that durability itself, e.g.
        by committing an event's offset only once `on_settled` ran for its webhook: the store then holds
        only dead letters."""
        self.secrets = secrets
        self.store: DeadLetterStore = store if store is not None else MemoryDeadLetterStore()
        self.config = config
        self.keep_pending = keep_pending
        self.stats = DispatcherStats()
        self._session = session
        self._owns_session = session is None
        self._rand = rand
        self._endpoints: dict[str, _Endpoint] = {}
        self._active: dict[tuple[str, str], _Job] = {}
        self._attempt_tasks: set[asyncio.Task] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._order = itertools.count()
        self._started = False
        self._closed = False
        self._burials = _BurialLog(config.dead_letter_log_every)

    async def __aenter__(self) -> WebhookDispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self, *, resume_pending: bool = True) -> int:
        """Opens the HTTP client and (by default) schedules what a previous run left pending; returns that count."""
        if self._session is None:
            connector = guarded_connector(self.config.urls, limit=0, limit_per_host=self.config.concurrency)
            self._session = aiohttp.ClientSession(connector=connector)
        self._started = True
        if released := self.store.release_resending():
            log.info("%d webhook(s) an earlier run was sending again after their queue was full: again later", released)
        resumed = 0
        if resume_pending and self.keep_pending:
            for row in self.store.pending():
                resumed += self._submit(row.webhook, row) == QUEUED
        if resumed:
            log.info("resumed %d pending webhook(s) from the store", resumed)
        return resumed

    async def close(self, *, grace: float = 0.0) -> None:
        """Stops sending. Unsent webhooks stay pending in the store for the next start."""
        if grace > 0:
            try:
                async with asyncio.timeout(grace):
                    await self.wait_idle()
            except TimeoutError:
                pass
        self._closed = True
        tasks = [e.worker for e in self._endpoints.values() if e.worker] + list(self._attempt_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._endpoints.clear()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- the caller's side: never waits ------------------------------------------------------

    def enqueue(self, webhook: Webhook, on_settled: Callable[[], None] | None = None) -> str:
        """QUEUED (recorded as pending, then sent), DUPLICATE, or DEAD_LETTERED (queue full, bad URL, or an
        earlier run already gave up on this very webhook). Returns at once. With `keep_pending`, it wrote
        one row to the store: once it returned, the webhook survives a crash, so the caller may commit the
        event's offset. Raises only if the store cannot be written (then do not commit).

        `on_settled` runs (on the loop, once) when the webhook was delivered or durably dead-lettered:
        from then on nobody needs the event that caused it. For a DUPLICATE it runs when the copy
        already on its way settles."""
        if not self._started or self._closed:
            raise RuntimeError("WebhookDispatcher is not running: call start() first")
        self.stats.enqueued += 1
        return self._submit(webhook, None, on_settled)

    def redeliver(self, ids: Iterable[int] | None = None) -> list[StoredDelivery]:
        """Schedules dead letters again (all when `ids` is None), with a fresh retry budget; returns those
        scheduled. Beyond an endpoint's `queue_size`, letters go straight back to dead ("queue full")."""
        if not self._started or self._closed:
            raise RuntimeError("WebhookDispatcher is not running: call start() first")
        # Without pending rows a letter stays "dead" until delivered, so a crash meanwhile does not hide it.
        letters = self.store.reopen(ids) if self.keep_pending else self.store.dead_letters(ids)
        return [letter for letter in letters if self._submit(letter.webhook, letter) == QUEUED]

    async def wait_idle(self) -> None:
        """Until nothing is queued, retrying or in flight."""
        await self._idle.wait()

    def breaker_state(self, url: str) -> str:
        endpoint = self._endpoints.get(endpoint_of(url))
        return endpoint.breaker.state(asyncio.get_running_loop().time()) if endpoint else CLOSED

    @property
    def active(self) -> int:
        return len(self._active)

    def crowded(self, fraction: float = 0.5) -> bool:
        """Whether an endpoint that takes webhooks (its circuit closed: it answers, only not as fast
        as they come) holds `fraction` of its queue or more. The feed stops reading while it does,
        instead of letting a burst (a carrier's backlog after an outage) overflow a healthy
        receiver's queue into dead letters; a failing endpoint's overflow is still dead-lettered,
        so one broken receiver does not hold every account's webhooks back."""
        if not self._endpoints:
            return False
        limit = self.config.queue_size * fraction
        now = asyncio.get_running_loop().time()
        return any(e.size >= limit and e.breaker.state(now) == CLOSED for e in self._endpoints.values())

    def headroom(self) -> int:
        """Webhooks the fullest healthy endpoint (circuit closed) can still queue before its queue is
        full: how many events the feed may read at once, each making at most one webhook, without
        dead-lettering a webhook of an endpoint that only answers slower than they come."""
        now = asyncio.get_running_loop().time()
        sizes = [e.size for e in self._endpoints.values() if e.breaker.state(now) == CLOSED]
        return max(0, self.config.queue_size - max(sizes, default=0))

    def _submit(
        self, webhook: Webhook, stored: StoredDelivery | None, on_settled: Callable[[], None] | None = None
    ) -> str:
        loop = asyncio.get_running_loop()
        job_key = (webhook.url, webhook.event_id)
        if job_key in self._active:
            self.stats.duplicates += 1
            if on_settled is not None:
                self._active[job_key].on_settled.append(on_settled)
            return DUPLICATE
        outcome = self._admit(webhook, stored)
        if isinstance(outcome, str):
            if on_settled is not None:
                loop.call_soon(on_settled)
            return outcome
        job = _Job(webhook=webhook, stored_id=outcome, on_settled=[on_settled] if on_settled else [])
        self._active[job.key] = job
        self._idle.clear()
        self._schedule(self._endpoint(endpoint_of(webhook.url)), job, loop.time())
        return QUEUED

    def _admit(self, webhook: Webhook, stored: StoredDelivery | None) -> int | str | None:
        """Its pending row's id (None when rows are not kept), or DEAD_LETTERED."""
        if not is_http_url(webhook.url):
            self._bury(webhook, attempts=0, error=f"not an absolute http(s) URL: {webhook.url[:100]!r}")
            return DEAD_LETTERED
        endpoint = self._endpoint(endpoint_of(webhook.url))
        if endpoint.size >= self.config.queue_size:
            self._bury(webhook, attempts=0, error=QUEUE_FULL)
            endpoint.overflow_stored = True
            return DEAD_LETTERED
        if stored is not None:
            return stored.id
        if not self.keep_pending:
            return None
        stored = self.store.add_pending(webhook)
        return DEAD_LETTERED if stored.state == DEAD else stored.id

    def _endpoint(self, key: str) -> _Endpoint:
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = _Endpoint(key, self.config)
            endpoint.worker = asyncio.get_running_loop().create_task(self._work(endpoint), name=f"webhooks {key}")
        return endpoint

    def _schedule(self, endpoint: _Endpoint, job: _Job, due: float) -> None:
        heapq.heappush(endpoint.schedule, (due, next(self._order), job))
        endpoint.wakeup.set()

    # -- one worker per endpoint ---------------------------------------------------------------

    async def _work(self, endpoint: _Endpoint) -> None:
        while True:
            await endpoint.slots.acquire()
            job = await self._next_due(endpoint)
            if job is None:
                endpoint.slots.release()
                return
            endpoint.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._attempt(endpoint, job))
            self._attempt_tasks.add(task)
            task.add_done_callback(self._attempt_tasks.discard)

    async def _next_due(self, endpoint: _Endpoint) -> _Job | None:
        """The next job whose time has come; None once the endpoint idled `idle_seconds` (it retires)."""
        loop = asyncio.get_running_loop()
        while True:
            wait = self.config.idle_seconds
            if endpoint.schedule:
                wait = endpoint.schedule[0][0] - loop.time()
                if wait <= 0:
                    return heapq.heappop(endpoint.schedule)[2]
            endpoint.wakeup.clear()
            try:
                async with asyncio.timeout(wait):
                    await endpoint.wakeup.wait()
            except TimeoutError:
                # Retired even with its circuit open: memory stays bounded by the endpoints in use, and a
                # dead endpoint that gets webhooks again re-opens its new circuit after a few failures.
                if endpoint.size == 0:
                    if self._endpoints.get(endpoint.key) is endpoint:
                        del self._endpoints[endpoint.key]
                    return None

    async def _attempt(self, endpoint: _Endpoint, job: _Job) -> None:
        try:
            await self._try_once(endpoint, job)
        except Exception as error:  # a defect here must not end the worker or lose the job
            log.exception("webhook %s to %s: unexpected error", job.webhook.event_id, endpoint.key)
            self._after_failure(endpoint, job, f"internal error: {error!r}", None)
        finally:
            endpoint.in_flight -= 1
            endpoint.slots.release()

    async def _try_once(self, endpoint: _Endpoint, job: _Job) -> None:
        loop = asyncio.get_running_loop()
        job.attempts += 1
        self.stats.attempts += 1
        secret = self.secrets.secret_for(job.webhook.account_id)
        if not secret:
            self._bury(
                job.webhook, attempts=job.attempts, error=f"no webhook secret for account {job.webhook.account_id!r}"
            )
            self._settle(job)
            return
        if not endpoint.breaker.allow(loop.time()):
            self.stats.refused_by_circuit += 1
            state = endpoint.breaker.state(loop.time())
            self._after_failure(endpoint, job, f"circuit {state}: not sent", None)
            return
        assert self._session is not None  # opened by start()
        result = await post_webhook(
            self._session,
            job.webhook,
            secret,
            timeout=self.config.client_timeout(),
            urls=self.config.urls,
            user_agent=self.config.user_agent,
        )
        if result.ok:
            endpoint.breaker.record_success()
            if job.stored_id is not None:
                self.store.mark_delivered(job.stored_id)
            self.stats.delivered += 1
            self._settle(job)
            self._resend_overflow(endpoint)
            return
        before = endpoint.breaker.state(loop.time())
        endpoint.breaker.record_failure(loop.time())
        after = endpoint.breaker.state(loop.time())
        if after != before:
            log.warning("webhooks to %s: circuit %s after %s", endpoint.key, after, result.error)
        self._after_failure(endpoint, job, result.error, result.retry_after)

    def _after_failure(self, endpoint: _Endpoint, job: _Job, error: str, retry_after: float | None) -> None:
        job.last_error = error
        if job.attempts >= self.config.retry.max_attempts or self._closed:
            if not self._closed:  # closing: it stays pending in the store for the next start
                self._bury(job.webhook, attempts=job.attempts, error=error)
                self._settle(job)
            return
        delay = self.config.retry.delay(job.attempts, self._rand())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.config.retry.max_delay))
        self.stats.retries_scheduled += 1
        log.debug(
            "webhook %s to %s: attempt %d failed (%s); next in %.2fs",
            job.webhook.event_id,
            endpoint.key,
            job.attempts,
            error,
            delay,
        )
        self._schedule(endpoint, job, asyncio.get_running_loop().time() + delay)

    def _resend_overflow(self, endpoint: _Endpoint) -> None:
        """The endpoint takes webhooks: its letters that found its queue full go out again, up to a
        quarter of its queue at a time (refilled after each delivery), so they neither crowd out new
        webhooks nor make the feed wait (`crowded`: half)."""
        if not endpoint.overflow_stored or self._closed:
            return
        room = self.config.queue_size // 4 - endpoint.size
        if room <= 0:
            return
        letters = self.store.take_overflow(endpoint.key, room, reopen=self.keep_pending)
        if len(letters) < room:
            endpoint.overflow_stored = False
        resent = sum(self._submit(letter.webhook, letter) == QUEUED for letter in letters)
        if resent:  # counted, not logged: after an outage this runs after every delivery
            self.stats.overflow_resent += resent

    def _settle(self, job: _Job) -> None:
        self._active.pop(job.key, None)
        if not self._active:
            self._idle.set()
        for callback in job.on_settled:
            try:
                callback()
            except Exception:
                log.exception("on_settled callback of webhook %s failed", job.webhook.event_id)

    def _bury(self, webhook: Webhook, *, attempts: int, error: str) -> None:
        letter = self.store.mark_dead(webhook, attempts=attempts, error=error)
        self.stats.dead_lettered += 1
        self._burials.buried(endpoint_of(webhook.url), webhook.event_id, letter.id, attempts, error)


class _BurialLog:
    """Says what was dead-lettered without a line per webhook: an endpoint down at 200 messages a
    second buries hundreds a second, and a warning each was most of receipt's time (and 12 MB of
    log in ten minutes). The first of each endpoint in `every` seconds is logged whole; the rest
    in one line at the end of those seconds, counted by error."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._counted: dict[str, collections.Counter[str]] = {}

    def buried(self, endpoint: str, event_id: str, letter: int, attempts: int, error: str) -> None:
        # The endpoint, not the whole URL: its path or query may hold the customer's token.
        counted = self._counted.get(endpoint)
        if counted is not None:
            counted[error if error == QUEUE_FULL else _error_kind(error)] += 1
            return
        log.warning(
            "webhook %s to %s dead-lettered as #%d after %d attempt(s): %s", event_id, endpoint, letter, attempts, error
        )
        self._counted[endpoint] = collections.Counter()
        asyncio.get_running_loop().call_later(self.every, self._summary, endpoint)

    def _summary(self, endpoint: str) -> None:
        counted = self._counted.pop(endpoint, None)
        if counted:
            kinds = ", ".join(f"{error}: {n}" for error, n in counted.most_common())
            log.warning(
                "webhooks to %s: %d more dead-lettered in %.0f s (%s); smsgw webhooks dead-letters lists them",
                endpoint,
                sum(counted.values()),
                self.every,
                kinds,
            )


def _error_kind(error: str) -> str:
    """An error without what differs from one webhook to the next (e.g. "HTTP 500: <body>" -> "HTTP 500")."""
    return error.split(":", 1)[0][:60]


@dataclass(frozen=True)
class RedeliveryOutcome:
    letter: StoredDelivery
    result: AttemptResult


async def redeliver_now(
    store: DeadLetterStore,
    secrets: AccountSecrets,
    ids: Iterable[int] | None = None,
    *,
    config: DispatcherConfig = DispatcherConfig(),
    parallel: int = 8,
) -> list[RedeliveryOutcome]:
    """One attempt for each dead letter (all when `ids` is None), now: delivered ones leave the store,
    failed ones stay dead with one more attempt counted. For the CLI; no breaker, no retries."""
    letters = store.dead_letters(ids)
    limit = asyncio.Semaphore(parallel)

    async def one(session: aiohttp.ClientSession, letter: StoredDelivery) -> RedeliveryOutcome:
        secret = secrets.secret_for(letter.account_id)
        if not secret:
            result = AttemptResult(ok=False, status=None, error=f"no webhook secret for account {letter.account_id!r}")
        else:
            async with limit:
                result = await post_webhook(
                    session,
                    letter.webhook,
                    secret,
                    timeout=config.client_timeout(),
                    user_agent=config.user_agent,
                    urls=config.urls,
                )
        if result.ok:
            store.mark_delivered(letter.id)
        else:
            store.mark_dead(letter.webhook, attempts=letter.attempts + 1, error=result.error)
        return RedeliveryOutcome(letter=letter, result=result)

    async with aiohttp.ClientSession(connector=guarded_connector(config.urls)) as session:
        return list(await asyncio.gather(*(one(session, letter) for letter in letters)))
