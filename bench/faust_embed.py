#!/usr/bin/env python
"""faust + grpc.aio in one process and one asyncio loop: does it work, and how to run it.

    .venv/bin/python bench/faust_embed.py --broker tansu
    .venv/bin/python bench/faust_embed.py --broker kafka --variant plain-worker

Variants:
  embedded      (the recipe) smsgw.brokers.faust_support.EmbeddedWorker: `await worker.start()`
                returns once the app is running; the host owns SIGTERM/SIGINT and stops grpc first,
                then the worker.
  plain-worker  faust.Worker(app, loop=loop) as documented by faust: shows that `await start()`
                does not return (mode.Worker daemon=True) and that it replaces the host's signal
                handlers.

The run: a grpc.aio server (grpc.health.v1) and a faust agent (topic A -> B) share the loop; while
the agent processes --events events, a client issues Health/Check RPCs and a ticker measures loop
lag. Then the script SIGTERMs itself and reports how the shutdown went.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import faust
import grpc
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from smsgw.brokers import RunningBroker, free_port, start_broker
from smsgw.brokers.faust_support import EmbeddedWorker, faust_settings


def build_app(app_id: str, broker: RunningBroker, src: str, dst: str, datadir: Path):
    processed: list[float] = []
    app = faust.App(app_id, datadir=str(datadir), autodiscover=False, **faust_settings(broker.kind, broker.bootstrap))
    a = app.topic(src, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    b = app.topic(dst, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    @app.agent(a)
    async def hop(stream):
        async for event in stream.events():
            await b.send(key=event.key, value=event.value)
            processed.append(time.monotonic())

    return app, processed


async def run(args, broker: RunningBroker) -> dict:
    loop = asyncio.get_running_loop()
    out: dict = {"broker": broker.kind, "variant": args.variant}
    run_id = uuid.uuid4().hex[:6]
    src, dst = f"embed-a-{run_id}", f"embed-b-{run_id}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(src, 12, 1), NewTopic(dst, 12, 1)])
    await admin.close()

    # --- host: grpc.aio server + its own signal handling ----------------------------------------
    server = grpc.aio.server()
    health_servicer = health.aio.HealthServicer() if hasattr(health, "aio") else None
    if health_servicer is None:
        from grpc_health.v1 import _async as health_async

        health_servicer = health_async.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    host_handler = loop._signal_handlers.get(signal.SIGTERM)  # type: ignore[attr-defined]  # what faust may replace

    # --- faust in the same loop ---------------------------------------------------------------
    app, processed = build_app(f"embed-{run_id}", broker, src, dst, Path(tempfile.mkdtemp(prefix="faust-embed-")))
    if args.variant == "embedded":
        worker: faust.Worker = EmbeddedWorker(app, loop=loop)
    else:
        worker = faust.Worker(app, loop=loop, override_logging=False, quiet=True)
    t0 = time.monotonic()
    start_task = asyncio.ensure_future(worker.start())
    done, _ = await asyncio.wait({start_task}, timeout=args.start_timeout)
    out["worker_start_returned"] = bool(done)
    out["worker_start_s"] = round(time.monotonic() - t0, 3) if done else None
    if not done:
        # mode.Worker.on_started() awaits wait_until_stopped() when daemon=True: start() never
        # returns. Is the app running anyway?
        await asyncio.sleep(0)
    now_handler = loop._signal_handlers.get(signal.SIGTERM)  # type: ignore[attr-defined]
    out["host_sigterm_handler_kept"] = (now_handler is host_handler) or (
        now_handler is not None and host_handler is not None and now_handler._callback is host_handler._callback
    )

    # --- load: events through faust while RPCs and a ticker run --------------------------------
    lags: list[float] = []

    async def ticker() -> None:
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - t - 0.01)

    rpc_lat: list[float] = []

    async def rpc_client() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while not stop.is_set():
                t = time.monotonic()
                r = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                assert r.status == health_pb2.HealthCheckResponse.SERVING
                rpc_lat.append(time.monotonic() - t)
                await asyncio.sleep(0.005)

    tick_task = asyncio.create_task(ticker())
    rpc_task = asyncio.create_task(rpc_client())
    producer = AIOKafkaProducer(**broker.producer_settings(linger_ms=5))
    await producer.start()
    t_load = time.monotonic()
    futs = [await producer.send(src, b"x" * 64, key=f"k{i % 100}".encode()) for i in range(args.events)]
    await asyncio.gather(*futs)
    await producer.stop()
    deadline = time.monotonic() + args.phase_timeout
    while len(processed) < args.events and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    out["events_processed"] = len(processed)
    out["events_per_s"] = round(len(processed) / (processed[-1] - t_load)) if processed else 0
    out["rpcs_during_load"] = len(rpc_lat)
    if rpc_lat:
        q = sorted(rpc_lat)
        out["rpc_ms_p50"] = round(statistics.median(q) * 1000, 1)
        out["rpc_ms_p99"] = round(q[int(len(q) * 0.99) - 1] * 1000, 1)
    if lags:
        q = sorted(lags)
        out["loop_lag_ms_p50"] = round(statistics.median(q) * 1000, 1)
        out["loop_lag_ms_max"] = round(q[-1] * 1000, 1)

    # --- shutdown: SIGTERM to ourselves, handled by the host ------------------------------------
    t_sig = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    try:
        await asyncio.wait_for(stop.wait(), 5)
    except TimeoutError:
        pass
    out["sigterm_seen_by_host"] = received[:1] == ["SIGTERM"]
    t_stop = time.monotonic()
    await server.stop(grace=2)  # drain RPCs first: no new work for faust after this
    out["grpc_stop_s"] = round(time.monotonic() - t_stop, 3)
    t_w = time.monotonic()
    try:
        await asyncio.wait_for(worker.stop(), 30)
        out["worker_stop_s"] = round(time.monotonic() - t_w, 3)
    except TimeoutError:
        out["worker_stop_s"] = "timeout"
    for t in (tick_task, rpc_task, start_task):
        t.cancel()
    await asyncio.gather(tick_task, rpc_task, start_task, return_exceptions=True)
    out["shutdown_total_s"] = round(time.monotonic() - t_sig, 3)
    out["loop_still_usable"] = not loop.is_closed()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    ap.add_argument("--variant", choices=["embedded", "plain-worker"], default="embedded")
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--start-timeout", type=float, default=20.0)
    ap.add_argument("--phase-timeout", type=float, default=40.0)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    args.events = max(1, min(args.events, 50_000))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    broker = start_broker(args.broker)
    try:
        res = asyncio.run(run(args, broker))
    finally:
        broker.stop()
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
