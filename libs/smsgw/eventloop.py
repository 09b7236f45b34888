"""The event loop every smsgw process runs on: uvloop where it is installed, else asyncio's own.

Each service is an asyncio program whose cost per message is mostly event-loop work (futures,
callbacks, socket reads and writes for gRPC, Kafka and SMPP). uvloop does that work in C
(docs/benchmarks.md has the before/after). SMSGW_EVENT_LOOP=asyncio picks the standard loop,
e.g. to compare or to rule uvloop out when chasing a bug.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Coroutine

LOOPS = ("uvloop", "asyncio")


def run(main: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run(main) on the configured loop."""
    choice = os.environ.get("SMSGW_EVENT_LOOP", "uvloop")
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
