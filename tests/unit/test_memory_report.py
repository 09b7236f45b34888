"""SIGUSR2 names where a service's memory went (smsgw.memory_report)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import tracemalloc

from smsgw.memory_report import breakdown, install_memory_report


def test_without_frames_sigusr2_says_where_the_resident_memory_is(caplog):
    kept: list[object] = []

    async def main():
        install_memory_report("svc", 0)
        assert not tracemalloc.is_tracing()
        try:
            with caplog.at_level(logging.WARNING, logger="smsgw.memory_report"):
                os.kill(os.getpid(), signal.SIGUSR2)
                await asyncio.sleep(0.2)
                kept.extend(object() for _ in range(300_000))  # ~5 MiB of small objects (pymalloc)
                os.kill(os.getpid(), signal.SIGUSR2)
                await asyncio.sleep(0.2)
        finally:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR2)

    asyncio.run(main())
    reports = [r.getMessage() for r in caplog.records if r.getMessage().startswith("svc: RSS")]
    assert len(reports) == 2 and not any("largest sites" in r.getMessage() for r in caplog.records)
    live = [float(re.search(r"live objects ([\d.]+)", r).group(1)) for r in reports]
    assert live[1] - live[0] >= 4.0, reports  # the objects kept in between are counted
    assert "malloc_trim gave" in reports[0] and "C allocator in use" in reports[0], reports[0]


def test_the_breakdown_adds_up_to_no_more_than_is_mapped():
    b = breakdown()
    assert b.rss and b.pymalloc_arenas and b.pymalloc_objects is not None and b.malloc_in_use
    assert b.pymalloc_objects <= b.pymalloc_arenas


def test_sigusr2_logs_the_largest_sites_and_what_grew_since(caplog):
    kept: list[bytes] = []

    async def main():
        report = install_memory_report("svc", 1)
        assert report is not None and tracemalloc.is_tracing()
        try:
            with caplog.at_level(logging.WARNING, logger="smsgw.memory_report"):
                os.kill(os.getpid(), signal.SIGUSR2)
                await asyncio.sleep(0.2)
                kept.extend(bytes(1000) for _ in range(20_000))  # ~20 MB kept, allocated on this line
                os.kill(os.getpid(), signal.SIGUSR2)
                await asyncio.sleep(0.2)
        finally:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR2)
            tracemalloc.stop()

    asyncio.run(main())
    first, second = [r.getMessage() for r in caplog.records if "largest sites" in r.getMessage()]
    assert first.startswith("svc: ") and "grown most" not in first
    grown = second.split("grown most since the last report:")[1].splitlines()[1]
    assert "test_memory_report.py" in grown and "MiB" in grown, grown
