"""The start and stop sequence the four services share.

Each service's `__main__` builds its parts and hands their lifetimes to a `ServiceRun`:

    run = ServiceRun.of("routing", server, settings, tracing=provider)
    try:
        await run.start()                         # the gRPC server (health says NOT_SERVING)
        await producer.start(); run.on_close(producer.stop)
        run.watch(worker.run(run.stop), "routing loop")
        await run.ready(worker.ready, "partitions assigned and their records loaded")
        await run.until_stopped()                 # SERVING until SIGTERM or a watched task ends
    finally:
        await run.close()

`until_stopped` reports SERVING (and writes the ready file), waits for SIGTERM/SIGINT or for a
watched task to end, reports NOT_SERVING, sets `run.stop` (which the watched tasks observe), runs the
`on_stopping` hooks, and waits for the watched tasks. `close` stops the gRPC server first (its RPCs in
flight still have everything they use), then what `on_close` registered, newest first, then tracing;
a watched task that failed makes the process exit non-zero, so its supervisor restarts it and the
uncommitted work is read again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

from .grpcx.server import ServiceServer, announce_ready, stop_event_on_signals
from .memory_report import install_memory_report
from .settings import ServiceSettings

log = logging.getLogger(__name__)


class ServiceRun:
    def __init__(
        self,
        name: str,
        server: ServiceServer,
        *,
        ready_file: str = "",
        tracing: Any = None,
        server_grace: float = 2.0,
        progress_every: float = 10.0,
        tracemalloc_frames: int = 0,
    ) -> None:
        self.name = name
        self.server = server
        self.ready_file = ready_file
        self.tracing = tracing
        self.server_grace = server_grace
        self.progress_every = progress_every
        #: Set on SIGTERM/SIGINT, or when a watched task ended: what the watched tasks stop on.
        self.stop = stop_event_on_signals()
        self._closing = AsyncExitStack()
        self._stopping: list[Callable[[], Awaitable[object]]] = []
        self._watched: dict[asyncio.Task, str] = {}
        self._started = False
        self.tracemalloc_frames = tracemalloc_frames

    @classmethod
    def of(cls, name: str, server: ServiceServer, settings: ServiceSettings, **options: Any) -> ServiceRun:
        """A run configured by the settings every service shares (its ready file, the memory
        recorder); `options` as for the constructor."""
        return cls(
            name, server, ready_file=settings.ready_file, tracemalloc_frames=settings.tracemalloc_frames, **options
        )

    async def start(self) -> None:
        install_memory_report(self.name, self.tracemalloc_frames)
        await self.server.start()
        self._started = True

    def on_close(self, close: Callable[[], Awaitable[object]]) -> None:
        """Runs at close, after the gRPC server stopped; what was registered last closes first."""
        self._closing.push_async_callback(close)

    def on_stopping(self, hook: Callable[[], Awaitable[object]]) -> None:
        """Runs as soon as the service stops serving, before the watched tasks are waited for (e.g.
        ending submits that would otherwise wait out a timeout)."""
        self._stopping.append(hook)

    def watch(self, work: Coroutine[Any, Any, object], what: str) -> asyncio.Task:
        """Runs `work` as a task; its end, failed or not, stops the service."""
        task = asyncio.create_task(work, name=f"{self.name}: {what}")
        self._watched[task] = what
        return task

    async def ready(self, event: asyncio.Event, what: str) -> None:
        """Waits for `event` with no deadline (what it waits for can take as long as history is
        long: the supervisor's startup probe decides), saying every `progress_every` s what it waits
        for. A watched task that ends first ends the wait with its error."""
        waiting = asyncio.create_task(event.wait())
        try:
            while not event.is_set():
                done, _ = await asyncio.wait(
                    {waiting, *self._watched}, timeout=self.progress_every, return_when=asyncio.FIRST_COMPLETED
                )
                ended = [task for task in done if task is not waiting]
                if ended:
                    ended[0].result()  # raises the task's error
                    raise RuntimeError(f"{self.name}: {self._watched[ended[0]]} ended before the service was ready")
                if not event.is_set():
                    log.info("%s: not ready yet; waiting for %s", self.name, what)
        finally:
            waiting.cancel()

    async def until_stopped(self) -> None:
        await self.server.set_serving(True)
        announce_ready(self.ready_file, self.server.address)
        log.info("%s serving on %s", self.name, self.server.address)
        stop_wait = asyncio.create_task(self.stop.wait())
        await asyncio.wait({stop_wait, *self._watched}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        log.info("%s stopping", self.name)
        await self.server.set_serving(False)
        self.stop.set()
        for hook in self._stopping:
            await hook()
        await asyncio.gather(*self._watched, return_exceptions=True)

    async def close(self) -> None:
        """Stops everything (also after a failed start), then exits non-zero if a watched task failed."""
        self.stop.set()
        if self._watched:
            await asyncio.gather(*self._watched, return_exceptions=True)
        try:
            if self._started:
                await self.server.stop(grace=self.server_grace)
            await self._closing.aclose()
        finally:
            if self.tracing is not None:
                self.tracing.shutdown()
        failed = [
            (what, task.exception())
            for task, what in self._watched.items()
            if not task.cancelled() and task.exception() is not None
        ]
        if failed:
            what, error = failed[0]
            log.error("%s: %s failed: %r", self.name, what, error)
            raise SystemExit(1)
