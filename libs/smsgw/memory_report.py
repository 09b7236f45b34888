"""Where a service's memory goes, asked of the running process.

With `SMSGW_TRACEMALLOC_FRAMES` above 0, tracemalloc records every allocation from the start
(with that many frames of its traceback) and SIGUSR2 writes to the log the 25 largest
allocation sites of the live heap, and those that grew most since the previous report. Sent
twice some minutes apart under steady load, it names what keeps growing, where RSS alone only
says that something does. Off by default: recording costs CPU and about twice the memory of
what it records.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tracemalloc

log = logging.getLogger(__name__)

#: Allocation sites per report.
TOP = 25
#: The recorder's own allocations, not the service's.
_NOT_THE_SERVICE = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__))


class MemoryReport:
    def __init__(self, service: str, frames: int) -> None:
        self.service = service
        self.frames = frames
        self._previous: tracemalloc.Snapshot | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        tracemalloc.start(self.frames)
        loop.add_signal_handler(signal.SIGUSR2, self.report)
        log.warning(
            "%s: tracemalloc records allocations (%d frames each; costs CPU and memory): "
            "kill -USR2 %d writes the largest to this log",
            self.service,
            self.frames,
            os.getpid(),
        )

    def report(self) -> str:
        snapshot = tracemalloc.take_snapshot().filter_traces(_NOT_THE_SERVICE)
        current, peak = tracemalloc.get_traced_memory()
        lines = [f"{self.service}: {current / 2**20:.1f} MiB traced (peak {peak / 2**20:.1f}); largest sites:"]
        lines += [f"  {stat}" for stat in snapshot.statistics("lineno")[:TOP]]
        if self._previous is not None:
            lines.append("grown most since the last report:")
            lines += [f"  {diff}" for diff in snapshot.compare_to(self._previous, "lineno")[:TOP]]
        self._previous = snapshot
        text = "\n".join(lines)
        log.warning("%s", text)
        return text


def install_memory_report(service: str, frames: int) -> MemoryReport | None:
    """Starts recording when `frames` > 0 (ServiceSettings.tracemalloc_frames); SIGUSR2 reports."""
    if frames <= 0:
        return None
    report = MemoryReport(service, frames)
    report.install(asyncio.get_running_loop())
    return report
