"""End-to-end latency and throughput of the whole platform (send -> DELIVERED).

    .venv/bin/python bench/e2e_latency.py --broker tansu|kafka [--messages 200] [--concurrency 20]
        [--to +16505550123] [--carrier-adapter-replicas 2]

--to picks the carrier through make run's routes (default SMSC simulator; +1415555077x the
Twilio simulator; +1650555xxxx the simulated Android phone). With --carrier-adapter-replicas 2
the phone is connected to the first replica, so about half the commands are relayed to it
(the phone sends only its own account's messages: add --account default).

Starts a broker, the SMSC simulator (DLR delay --dlr-delay, default 0.2 s) and the
four services as processes, then:
  1. latency: sends messages one at a time and watches each to DELIVERED;
  2. throughput: keeps --concurrency sends in flight until --messages are accepted,
     then waits for all to be DELIVERED.
Bounded in count and time. Prints a JSON summary (append it to docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from smsgw.brokers import start_broker
from smsgw.domain import status as st
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_dev.platform import Platform

ACCOUNT: list[tuple[str, str]] = []
ACCOUNT_NAME = ["bench"]  # --account replaces it


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def delivered_after(stub, message_id, started, deadline):
    async for update in stub.WatchMessage(
        api.WatchMessageRequest(id=message_id), metadata=ACCOUNT, timeout=max(1.0, deadline - time.monotonic())
    ):
        if update.message.status == st.DELIVERED:
            return time.monotonic() - started
    raise RuntimeError(f"{message_id} ended {st.status_name(update.message.status)}")


async def run(args) -> dict:
    broker = start_broker(args.broker)
    run_dir = Path(tempfile.mkdtemp(prefix="smsgw-bench-"))
    platform = Platform.for_broker(
        broker, run_dir, dlr_delay=args.dlr_delay, carrier_adapter_replicas=args.carrier_adapter_replicas
    )
    t0 = time.monotonic()
    await platform.start()
    # The platform runs with API keys (as in production): the account comes from the key.
    ACCOUNT[:] = [("authorization", f"Bearer {await platform.api_key(ACCOUNT_NAME[0])}")]
    startup = time.monotonic() - t0
    deadline = time.monotonic() + args.max_seconds
    try:
        async with platform.intake_channel() as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            for _ in range(5):  # warm-up: first messages pay for connections and metadata
                reply = await stub.SendMessage(api.SendMessageRequest(to=args.to, body="warm"), metadata=ACCOUNT)
                await delivered_after(stub, reply.message.id, time.monotonic(), deadline)
            accept, e2e = [], []
            for i in range(args.latency_messages):
                started = time.monotonic()
                reply = await stub.SendMessage(api.SendMessageRequest(to=args.to, body=f"lat {i}"), metadata=ACCOUNT)
                accept.append(time.monotonic() - started)
                e2e.append(await delivered_after(stub, reply.message.id, started, deadline))

            ids: list[str] = []
            sem = asyncio.Semaphore(args.concurrency)
            t_start = time.monotonic()

            async def one(i):
                async with sem:
                    reply = await stub.SendMessage(api.SendMessageRequest(to=args.to, body=f"tp {i}"), metadata=ACCOUNT)
                    ids.append(reply.message.id)

            await asyncio.gather(*(one(i) for i in range(args.messages)))
            accepted_in = time.monotonic() - t_start
            await asyncio.gather(*(delivered_after(stub, m, t_start, deadline) for m in ids))
            all_delivered_in = time.monotonic() - t_start
    finally:
        platform.stop()
        broker.stop()
    ms = lambda v: round(v * 1000, 1)  # noqa: E731
    return {
        "broker": args.broker,
        "to": args.to,
        "carrier_adapter_replicas": args.carrier_adapter_replicas,
        "dlr_delay_s": args.dlr_delay,
        "startup_s": round(startup, 2),
        "latency_messages": args.latency_messages,
        "accept_ms": {"p50": ms(statistics.median(accept)), "p95": ms(pct(accept, 95)), "max": ms(max(accept))},
        "send_to_delivered_ms": {"p50": ms(statistics.median(e2e)), "p95": ms(pct(e2e, 95)), "max": ms(max(e2e))},
        "throughput": {
            "messages": args.messages,
            "concurrency": args.concurrency,
            "accepted_per_s": round(args.messages / accepted_in, 1),
            "delivered_per_s": round(args.messages / all_delivered_in, 1),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--broker", default="tansu", choices=["tansu", "kafka"])
    p.add_argument("--latency-messages", type=int, default=30)
    p.add_argument("--messages", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--dlr-delay", type=float, default=0.2)
    p.add_argument("--max-seconds", type=float, default=240)
    p.add_argument("--to", default="+14155550100", help="destination; its route picks the carrier")
    p.add_argument("--carrier-adapter-replicas", type=int, default=1)
    p.add_argument("--account", default="bench", help="sending account (make run's phones belong to account 'default')")
    args = p.parse_args()
    ACCOUNT_NAME[0] = args.account
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
