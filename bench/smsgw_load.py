"""smsgw under offered-load steps: a broker, the platform, SendBatch in, WatchMessageBatches out.

One WatchMessageBatches stream (SENT and the final statuses, from now on) records when each message reached SENT
and DELIVERED; SendBatch carries the load. CPU is metered for every platform process
(services and simulators), the broker with its descendants (the JVM for Kafka), and the
benchmark process apart (the load generator, excluded from the total).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

from common import recipient, smsc_duplicates
from procstat import Meter
from steps import StepConfig, Tracker, idle_cpu, rates_from_probe, run_step
from topic_records import end_offsets, per_message

from smsgw.brokers import start_broker
from smsgw.domain import status as st
from smsgw.grpcx.resume import resuming
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_dev.platform import Platform
from smsgw_dev.postgres import start_postgres

ACCOUNT: list[tuple[str, str]] = []  # the bearer key, once the platform made it


async def _watch(stub, tracker: Tracker, ready: asyncio.Event) -> None:
    # What the tracker uses: SENT (accepted → SENT) and the final statuses, as a client that waits
    # for delivery asks; Kannel's dlr-mask=3 reports only the final ones.
    # Opened again from the server's cursor if it ends the stream for falling behind (a client
    # busy sending may read slower than the updates come): nothing is missed either way.
    # WatchMessageBatches, as a high-volume reader would: the updates ready together in one
    # response, instead of one response (~40-50 µs of the server's CPU) per update.
    statuses = [st.SENT, *sorted(st.FINAL_STATUSES)]
    responses = resuming(
        lambda cursor: stub.WatchMessageBatches(
            api.WatchMessageBatchesRequest(statuses=statuses, cursor=cursor), metadata=ACCOUNT
        ),
        on_fell_behind=lambda _: print("the benchmark's watch fell behind; resumed from its cursor", file=sys.stderr),
    )
    ready.set()
    async for response in responses:
        now, wall = time.monotonic(), time.time()
        for update in response.updates:
            m = update.message
            if m.status == st.DELIVERED:
                tracker.delivered_at.setdefault(m.id, now)
                tracker.hops.setdefault(m.id, _way(m, wall))
            elif m.status == st.SENT:
                tracker.carrier_at.setdefault(m.id, now)
            elif st.is_final(m.status):
                tracker.other_final.setdefault(m.id, st.status_name(m.status))


#: The statuses whose times make a delivered message's way (bench/steps.py, HOPS), by name.
_WAY = {st.QUEUED: "queued", st.SENDING: "sending", st.SENT: "sent", st.DELIVERED: "delivered"}


def _way(m, seen: float) -> dict[str, float]:
    """The times of a delivered message's statuses, as its services recorded them, and `seen`."""
    way = {"seen": seen}
    for transition in m.transitions:
        if (name := _WAY.get(transition.status)) is not None:
            way[name] = transition.at.seconds + transition.at.nanos / 1e9
    return way


async def run(
    broker_kind: str,
    *,
    rates: list[float] | None,
    fractions: list[float],
    step_s: float,
    max_step_messages: int,
    probe_messages: int,
    drain_s: float,
    dlr_delay: float,
    in_flight: int,
    replicas: dict[str, int] | None = None,
    plaintext: bool = False,
    shared_store: bool = False,
    steady_broker: bool = False,
    log=print,
) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"smsgw-bench-{broker_kind}-"))
    broker = start_broker(broker_kind, log_path=run_dir / f"{broker_kind}.log", steady=steady_broker)
    # intake's replicas on one PostgreSQL store, each projecting its share (docs/projections.md).
    postgres = start_postgres() if shared_store else None
    extra_env = (
        {"SMSGW_PROJECTION_STORE": postgres.url(postgres.new_schema("bench")), "SMSGW_PROJECTION_SHARED": "true"}
        if postgres is not None
        else {}
    )
    # No simulated phone: the benchmark routes only to the SMSC simulator.
    replicas = dict(replicas or {})
    adapters = replicas.pop("carrier-adapter", 1)
    platform = Platform.for_broker(
        broker,
        run_dir,
        dlr_delay=dlr_delay,
        android_phone=False,
        replicas=replicas,
        carrier_adapter_replicas=adapters,
        tls=not plaintext,  # several intake replicas run plaintext only (Platform)
        extra_env=extra_env,
    )
    result: dict = {"system": f"smsgw/{broker_kind}", "run_dir": str(run_dir), "dlr_delay_s": dlr_delay}
    watcher = None
    try:
        t0 = time.monotonic()
        await platform.start()
        # The platform runs with API keys (as in production): the account comes from the key.
        ACCOUNT[:] = [("authorization", f"Bearer {await platform.api_key('bench')}")]
        result["startup_s"] = round(time.monotonic() - t0, 1)
        roots = {name: p.proc.pid for name, p in platform.processes.items() if p.proc is not None}
        if broker.pid is not None:  # a broker outside this machine is not metered
            roots["broker"] = broker.pid
        if postgres is not None:
            roots["postgres"] = postgres.postmaster_pid()
        roots["bench (load generator)"] = os.getpid()
        meter = Meter(roots)
        tracker = Tracker()
        async with platform.intake_channel() as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            ready = asyncio.Event()
            watcher = asyncio.create_task(_watch(stub, tracker, ready))
            await asyncio.wait_for(ready.wait(), 10)
            await asyncio.sleep(1.0)  # let the stream attach before the first send ("from now on")

            numbers = itertools.count()  # a new recipient for every message of the run

            def sender(label: str):
                async def send(count: int, seq: int) -> list[str]:
                    request = api.SendBatchRequest(
                        messages=[
                            api.SendMessageRequest(to=recipient(next(numbers)), body=f"{label} {seq + i}")
                            for i in range(count)
                        ]
                    )
                    reply = await stub.SendBatch(request, metadata=ACCOUNT, timeout=30)
                    return [r.accepted.message.id for r in reply.results if r.WhichOneof("outcome") == "accepted"]

                return send

            async def step(label: str, rate: float, seconds: float, max_messages: int, drain: float = drain_s) -> dict:
                # About ten calls a second up to 100 messages a call: paced, not one burst per second.
                batch = int(min(100, max(1, rate / 10)))
                cfg = StepConfig(
                    rate=rate,
                    seconds=seconds,
                    max_messages=max_messages,
                    batch=batch,
                    in_flight=in_flight,
                    drain_s=drain,
                )
                records_before = await end_offsets(broker.bootstrap)
                out = await run_step(cfg, sender(label), tracker, meter, load_generator="bench (load generator)")
                # Every message of the step has settled (drained): what the topics grew by is theirs.
                out["records_per_delivered"] = per_message(
                    records_before, await end_offsets(broker.bootstrap), out["delivered"]
                )
                if watcher.done():  # a dead stream would read as "nothing delivered"
                    raise RuntimeError(f"WatchMessageBatches ended: {watcher.exception()!r}")
                out["step"], out["batch"] = label, batch
                try:
                    out["smsc"] = await smsc_duplicates(platform.smsc_control_port, f"{label} ")
                except Exception as exc:
                    out["smsc"] = f"n/a ({exc!r})"
                log(
                    f"  {result['system']} {label}: offered {out['offered_per_s']}/s accepted "
                    f"{out['accepted_per_s']}/s delivered {out['delivered_per_s']}/s "
                    f"(not delivered {out['not_delivered_in_bound']}), p50 {out['send_to_delivered_ms']['p50']} ms, "
                    f"CPU {out['cpu_us_per_delivered']['total']} µs/msg"
                )
                return out

            await step("warm", 20, 3, 50)  # connections, metadata, first JIT/caches
            result["idle_cpu_us_per_s"] = await idle_cpu(meter)
            if rates is None:  # the probe is drained longer, so its backlog does not spill into s0
                probe = await step("probe", 10_000, 30, probe_messages, max(drain_s, 90))
                result["probe"] = probe
                rates = rates_from_probe(probe["delivered_per_s"] or 10.0, fractions)
            result["steps"] = [
                await step(f"s{i}", r, step_s, min(max_step_messages, int(r * step_s) + 1)) for i, r in enumerate(rates)
            ]
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
        platform.stop()
        broker.stop()
        if postgres is not None:
            postgres.stop()
    return result
