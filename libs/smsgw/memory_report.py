"""Where a service's memory goes, asked of the running process.

SIGUSR2 writes to the log where the process's resident memory is: Python's small-object arenas
(and how much of them live objects fill), the C allocator's (in use, and free but kept from the
OS), and how much `malloc_trim` hands back at once. With `SMSGW_TRACEMALLOC_FRAMES` above 0,
tracemalloc also records every allocation from the start (with that many frames of its
traceback) and the report adds the 25 largest allocation sites of the live heap, and those that
grew most since the previous report. Sent twice some minutes apart under steady load, it names
what keeps growing, where RSS alone only says that something does. The recorder is off by
default: it costs CPU and about twice the memory of what it records.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import re
import signal
import sys
import tempfile
import tracemalloc
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Allocation sites per report.
TOP = 25
#: The recorder's own allocations, not the service's.
_NOT_THE_SERVICE = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__))
MiB = 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _glibc() -> ctypes.CDLL | None:
    """glibc's allocator interface (mallinfo2 is 2.33+); None elsewhere (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes; `None` where this platform cannot say."""

    rss: int | None
    anonymous: int | None
    #: Python's small-object allocator (objects up to 512 bytes), in 1 MiB arenas it maps itself.
    pymalloc_arenas: int | None
    pymalloc_objects: int | None
    #: The C allocator (glibc): bytes handed out (larger Python objects, C libraries), and bytes
    #: it holds free without returning them to the OS.
    malloc_in_use: int | None
    malloc_free: int | None
    #: tracemalloc's own bookkeeping, when it records.
    tracer: int

    def describe(self) -> str:
        def mib(n: int | None) -> str:
            return "n/a" if n is None else f"{n / MiB:.1f}"

        return (
            f"RSS {mib(self.rss)} MiB (anonymous {mib(self.anonymous)}): Python's small-object arenas "
            f"{mib(self.pymalloc_arenas)} (live objects {mib(self.pymalloc_objects)}), C allocator in use "
            f"{mib(self.malloc_in_use)}, free in it {mib(self.malloc_free)}, tracemalloc's own {mib(self.tracer)}"
        )


def _proc_status() -> dict[str, int]:
    try:
        with open("/proc/self/status") as status:
            return {
                key: int(value.split()[0]) * 1024
                for key, _, value in (line.partition(":") for line in status)
                if key in ("VmRSS", "RssAnon")
            }
    except OSError:
        return {}


_PYMALLOC_LINE = re.compile(r"^# (arenas allocated current|bytes in allocated blocks)\s*=\s*([\d,]+)", re.M)


def _pymalloc() -> tuple[int | None, int | None]:
    """(arena bytes, bytes in live blocks), read from `sys._debugmallocstats`, which writes to fd 2."""
    if not hasattr(sys, "_debugmallocstats"):
        return None, None
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as out:
            os.dup2(out.fileno(), 2)
            try:
                sys._debugmallocstats()  # noqa: SLF001 - documented in `sys`; the only reader of pymalloc's arenas
            finally:
                os.dup2(saved, 2)
            out.seek(0)
            found = dict(_PYMALLOC_LINE.findall(out.read().decode(errors="replace")))
    finally:
        os.close(saved)
    arenas, live = found.get("arenas allocated current"), found.get("bytes in allocated blocks")
    arena_size = 2**20 if sys.version_info >= (3, 10) else 2**18
    return (
        None if arenas is None else int(arenas.replace(",", "")) * arena_size,
        None if live is None else int(live.replace(",", "")),
    )


def breakdown() -> MemoryBreakdown:
    status = _proc_status()
    arenas, live = _pymalloc()
    in_use = free = None
    if _LIBC is not None:
        info = _LIBC.mallinfo2()
        in_use, free = info.uordblks + info.hblkhd, info.fordblks
    return MemoryBreakdown(
        rss=status.get("VmRSS"),
        anonymous=status.get("RssAnon"),
        pymalloc_arenas=arenas,
        pymalloc_objects=live,
        malloc_in_use=in_use,
        malloc_free=free,
        tracer=tracemalloc.get_tracemalloc_memory() if tracemalloc.is_tracing() else 0,
    )


def trimmed() -> int | None:
    """Asks glibc to return its free memory to the OS; the bytes of RSS that gave back."""
    if _LIBC is None:
        return None
    before = _proc_status().get("VmRSS")
    _LIBC.malloc_trim(0)
    after = _proc_status().get("VmRSS")
    return None if before is None or after is None else before - after


class MemoryReport:
    def __init__(self, service: str, frames: int) -> None:
        self.service = service
        self.frames = frames
        self._previous: tracemalloc.Snapshot | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGUSR2, self.report)
        if self.frames > 0:
            tracemalloc.start(self.frames)
            log.warning(
                "%s: tracemalloc records allocations (%d frames each; costs CPU and memory): "
                "kill -USR2 %d writes the largest to this log",
                self.service,
                self.frames,
                os.getpid(),
            )

    def report(self) -> str:
        lines = [f"{self.service}: {breakdown().describe()}"]
        returned = trimmed()
        if returned is not None:
            lines.append(f"  malloc_trim gave {returned / MiB:.1f} MiB back to the OS")
        if tracemalloc.is_tracing():
            snapshot = tracemalloc.take_snapshot().filter_traces(_NOT_THE_SERVICE)
            current, peak = tracemalloc.get_traced_memory()
            lines.append(f"{self.service}: {current / MiB:.1f} MiB traced (peak {peak / MiB:.1f}); largest sites:")
            lines += [f"  {stat}" for stat in snapshot.statistics("lineno")[:TOP]]
            if self._previous is not None:
                lines.append("grown most since the last report:")
                lines += [f"  {diff}" for diff in snapshot.compare_to(self._previous, "lineno")[:TOP]]
            self._previous = snapshot
        text = "\n".join(lines)
        log.warning("%s", text)
        return text


def install_memory_report(service: str, frames: int) -> MemoryReport:
    """SIGUSR2 reports; `frames` > 0 (ServiceSettings.tracemalloc_frames) also records allocations."""
    report = MemoryReport(service, frames)
    report.install(asyncio.get_running_loop())
    return report
