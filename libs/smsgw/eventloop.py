"""How every smsgw process runs: on uvloop where it is installed, else asyncio's own loop, and
with the garbage collector tuned for a long-running service.

Each service is an asyncio program with much event-loop work per message (futures, callbacks,
socket reads and writes for gRPC, Kafka and SMPP); uvloop does that work in C. Measured: the SMSC
simulator alone answers ~8,800-9,400 submits/s on it (6,600 on the standard loop the same day);
the services' end-to-end figures moved within the run-to-run noise (docs/benchmarks.md).
SMSGW_EVENT_LOOP=asyncio (ServiceSettings.event_loop) picks the standard loop, e.g. to compare or
to rule uvloop out.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any

LOOPS = ("uvloop", "asyncio")

#: Allocations (net) between young collections, and how many young/middle collections make the
#: next older one. CPython's defaults (700, 10, 10) made intake stop for a full collection of
#: 150-400 ms every 2-3 s under load, finding nothing to free (measured with gc.callbacks):
#: its read model is large and long-lived, and a full collection walks all of it.
GC_THRESHOLDS = (50_000, 20, 100)
#: How often the young and middle generations are collected whatever their counts (seconds;
#: 0: never, only by the thresholds). The counts are of tracked containers allocated minus
#: freed, and a cycle can hold much memory the count does not see (bytes, e.g. a fetched batch
#: or a socket read, are not tracked): the delay topic's reader, pausing and seeking back inside
#: fetched batches at ~20,000 records a second, left ~3 MiB a second of such cycles while its
#: count reached the first threshold only every ~90 s (docs/routing.md). A timed collection
#: frees them within the second, at the cost of a few ms a second.
YOUNG_COLLECTION_SECONDS = 1.0


def tune_gc() -> None:
    """Moves what start-up allocated (modules, descriptors, settings) out of the collector's
    view for good (gc.freeze) and collects the young generation less often: reference counting
    frees nearly everything; the collector is only for cycles, which still go within the
    first threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _collect_young(every: float) -> None:
    while True:
        await asyncio.sleep(every)
        gc.collect(1)


async def _with_timed_collections(main: Coroutine[Any, Any, Any], every: float) -> Any:
    collector = asyncio.create_task(_collect_young(every)) if every > 0 else None
    try:
        return await main
    finally:
        if collector is not None:
            collector.cancel()


def run(
    main: Coroutine[Any, Any, Any], choice: str = "uvloop", young_collection_seconds: float = YOUNG_COLLECTION_SECONDS
) -> Any:
    """asyncio.run(main) on the chosen loop, with the collector tuned (tune_gc) and the young
    generations collected every `young_collection_seconds` (YOUNG_COLLECTION_SECONDS)."""
    tune_gc()
    if choice not in LOOPS:
        main.close()
        raise SystemExit(f"SMSGW_EVENT_LOOP={choice!r}: use one of {', '.join(LOOPS)}")
    wrapped = _with_timed_collections(main, young_collection_seconds)
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:  # an install without it still runs, on the standard loop
            return asyncio.run(wrapped)
        return uvloop.run(wrapped)
    return asyncio.run(wrapped)
