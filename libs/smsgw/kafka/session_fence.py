"""Whether a consumer-group member may still act on its partitions after its process stood still.

A process frozen for longer than its group session (SIGSTOP, a paused VM or container, swapping)
sent no heartbeat meanwhile: the brokers have given its partitions to another member, which
handles their records again. Woken, the process still holds those records in memory, and
`assignment()` still lists the partitions until its next heartbeat learns otherwise: a task that
resumes first would act on work it no longer owns (`make chaos` saw a woken carrier-adapter
submit a command its successor had already submitted). No protocol offers a fencing token at the
carrier, so the member fences itself: a tick every `tick` seconds, and `check()` before each
action raises SessionLost when the last tick is older than the session timeout. The service
exits on it (it is started again, as after any fatal error) rather than reconcile in place.

What is left: a freeze between the check and the action (microseconds of code) acts once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable


class SessionLost(RuntimeError):
    """The process stood still for longer than its group session: its partitions are gone."""


class SessionFence:
    def __init__(self, session_timeout: float, *, tick: float = 0.25, clock: Callable[[], float] = time.monotonic):
        self.session_timeout = session_timeout
        self.tick = tick
        self.clock = clock
        #: The last tick; None until run() starts (a service's start-up, however long, is not a
        #: freeze: the group gives it its partitions after it, and the fence counts from there).
        self._last: float | None = None

    def check(self) -> None:
        if self._last is None:
            return
        stood_still = self.clock() - self._last
        if stood_still > self.session_timeout:
            raise SessionLost(
                f"this process stood still for {stood_still:.1f} s, longer than its consumer group session "
                f"({self.session_timeout:.1f} s): its partitions belong to another member now"
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Ticks until `stop`; ends by raising SessionLost when a tick comes too late."""
        self._last = self.clock()
        while not stop.is_set():
            self.check()
            self._last = self.clock()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick):
                    await stop.wait()
