#!/usr/bin/env python
"""Faust on Tansu vs Apache Kafka: start-up, table recovery, and one-hop throughput.

    .venv/bin/python bench/faust_hop.py --broker tansu --events 20000
    .venv/bin/python bench/faust_hop.py --broker kafka --events 20000 --phases throughput

Phases (all in this one process, one asyncio loop, faust embedded with faust.Worker):
  startup     app built by a factory (agent A -> B plus a changelog Table); one probe event is
              waiting in A; measure worker start -> ready, and start -> probe processed by the agent.
  recovery    stop that worker, build a fresh app with the same id, start it again: the Table must
              come back from its changelog; measure ready / first-event times, check the counts.
  throughput  --events small events pre-loaded into A; time from the first event the agent sees
              until B holds all of them (faust hop, with and without the Table update), then the
              same with a plain aiokafka consume -> produce -> commit loop.

Every phase has a deadline (--phase-timeout); a phase that runs out reports what it got.
Results are printed and, with --json, written as one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from smsgw.brokers import RunningBroker, start_broker
from smsgw.brokers.faust_support import EmbeddedWorker, faust_settings

log = logging.getLogger("faust_hop")


# ----------------------------------------------------------------------------------------------
# the faust app (factory: nothing at module level)
# ----------------------------------------------------------------------------------------------


@dataclass
class HopStats:
    seen: int = 0
    sent: int = 0
    first_seen: float | None = None
    first_cpu: tuple[float, float | None] | None = None
    last_seen: float | None = None
    first_event_keys: list[bytes] = field(default_factory=list)
    probe_seen_at: dict[bytes, float] = field(default_factory=dict)


def build_hop_app(
    app_id: str,
    *,
    settings: dict[str, Any],
    src: str,
    dst: str,
    partitions: int,
    with_table: bool,
    datadir: Path,
    broker_pid: int | None = None,
) -> tuple[faust.App, HopStats]:
    """One agent reading *src*, writing *dst*; optionally a per-key counter Table (changelog)."""
    stats = HopStats()
    app = faust.App(
        app_id,
        datadir=str(datadir),
        autodiscover=False,
        **settings,
    )
    src_t = app.topic(
        src, key_type=bytes, value_type=bytes, partitions=partitions, key_serializer="raw", value_serializer="raw"
    )
    dst_t = app.topic(
        dst, key_type=bytes, value_type=bytes, partitions=partitions, key_serializer="raw", value_serializer="raw"
    )
    counts = None
    if with_table:
        # str keys / int values with the default json codec (the changelog is json).
        counts = app.Table("counts", default=int, partitions=partitions, key_type=str, value_type=int)

    @app.agent(src_t)
    async def hop(stream: faust.StreamT) -> None:
        async for event in stream.events():
            now = time.monotonic()
            if stats.first_seen is None:
                stats.first_seen = now
                stats.first_cpu = cpu_snapshot(broker_pid)
            stats.last_seen = now
            stats.seen += 1
            key = event.key
            if key is not None and key.startswith(b"probe"):
                stats.probe_seen_at.setdefault(key, now)
            if counts is not None:
                counts[key.decode()] += 1
            await dst_t.send(key=key, value=event.value)
            stats.sent += 1

    app.smsgw_counts = counts  # type: ignore[attr-defined]
    return app, stats


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def cpu_snapshot(broker_pid: int | None) -> tuple[float, float | None]:
    """(CPU seconds of this process, all threads; CPU seconds of the broker process or None).

    CPU per event is the robust number on a shared 2-core box: wall-clock rates move with
    whatever else runs, CPU seconds per event much less.
    """
    broker_cpu = None
    if broker_pid:
        try:
            with open(f"/proc/{broker_pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            broker_cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return time.process_time(), broker_cpu


def cpu_report(first: tuple[float, float | None] | None, last: tuple[float, float | None], n: int) -> dict[str, Any]:
    if first is None or n <= 0:
        return {}
    out: dict[str, Any] = {"client_cpu_s": round(last[0] - first[0], 3)}
    out["client_us_per_event"] = round((last[0] - first[0]) / n * 1e6, 1)
    if first[1] is not None and last[1] is not None:
        out["broker_cpu_s"] = round(last[1] - first[1], 3)
        out["broker_us_per_event"] = round((last[1] - first[1]) / n * 1e6, 1)
    return out


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def produce(
    broker: RunningBroker,
    topic: str,
    n: int,
    *,
    key_prefix: bytes = b"k",
    keys: int = 1000,
    payload: int = 64,
    key_of=None,
) -> float:
    """Produce n small events; returns seconds taken."""
    p = AIOKafkaProducer(**broker.producer_settings(linger_ms=5, max_batch_size=65536))
    await p.start()
    t0 = time.monotonic()
    try:
        value = b"x" * payload
        pending = []
        for i in range(n):
            key = key_of(i) if key_of else key_prefix + str(i % keys).encode()
            pending.append(await p.send(topic, value, key=key))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await p.stop()
    return time.monotonic() - t0


class Counter:
    """Consumes *topic* from offset 0 and records when it has seen *target* records.

    Counting by consuming (not by end offsets) because Tansu under-reports end offsets
    (see docs/brokers.md); it costs the measured process ~0.1 s CPU per 20k records.
    """

    def __init__(self, broker: RunningBroker, topic: str, partitions: int, target: int) -> None:
        self.broker, self.topic, self.partitions, self.target = broker, topic, partitions, target
        self.count = 0
        self.done_at: float | None = None
        self.done_cpu: tuple[float, float | None] | None = None
        self._task: asyncio.Task | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        c = AIOKafkaConsumer(bootstrap_servers=self.broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
        await c.start()
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        self._consumer = c
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while self.count < self.target:
            batches = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            self.count += sum(len(v) for v in batches.values())
        self.done_at = time.monotonic()
        self.done_cpu = cpu_snapshot(self.broker.pid)

    async def wait(self, deadline: float) -> tuple[int, float]:
        assert self._task is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._task), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            pass
        return self.count, self.done_at or time.monotonic()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


async def read_changelog(broker: RunningBroker, topic: str, partitions: int) -> dict[str, Any]:
    """Last value per key in a json-keyed changelog topic (read from offset 0)."""
    c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        latest: dict[str, Any] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any([await c.position(tp) < ends[tp] for tp in tps]):
            for msgs in (await c.getmany(timeout_ms=200)).values():
                for m in msgs:
                    latest[json.loads(m.key)] = json.loads(m.value) if m.value else None
        return latest
    finally:
        await c.stop()


async def start_worker(app: faust.App, timeout: float) -> EmbeddedWorker:
    worker = EmbeddedWorker(app, loop=asyncio.get_running_loop())
    try:
        await asyncio.wait_for(worker.start(), timeout)
    except BaseException:  # timeout, or the whole run being cancelled (--max-seconds)
        # A half-started worker keeps faust's consumer thread alive: always stop it.
        await stop_worker(worker, 15.0)
        raise
    return worker


async def stop_worker(worker: EmbeddedWorker | None, timeout: float = 30.0) -> float:
    if worker is None:
        return 0.0
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(worker.stop(), timeout)
    except TimeoutError:
        log.warning("worker.stop() timed out after %.0fs", timeout)
    return time.monotonic() - t0


async def wait_until(pred, deadline: float, poll: float = 0.01) -> bool:
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(poll)
    return pred()


# ----------------------------------------------------------------------------------------------
# phases
# ----------------------------------------------------------------------------------------------


async def phase_startup_recovery(broker: RunningBroker, args, settings, workdir: Path) -> dict:
    run = uuid.uuid4().hex[:6]
    src, dst, app_id = f"hop-a-{run}", f"hop-b-{run}", f"hop-app-{run}"
    P = args.partitions
    await create_topics(broker.bootstrap, [src, dst], P)
    out: dict[str, Any] = {}
    n_keys, per_key = 50, 4

    # -- first start, a probe event already waiting ------------------------------------------
    await produce(broker, src, 1, key_of=lambda i: b"probe-1")
    app, stats = build_hop_app(
        app_id, settings=settings, src=src, dst=dst, partitions=P, with_table=True, datadir=workdir / "s1"
    )
    t0 = time.monotonic()
    deadline = t0 + args.phase_timeout
    worker = None
    try:
        try:
            worker = await start_worker(app, args.phase_timeout)
        except TimeoutError:
            out["first_start_ready_s"] = f">{args.phase_timeout} (timeout)"
            return out
        out["first_start_ready_s"] = round(time.monotonic() - t0, 3)
        ok = await wait_until(lambda: b"probe-1" in stats.probe_seen_at, deadline)
        out["first_start_to_first_event_s"] = round(stats.probe_seen_at[b"probe-1"] - t0, 3) if ok else None
        # live latency: events produced (by an already started producer) while the worker runs
        live = AIOKafkaProducer(**broker.producer_settings())
        await live.start()
        lats = []
        try:
            for i in range(5):
                key = f"probe-live-{i}".encode()
                await asyncio.sleep(0.2)
                t1 = time.monotonic()
                await live.send_and_wait(src, b"x", key=key)
                if await wait_until(lambda key=key: key in stats.probe_seen_at, deadline):
                    lats.append(stats.probe_seen_at[key] - t1)
        finally:
            await live.stop()
        out["live_event_latency_ms_median"] = round(statistics.median(lats) * 1000, 1) if lats else None
        out["live_event_latency_ms_max"] = round(max(lats) * 1000, 1) if lats else None
        # build table state
        await produce(broker, src, n_keys * per_key, key_of=lambda i: b"t" + str(i % n_keys).encode())
        target = 6 + n_keys * per_key
        ok = await wait_until(lambda: stats.seen >= target, deadline)
        out["first_run_events_seen"] = stats.seen
        # let faust commit offsets and flush the changelog
        await asyncio.sleep(settings.get("broker_commit_interval", 2.8) + 0.5)
    finally:
        out["first_stop_s"] = round(await stop_worker(worker), 3)

    # -- restart: the Table must be recovered from its changelog -------------------------------
    await produce(broker, src, 1, key_of=lambda i: b"probe-2")
    app2, stats2 = build_hop_app(
        app_id, settings=settings, src=src, dst=dst, partitions=P, with_table=True, datadir=workdir / "s2"
    )
    t0 = time.monotonic()
    deadline = t0 + args.phase_timeout
    worker = None
    try:
        try:
            worker = await start_worker(app2, args.phase_timeout)
        except TimeoutError:
            out["restart_ready_s"] = f">{args.phase_timeout} (timeout)"
            return out
        out["restart_ready_s"] = round(time.monotonic() - t0, 3)
        ok = await wait_until(lambda: b"probe-2" in stats2.probe_seen_at, deadline)
        out["restart_to_first_event_s"] = round(stats2.probe_seen_at[b"probe-2"] - t0, 3) if ok else None
        counts = app2.smsgw_counts  # type: ignore[attr-defined]  # set on the app by build_app
        recovered = {k: counts[f"t{k}"] for k in range(n_keys)}
        out["table_recovered_ok"] = all(v == per_key for v in recovered.values())
        if not out["table_recovered_ok"]:
            bad = {k: v for k, v in recovered.items() if v != per_key}
            out["table_recovered_mismatch"] = bad
            # Is the changelog itself short, or did recovery miss records that are there?
            latest = await read_changelog(broker, f"{app_id}-counts-changelog", P)
            out["changelog_latest_for_mismatched"] = {k: latest.get(f"t{k}") for k in bad}
        # events re-delivered after restart (at-least-once: uncommitted ones come back)
        out["restart_redelivered_events"] = stats2.seen - 1
    finally:
        out["restart_stop_s"] = round(await stop_worker(worker), 3)
    return out


async def phase_faust_throughput(broker: RunningBroker, args, settings, workdir: Path, with_table: bool) -> dict:
    run = uuid.uuid4().hex[:6]
    src, dst, app_id = f"tp-a-{run}", f"tp-b-{run}", f"tp-app-{run}"
    P, N = args.partitions, args.events
    await create_topics(broker.bootstrap, [src, dst], P)
    produce_s = await produce(broker, src, N, payload=args.payload)
    app, stats = build_hop_app(
        app_id,
        settings=settings,
        src=src,
        dst=dst,
        partitions=P,
        with_table=with_table,
        datadir=workdir / f"tp{int(with_table)}",
        broker_pid=broker.pid,
    )
    t0 = time.monotonic()
    deadline = t0 + args.phase_timeout
    worker = None
    out: dict[str, Any] = {"events": N, "preload_produce_s": round(produce_s, 3)}
    counter = Counter(broker, dst, P, N)
    await counter.start()
    try:
        worker = await start_worker(app, args.phase_timeout)
        out["ready_s"] = round(time.monotonic() - t0, 3)
        n_out, t_done = await counter.wait(deadline)
        out["delivered"] = n_out
        if stats.first_seen is not None:
            dur = max(1e-9, t_done - stats.first_seen)
            out["hop_s"] = round(dur, 3)
            out["events_per_s"] = round(n_out / dur)
            out.update(cpu_report(stats.first_cpu, counter.done_cpu or cpu_snapshot(broker.pid), n_out))
        out["complete"] = n_out >= N
    finally:
        out["stop_s"] = round(await stop_worker(worker), 3)
        await counter.stop()
    return out


async def phase_aiokafka_throughput(broker: RunningBroker, args) -> dict:
    run = uuid.uuid4().hex[:6]
    src, dst, group = f"ak-a-{run}", f"ak-b-{run}", f"ak-group-{run}"
    P, N = args.partitions, args.events
    await create_topics(broker.bootstrap, [src, dst], P)
    produce_s = await produce(broker, src, N, payload=args.payload)
    out: dict[str, Any] = {"events": N, "preload_produce_s": round(produce_s, 3)}
    consumer = AIOKafkaConsumer(src, group_id=group, **broker.consumer_settings(max_poll_records=2000))
    producer = AIOKafkaProducer(**broker.producer_settings(linger_ms=0))
    counter = Counter(broker, dst, P, N)
    await counter.start()
    t0 = time.monotonic()
    deadline = t0 + args.phase_timeout
    await producer.start()
    await consumer.start()
    out["ready_s"] = round(time.monotonic() - t0, 3)
    seen, first = 0, None
    first_cpu = None
    try:
        while seen < N and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            if not batches:
                continue
            if first is None:
                first = time.monotonic()
                first_cpu = cpu_snapshot(broker.pid)
            futs = []
            for msgs in batches.values():
                for m in msgs:
                    futs.append(await producer.send(dst, m.value, key=m.key))
                seen += len(msgs)
            await asyncio.gather(*futs)  # acked by the broker before we commit the input
            await consumer.commit()
        n_out, t_done = await counter.wait(deadline)
        out["consumed"] = seen
        out["delivered"] = n_out
        if first is not None:
            dur = max(1e-9, t_done - first)
            out["hop_s"] = round(dur, 3)
            out["events_per_s"] = round(n_out / dur)
            out.update(cpu_report(first_cpu, counter.done_cpu or cpu_snapshot(broker.pid), n_out))
        out["complete"] = n_out >= N
    finally:
        await consumer.stop()
        await producer.stop()
        await counter.stop()
    return out


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


async def amain(args, broker: RunningBroker, result: dict[str, Any]) -> dict:
    overrides = json.loads(args.faust_settings) if args.faust_settings else {}
    settings = faust_settings(
        broker.kind, broker.bootstrap, tuned_transport=not args.stock, with_tables=not args.no_table_fix
    )
    settings.update(topic_partitions=args.partitions, **overrides)
    result.update(
        {
            "broker": broker.kind,
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "events": args.events,
            "partitions": args.partitions,
            "faust_settings": {k: v for k, v in settings.items() if k != "broker"},
            "faust_broker_url": settings["broker"],
        }
    )
    workdir = Path(tempfile.mkdtemp(prefix="faust-hop-"))
    try:
        phases = args.phases.split(",")
        if "startup" in phases:
            result["startup"] = await phase_startup_recovery(broker, args, settings, workdir)
            print("startup/recovery:", json.dumps(result["startup"]), flush=True)
        if "throughput" in phases:
            result["faust_hop"] = await phase_faust_throughput(broker, args, settings, workdir, with_table=False)
            print("faust hop:", json.dumps(result["faust_hop"]), flush=True)
            result["faust_hop_table"] = await phase_faust_throughput(broker, args, settings, workdir, with_table=True)
            print("faust hop + table:", json.dumps(result["faust_hop_table"]), flush=True)
            result["aiokafka_loop"] = await phase_aiokafka_throughput(broker, args)
            print("aiokafka loop:", json.dumps(result["aiokafka_loop"]), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", choices=["tansu", "kafka", "external"], default="tansu")
    ap.add_argument("--bootstrap", help="with --broker external (env SMSGW_KAFKA_BOOTSTRAP)")
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--payload", type=int, default=64, help="value bytes per event")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--phases", default="startup,throughput")
    ap.add_argument("--phase-timeout", type=float, default=40.0)
    ap.add_argument(
        "--max-seconds", type=float, default=110.0, help="hard bound for the whole run (broker start excluded)"
    )
    ap.add_argument(
        "--stock",
        action="store_true",
        help="stock kafka:// transport instead of smsgw-kafka:// (no fetch wait, "
        "idempotence or end-offset fix); on Tansu then producer_max_batch_size=1",
    )
    ap.add_argument(
        "--no-table-fix",
        action="store_true",
        help="with --stock on Tansu: keep normal producer batching (Table recovery then loses updates)",
    )
    ap.add_argument("--faust-settings", help="JSON overrides, e.g. '{\"broker_session_timeout\": 6}'")
    ap.add_argument("--json", type=Path, help="write the result object here")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    args.events = max(1, min(args.events, 200_000))  # keep runs bounded

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.broker == "external" and args.bootstrap:
        os.environ["SMSGW_KAFKA_BOOTSTRAP"] = args.bootstrap
    t0 = time.monotonic()
    broker = start_broker(args.broker)
    broker_start = time.monotonic() - t0
    print(f"{broker.kind} broker ready at {broker.bootstrap} in {broker_start:.2f}s", flush=True)
    result: dict[str, Any] = {}

    async def bounded() -> None:
        try:
            await asyncio.wait_for(amain(args, broker, result), args.max_seconds)
        except TimeoutError:
            result["aborted"] = f"run exceeded --max-seconds {args.max_seconds}"

    try:
        asyncio.run(bounded())
    finally:
        broker.stop()
    result["broker_start_s"] = round(broker_start, 3)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
