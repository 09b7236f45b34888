"""A carrier down for long: does the rest of the platform go on, and what does the waiting cost?

    .venv/bin/python bench/carrier_outage.py [--broker kafka] [--waiting 20000] [--outage 90] [--rate 50]
        [--scenarios deferral,adapter]

The whole platform on one broker. `--waiting` messages go to a route whose only carrier (the
Twilio simulator) is stopped for `--outage` seconds, while messages to the SMSC go on at `--rate`
a second. Twice: with deferral (the delay topic; its timings scaled down to the run: deferred after
10 s, laps of 5 s, at most 20 s) and without it (SMSGW_DISPATCH_DEFER_AFTER_SECONDS=0: they wait
in the adapter, parked beyond the carrier's share). SMSGW_DISPATCH_MAX_PARKED is below the
waiting messages in both (`--max-parked`, 5,000), as a replica with its default 100,000 would be
in a larger or longer outage.

Figures: the SMSC messages sent during the outage, how many were DELIVERED by its end and their
send -> DELIVERED p50/p99; carrier-adapter's CPU and RSS during the outage; messages deferred and
delay-topic writes (laps: the rest of a wait written to its tier; held: a due command written back
because its carrier is still down); once the carrier is back, the time until every waiting message has reached the simulator,
and how many reached it twice. Bounded in count and time (PART_TIMEOUT).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import aiohttp
from common import ms_summary, recipient

from smsgw.brokers import start_broker
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_dev.platform import Platform

PART_TIMEOUT = 300.0
BATCH = 100
DOWN_ROUTE = "+1415555077"  # the platform's route to twilio-sim alone
#: Last digits the Twilio simulator takes (it refuses ...776 as invalid: never sent, never arriving).
DOWN_DIGITS = "01234579"
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_and_rss(pid: int) -> tuple[float, float]:
    """CPU seconds so far and RSS in MiB of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    rss = next(
        int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return cpu, rss


async def _metric(port: int, name: str) -> float:
    """The sum of a metric's samples on carrier-adapter's /metrics (0 without any)."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def _steady(stub, metadata, rate: float, until: float, ids: list[str]) -> None:
    """Messages to the SMSC at `rate` a second until `until` (monotonic)."""
    n = 0
    started = time.monotonic()
    while time.monotonic() < until:
        reply = await stub.SendMessage(
            api.SendMessageRequest(to=recipient(n), body=f"steady {n}"), metadata=metadata, timeout=30
        )
        ids.append(reply.message.id)
        n += 1
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))


async def _delivered_after(stub, metadata, ids: list[str]) -> list[float | None]:
    """send -> DELIVERED of each message in seconds, None where it is not DELIVERED."""
    out: list[float | None] = []
    for message_id in ids:
        m = await stub.GetMessage(api.GetMessageRequest(id=message_id), metadata=metadata, timeout=30)
        out.append(
            (m.delivered_at.ToNanoseconds() - m.created_at.ToNanoseconds()) / 1e9
            if m.HasField("delivered_at")
            else None
        )
    return out


async def _at_twilio(port: int) -> collections.Counter:
    """How many times each waiting message's body reached the Twilio simulator."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/_sim/messages") as response:
            bodies = [m["body"] for m in (await response.json())["messages"]]
    return collections.Counter(b for b in bodies if b.startswith("waiting"))


async def _all_arrived(port: int, count: int, deadline: float) -> bool:
    """Every one of `count` waiting messages at the simulator (asked once a second, not per message:
    20,000 GetMessage calls a round would load intake while the backlog drains)."""
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientConnectorError):  # the simulator starting again
            if len(await _at_twilio(port)) >= count:
                return True
        await asyncio.sleep(1.0)
    return False


async def scenario(broker, *, deferral: bool, waiting: int, outage: float, rate: float, max_parked: int, log=print):
    run_dir = Path(tempfile.mkdtemp(prefix=f"smsgw-bench-outage-{broker.kind}-"))
    env = {"SMSGW_DISPATCH_MAX_PARKED": str(max_parked), "SMSGW_DISPATCH_FAILOVER_AFTER_SECONDS": "0"}
    if deferral:
        env |= {
            "SMSGW_DISPATCH_DEFER_AFTER_SECONDS": "10",
            "SMSGW_DISPATCH_DEFER_LAP_SECONDS": "5",
            "SMSGW_DISPATCH_DEFER_LONGEST_SECONDS": "20",
        }
    else:
        env["SMSGW_DISPATCH_DEFER_AFTER_SECONDS"] = "0"
    platform = Platform.for_broker(
        broker,
        run_dir,
        dlr_delay=0.0,
        android_phone=False,
        topic_prefix=f"outage{int(time.time())}",
        extra_env=env,
    )
    label = "deferred to the delay topic" if deferral else "waiting in the adapter (no deferral)"
    try:
        await platform.start()
        metrics_port = platform.metrics_port_of("carrier-adapter")
        metadata = [("authorization", f"Bearer {await platform.api_key('bench-outage')}")]
        async with platform.intake_channel() as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            platform.kill("twilio-simulator")
            adapter = platform.processes["carrier-adapter"].proc
            assert adapter is not None
            pid = adapter.pid
            cpu0, rss0 = _cpu_and_rss(pid)
            began = time.monotonic()
            steady: list[str] = []
            sender = asyncio.create_task(_steady(stub, metadata, rate, began + outage, steady))
            down: list[str] = []
            for start in range(0, waiting, BATCH):
                reply = await stub.SendBatch(
                    api.SendBatchRequest(
                        messages=[
                            api.SendMessageRequest(
                                to=f"{DOWN_ROUTE}{DOWN_DIGITS[n % len(DOWN_DIGITS)]}", body=f"waiting {n}"
                            )
                            for n in range(start, min(waiting, start + BATCH))
                        ]
                    ),
                    metadata=metadata,
                    timeout=60,
                )
                down.extend(r.accepted.message.id for r in reply.results if r.HasField("accepted"))
            accepted_in = time.monotonic() - began
            peak_rss = rss0
            while time.monotonic() < began + outage:
                peak_rss = max(peak_rss, _cpu_and_rss(pid)[1])
                await asyncio.sleep(1.0)
            await sender
            cpu1, rss1 = _cpu_and_rss(pid)
            deferred = await _metric(metrics_port, "smsgw_carrier_deferred_total")
            laps = await _metric(metrics_port, "smsgw_carrier_delayed_laps_total")
            held = await _metric(metrics_port, "smsgw_carrier_delayed_held_total")
            parked = await _metric(metrics_port, "smsgw_carrier_commands_parked")
            steady_times = await _delivered_after(stub, metadata, steady)
            delivered = [t for t in steady_times if t is not None]

            twilio_port = platform.twilio_port
            assert twilio_port is not None
            platform.start_service("twilio-simulator")
            back = time.monotonic()
            all_sent = await _all_arrived(twilio_port, len(down), back + PART_TIMEOUT)
            recovered_in = time.monotonic() - back
            await asyncio.sleep(5.0)  # time for a copy to arrive (it must not)
            at_twilio = await _at_twilio(twilio_port)
        result = {
            "scenario": label,
            "broker": broker.kind,
            "waiting": len(down),
            "waiting_accepted_in_s": round(accepted_in, 1),
            "outage_s": outage,
            "steady_sent": len(steady),
            "steady_delivered_during_outage": len(delivered),
            "steady_send_to_delivered_ms": ms_summary(delivered),
            "adapter_cpu_s_during_outage": round(cpu1 - cpu0, 1),
            "adapter_rss_mib": {"before": round(rss0), "peak": round(peak_rss), "end": round(rss1)},
            "deferred": int(deferred),
            "delay_laps": int(laps),
            "delay_held": int(held),
            "parked_at_end": int(parked),
            "all_waiting_at_carrier_after_recovery": all_sent,
            "recovered_in_s": round(recovered_in, 1),
            "at_twilio": len(at_twilio),
            "at_twilio_twice": sum(1 for c in at_twilio.values() if c > 1),
        }
        log(f"  {label}: {json.dumps({k: v for k, v in result.items() if k != 'scenario'})}")
        return result
    finally:
        platform.stop()


async def run(
    broker_kind: str, waiting: int, outage: float, rate: float, max_parked: int, deferrals=(True, False), log=print
) -> list[dict]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"smsgw-bench-outage-{broker_kind}-"))
    broker = start_broker(broker_kind, log_path=run_dir / f"{broker_kind}.log")
    try:
        return [
            await scenario(
                broker, deferral=deferral, waiting=waiting, outage=outage, rate=rate, max_parked=max_parked, log=log
            )
            for deferral in deferrals
        ]
    finally:
        broker.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--broker", default="kafka", choices=["kafka", "tansu"])
    p.add_argument("--waiting", type=int, default=20_000, help="messages to the carrier that is down")
    p.add_argument("--outage", type=float, default=90.0, help="seconds the carrier is down")
    p.add_argument("--rate", type=float, default=50.0, help="messages a second to the SMSC meanwhile")
    p.add_argument("--max-parked", type=int, default=5_000, help="SMSGW_DISPATCH_MAX_PARKED in both scenarios")
    p.add_argument(
        "--scenarios", default="deferral,adapter", help="deferral (the delay topic), adapter (no deferral), or both"
    )
    args = p.parse_args()
    deferrals = tuple({"deferral": True, "adapter": False}[name] for name in args.scenarios.split(","))
    results = asyncio.run(run(args.broker, args.waiting, args.outage, args.rate, args.max_parked, deferrals))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
