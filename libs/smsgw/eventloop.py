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


def tune_gc() -> None:
    """Moves what start-up allocated (modules, descriptors, settings) out of the collector's
    view for good (gc.freeze) and collects the young generation less often: reference counting
    frees nearly everything; the collector is only for cycles, which still go within the
    first threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(main: Coroutine[Any, Any, Any], choice: str = "uvloop") -> Any:
    """asyncio.run(main) on the chosen loop, with the collector tuned (tune_gc)."""
    tune_gc()
    if choice not in LOOPS:
        main.close()
        raise SystemExit(f"SMSGW_EVENT_LOOP={choice!r}: use one of {', '.join(LOOPS)}")
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:  # an install without it still runs, on the standard loop
            return asyncio.run(main)
        return uvloop.run(main)
    return asyncio.run(main)
