"""The delay topic's reader alone: laps a second and its RSS while it laps.

    .venv/bin/python bench/delay_reader.py [--waiting 20000] [--lap 1.0] [--seconds 30]

`--waiting` deferred commands with many laps left are written to the delay topic of a fresh Apache
Kafka broker; one `DelayedCommands` (services/carrier_adapter/delayed_commands.py) reads them,
writing each back for its next lap when it is due, so it laps about `waiting / lap` records a
second. Prints the laps a second and the process's RSS every 5 s (docs/routing.md, "Not yet":
the RSS grows at 15,000-25,000 laps a second). Bounded by `--seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time
import uuid
from pathlib import Path

from smsgw import eventloop
from smsgw.brokers import start_broker
from smsgw.events.topics import CARRIER_DISPATCH, CARRIER_DISPATCH_DELAYED
from smsgw.kafka.clients import ensure_topics, make_group_consumer, make_producer
from smsgw.settings import ServiceSettings
from smsgw.v1 import carrier_pb2 as cp
from smsgw_carrier_adapter.deferral import DelayTiers
from smsgw_carrier_adapter.delayed_commands import DelayedCommands
from smsgw_dev.platform import broker_env


def _rss_mib() -> int:
    return next(int(line.split()[1]) // 1024 for line in open("/proc/self/status") if line.startswith("VmRSS"))


async def measure(bootstrap: str, waiting: int, lap: float, seconds: float) -> None:
    settings = ServiceSettings(
        kafka_bootstrap=bootstrap, topic_prefix=f"dr{uuid.uuid4().hex[:6]}.", state_dir=tempfile.mkdtemp()
    )
    await ensure_topics(bootstrap, settings.topic_prefix)
    producer = make_producer(settings)
    await producer.start()
    delay = settings.topic(CARRIER_DISPATCH_DELAYED)
    for n in range(waiting):
        command = cp.DispatchCommand(
            command_id=f"c{n}", message_id=f"m{n}", carrier="down", laps_left=1_000_000, deferrals=1
        )
        await producer.send(delay, key=command.message_id.encode(), value=command.SerializeToString())
    await producer.flush()
    # The one-lap tier alone, so that every waiting record is written again every lap (the reader's
    # worst case; with every tier, these would wait on the 16-lap tier, one write per 16 laps).
    reader = DelayedCommands(
        consumer=make_group_consumer(settings, "carrier-adapter-delayed", delay),
        producer=producer,
        tiers=DelayTiers({1: delay}, lap),
        dispatch_topic=settings.topic(CARRIER_DISPATCH),
    )
    await reader.consumer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(reader.run(stop))
    pauses: list[float] = []  # the collector's pauses (s), whatever started them
    started: list[float] = []

    def on_gc(phase: str, _info: dict) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses.append(time.perf_counter() - started.pop())

    gc.callbacks.append(on_gc)
    began, last = time.monotonic(), 0
    print(f"{waiting} waiting, laps of {lap} s; RSS {_rss_mib()} MiB before", flush=True)
    while time.monotonic() - began < seconds:
        await asyncio.sleep(5)
        print(
            f"{time.monotonic() - began:5.0f} s: {(reader.lapped - last) / 5:8.0f} laps/s, RSS {_rss_mib()} MiB",
            flush=True,
        )
        last = reader.lapped
    gc.callbacks.remove(on_gc)
    print(
        f"collections: {len(pauses)}, {sum(pauses) * 1000:.0f} ms in all "
        f"({sum(pauses) * 1000 / seconds:.1f} ms a second), longest {max(pauses, default=0) * 1000:.1f} ms",
        flush=True,
    )
    stop.set()
    await task
    await reader.consumer.stop()
    await producer.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--waiting", type=int, default=20_000)
    p.add_argument("--lap", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument(
        "--young-collection-seconds",
        type=float,
        default=eventloop.YOUNG_COLLECTION_SECONDS,
        help="the services' timed young collection (0: thresholds only, as before it)",
    )
    args = p.parse_args()
    broker = start_broker("kafka", log_path=Path(tempfile.mkdtemp(prefix="smsgw-bench-delay-")) / "kafka.log")
    try:
        os.environ.update(broker_env(broker.kind))
        eventloop.run(
            measure(broker.bootstrap, args.waiting, args.lap, args.seconds), "uvloop", args.young_collection_seconds
        )
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
