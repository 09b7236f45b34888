#!/usr/bin/env python
"""Protocol-level probes of a broker with aiokafka: the facts docs/brokers.md quotes.

    .venv/bin/python bench/broker_probe.py --broker tansu
    .venv/bin/python bench/broker_probe.py --broker kafka --json /tmp/kafka-probe.json

Probes (each bounded, all on fresh topics):
  idempotence   AIOKafkaProducer(enable_idempotence=True): does start() / send work, what error.
  end_offsets   after batches of k records, does ListOffsets(latest) return last offset + 1?
  fetch_wakeup  produce -> consume latency for several fetch_max_wait_ms values
                (does the broker answer a parked Fetch as soon as data arrives?).
  mid_batch     seek into the middle of multi-record batches: are any records skipped?
  group         consumer-group join time and generation numbers per session timeout, and the
                time a restarted member needs after a clean stop (LeaveGroup) of the first one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from smsgw.brokers import RunningBroker, start_broker


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _create(bs: str, topic: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def probe_idempotence(bs: str) -> dict[str, Any]:
    topic = _name("idem")
    await _create(bs, topic)
    out: dict[str, Any] = {}
    for idem in (False, True):
        key = "idempotent" if idem else "plain"
        p = AIOKafkaProducer(bootstrap_servers=bs, acks="all", enable_idempotence=idem)
        res: dict[str, Any] = {}
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(p.start(), 15)
            res["start"] = "ok"
        except Exception as exc:
            res["start"] = f"{type(exc).__name__}: {exc}"
        if res["start"] == "ok":
            try:
                md = await asyncio.wait_for(p.send_and_wait(topic, b"v", key=b"k"), 15)
                res["send"] = f"ok offset={md.offset}"
            except Exception as exc:
                res["send"] = f"{type(exc).__name__}: {exc}"
        res["elapsed_s"] = round(time.monotonic() - t0, 3)
        try:
            await asyncio.wait_for(p.stop(), 10)
        except Exception as exc:
            res["stop"] = f"{type(exc).__name__}: {exc}"
        out[key] = res
    return out


async def probe_end_offsets(bs: str) -> dict[str, Any]:
    topic = _name("hw")
    await _create(bs, topic)
    tp = TopicPartition(topic, 0)
    p = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=20)
    c = AIOKafkaConsumer(bootstrap_servers=bs)
    await p.start()
    await c.start()
    rows = []
    total = 0
    try:
        for k in (1, 2, 3, 1, 5, 7, 1):
            futs = [await p.send(topic, b"v", partition=0) for _ in range(k)]
            mds = [await f for f in futs]
            total += k
            end = (await c.end_offsets([tp]))[tp]
            rows.append(
                {
                    "batch": k,
                    "first": mds[0].offset,
                    "last": mds[-1].offset,
                    "end_offset": end,
                    "expected": total,
                    "ok": end == total,
                }
            )
    finally:
        await p.stop()
        await c.stop()
    return {"rows": rows, "all_ok": all(r["ok"] for r in rows)}


async def probe_fetch_wakeup(bs: str) -> dict[str, Any]:
    topic = _name("lat")
    await _create(bs, topic)
    tp = TopicPartition(topic, 0)
    p = AIOKafkaProducer(bootstrap_servers=bs)
    await p.start()
    out: dict[str, Any] = {}
    try:
        await p.send_and_wait(topic, b"warmup", partition=0)
        for fmw in (1500, 500, 100, 10):
            c = AIOKafkaConsumer(bootstrap_servers=bs, fetch_max_wait_ms=fmw)
            await c.start()
            c.assign([tp])
            c.seek(tp, (await c.end_offsets([tp]))[tp])
            lats = []
            for _ in range(6):
                await asyncio.sleep(0.13)
                t0 = time.monotonic()
                md = await p.send_and_wait(topic, b"x", partition=0)
                got = False
                while not got:
                    for msgs in (await c.getmany(timeout_ms=5000)).values():
                        got = got or any(m.offset == md.offset for m in msgs)
                lats.append(time.monotonic() - t0)
            await c.stop()
            out[f"fetch_max_wait_ms={fmw}"] = {
                "median_ms": round(statistics.median(lats) * 1000),
                "max_ms": round(max(lats) * 1000),
            }
    finally:
        await p.stop()
    return out


async def probe_mid_batch(bs: str, n: int = 3000) -> dict[str, Any]:
    topic = _name("mb")
    await _create(bs, topic)
    tp = TopicPartition(topic, 0)
    p = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=20, max_batch_size=8192)
    await p.start()
    try:
        futs = []
        for i in range(n):
            futs.append(await p.send(topic, f"value-{i:06d}".encode(), partition=0))
            if i % 500 == 0:
                await asyncio.sleep(0.03)
        await asyncio.gather(*futs)
    finally:
        await p.stop()
    trials = []
    for start, fetch in ((1, 1024), (77, 65536), (n // 2 + 3, 2048), (n - 5, 1048576), (1234, 4096)):
        c = AIOKafkaConsumer(bootstrap_servers=bs, max_partition_fetch_bytes=fetch, fetch_max_wait_ms=50)
        await c.start()
        c.assign([tp])
        c.seek(tp, start)
        got: list[int] = []
        deadline = time.monotonic() + 10
        while len(got) < n - start and time.monotonic() < deadline:
            for msgs in (await c.getmany(timeout_ms=300)).values():
                got += [m.offset for m in msgs]
        await c.stop()
        trials.append(
            {
                "seek": start,
                "max_partition_fetch_bytes": fetch,
                "received": len(got),
                "expected": n - start,
                "ok": got == list(range(start, n)),
            }
        )
    return {"records": n, "trials": trials, "all_ok": all(t["ok"] for t in trials)}


async def _join(bs: str, topic: str, group: str, session_ms: int) -> tuple[AIOKafkaConsumer, float, int]:
    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bs,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(100, session_ms // 4),
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    t0 = time.monotonic()
    await c.start()
    while not c.assignment():
        await c.getmany(timeout_ms=50)
    return c, time.monotonic() - t0, c._coordinator.generation


async def probe_group(bs: str, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sessions = (2000, 6000) if kind == "tansu" else (6000, 10000)
    for session_ms in sessions:
        topic, group = _name("grp"), _name("g")
        await _create(bs, topic, 4)
        c1, join1, gen1 = await _join(bs, topic, group, session_ms)
        await c1.stop()  # clean stop: LeaveGroup only if generation > 0 (aiokafka)
        c2, join2, gen2 = await _join(bs, topic, group, session_ms)
        await c2.stop()
        out[f"session_timeout_ms={session_ms}"] = {
            "first_join_s": round(join1, 3),
            "first_generation": gen1,
            "rejoin_after_clean_stop_s": round(join2, 3),
            "second_generation": gen2,
        }
    return out


async def amain(broker: RunningBroker, only: list[str]) -> dict[str, Any]:
    bs = broker.bootstrap
    res: dict[str, Any] = {"broker": broker.kind}
    probes = {
        "idempotence": lambda: probe_idempotence(bs),
        "end_offsets": lambda: probe_end_offsets(bs),
        "fetch_wakeup": lambda: probe_fetch_wakeup(bs),
        "mid_batch": lambda: probe_mid_batch(bs),
        "group": lambda: probe_group(bs, broker.kind),
    }
    for name, fn in probes.items():
        if only and name not in only:
            continue
        t0 = time.monotonic()
        try:
            res[name] = await asyncio.wait_for(fn(), 60)
        except Exception as exc:
            res[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"{name} ({time.monotonic() - t0:.1f}s): {json.dumps(res[name])}", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    ap.add_argument("--only", default="", help="comma list of probes")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # the probes provoke errors on purpose
    broker = start_broker(args.broker)
    try:
        res = asyncio.run(amain(broker, [p for p in args.only.split(",") if p]))
    finally:
        broker.stop()
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
