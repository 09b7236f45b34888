"""SIGUSR2 names where a service's memory went (smsgw.memory_report)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tracemalloc

from smsgw.memory_report import install_memory_report


def test_off_unless_frames_are_asked_for():
    async def main():
        return install_memory_report("svc", 0)

    assert asyncio.run(main()) is None and not tracemalloc.is_tracing()


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
