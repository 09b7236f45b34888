"""start_app waits as long as recovery takes (no fixed deadline that history can outgrow) and
says what it waits for. The app here is a stand-in for faust's: what is under test is the wait."""

import asyncio
import logging
from types import SimpleNamespace

import pytest

from smsgw.streams import start_app


class SlowApp:
    """Partitions assigned at once; tables recovered after `recovery` seconds."""

    def __init__(self, recovery: float):
        self.recovered = asyncio.Event()
        self.recovery = recovery
        self.conf = SimpleNamespace(id="slow-app")
        self.consumer = SimpleNamespace(assignment=lambda: {"tp"})
        self.tables = SimpleNamespace(recovery=SimpleNamespace(completed=self.recovered))
        self.rebalancing = False

    async def start(self):
        asyncio.get_running_loop().call_later(self.recovery, self.recovered.set)


async def test_start_waits_for_a_long_recovery_and_reports_progress(caplog):
    caplog.set_level(logging.INFO, logger="smsgw.streams")
    await asyncio.wait_for(start_app(SlowApp(recovery=0.5), progress_every=0.1), 5)
    waits = [r.getMessage() for r in caplog.records if "still waiting" in r.getMessage()]
    assert len(waits) >= 3 and "tables recovered: False" in waits[0]


async def test_a_deadline_is_only_what_the_caller_asks_for():
    with pytest.raises(TimeoutError, match="not ready after 0.2s"):
        await start_app(SlowApp(recovery=60), timeout=0.2)
