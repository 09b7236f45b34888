"""How every smsgw process runs (smsgw.eventloop): the collector tuned, and its young generations
collected on a timer, so cycles holding buffers the allocation counts do not see are freed."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from smsgw import eventloop


@pytest.fixture
def collector_restored():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Node:
    """A cycle's member holding a buffer (bytes are not tracked by the collector)."""

    def __init__(self) -> None:
        self.buffer = bytes(1 << 20)
        self.me = self


def _generations_collected(every: float, seconds: float) -> tuple[list[int], bool]:
    """The generations collected while a service sleeps `seconds`, and whether a cycle made at
    the start was freed by then."""
    collected: list[int] = []
    running = False  # tune_gc's full collection at start-up is not counted

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start" and running:
            collected.append(info["generation"])

    async def service() -> bool:
        nonlocal running
        running = True
        cycle = weakref.ref(Node())
        await asyncio.sleep(seconds)
        return cycle() is None

    gc.callbacks.append(on_gc)
    try:
        freed = eventloop.run(service(), "asyncio", young_collection_seconds=every)
    finally:
        gc.callbacks.remove(on_gc)
    return collected, freed


def test_the_young_generations_are_collected_on_a_timer_and_free_a_cycle_the_thresholds_would_leave(
    collector_restored,
):
    collected, freed = _generations_collected(every=0.1, seconds=0.55)
    assert gc.get_threshold() == eventloop.GC_THRESHOLDS
    assert collected.count(1) >= 3, collected
    assert freed, "the cycle (and its 1 MiB buffer) was still there"


def test_without_the_timer_only_the_thresholds_collect(collector_restored):
    collected, freed = _generations_collected(every=0, seconds=0.3)
    assert 1 not in collected and 2 not in collected, collected
    assert not freed, "a collection ran though nothing reached the raised thresholds"
