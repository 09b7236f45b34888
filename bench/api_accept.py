"""How fast intake accepts: SendMessage (1 and 64 in flight), SendBatch and SendStream.

    .venv/bin/python bench/api_accept.py [--broker kafka] [--scale 1.0]

The whole platform runs (the issue's "SendMessage while the pipeline drains"): accepted
messages go on to DELIVERED in the background, so each figure is taken on the same two
cores the pipeline uses. Accepted means durable: every answer comes after the broker's ack.
Counts are bounded (--scale multiplies them); each part is also bounded in time.
Prints and returns calls or messages per second, latency percentiles, and intake's
CPU-µs per accepted message.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import time
from pathlib import Path

from common import ms_summary, recipient
from procstat import Meter

from smsgw.brokers import start_broker
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_dev.platform import Platform

ACCOUNT: list[tuple[str, str]] = []  # the bearer key, once the platform made it
PART_TIMEOUT = 60.0


_numbers = itertools.count()


def _request(i: int) -> api.SendMessageRequest:
    # A new recipient for every request of the run, whatever the part: none is validated twice.
    return api.SendMessageRequest(to=recipient(next(_numbers)), body=f"api {i}")


async def send_message(stub, count: int, in_flight: int) -> dict:
    latencies: list[float] = []
    slots = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with slots:
            started = time.monotonic()
            await stub.SendMessage(_request(i), metadata=ACCOUNT, timeout=30)
            latencies.append(time.monotonic() - started)

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), PART_TIMEOUT)
    elapsed = time.monotonic() - started
    return {
        "calls": count,
        "in_flight": in_flight,
        "per_s": round(count / elapsed, 1),
        "latency_ms": ms_summary(latencies),
    }


async def send_batch(stub, batches: int, size: int, in_flight: int) -> dict:
    slots = asyncio.Semaphore(in_flight)
    accepted = 0

    async def one(b: int) -> None:
        nonlocal accepted
        async with slots:
            reply = await stub.SendBatch(
                api.SendBatchRequest(messages=[_request(b * size + i) for i in range(size)]),
                metadata=ACCOUNT,
                timeout=60,
            )
            accepted += sum(1 for r in reply.results if r.WhichOneof("outcome") == "accepted")

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(one(b) for b in range(batches))), PART_TIMEOUT)
    return {
        "messages": batches * size,
        "accepted": accepted,
        "batch": size,
        "in_flight": in_flight,
        "per_s": round(accepted / (time.monotonic() - started), 1),
    }


async def send_stream(stub, count: int) -> dict:
    requests = (api.SendStreamRequest(message=_request(i), client_ref=str(i)) for i in range(count))
    accepted = 0
    started = time.monotonic()

    async def consume() -> None:
        nonlocal accepted
        async for response in stub.SendStream(requests, metadata=ACCOUNT, timeout=PART_TIMEOUT):
            accepted += response.WhichOneof("outcome") == "accepted"

    await asyncio.wait_for(consume(), PART_TIMEOUT)
    return {"messages": count, "accepted": accepted, "per_s": round(accepted / (time.monotonic() - started), 1)}


async def run(broker_kind: str = "kafka", scale: float = 1.0, log=print) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"smsgw-bench-api-{broker_kind}-"))
    broker = start_broker(broker_kind, log_path=run_dir / f"{broker_kind}.log")
    platform = Platform.for_broker(broker, run_dir, dlr_delay=0.0, android_phone=False)
    n = lambda count: max(1, int(count * scale))  # noqa: E731
    out: dict = {"system": f"smsgw/{broker_kind}", "run_dir": str(run_dir)}
    try:
        await platform.start()
        # The platform runs with API keys (as in production): the account comes from the key.
        ACCOUNT[:] = [("authorization", f"Bearer {await platform.api_key('bench-api')}")]
        intake = platform.processes["intake"].proc
        assert intake is not None, "the platform started intake"
        meter = Meter({"intake": intake.pid})
        async with platform.intake_channel() as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            await send_message(stub, 20, 4)  # warm-up: connections, first appends
            parts = [
                ("SendMessage, 1 in flight", lambda: send_message(stub, n(300), 1), n(300)),
                ("SendMessage, 64 in flight", lambda: send_message(stub, n(3000), 64), n(3000)),
                ("SendBatch, 1000 a call, 4 in flight", lambda: send_batch(stub, n(8), 1000, 4), n(8) * 1000),
                ("SendStream, one stream", lambda: send_stream(stub, n(5000)), n(5000)),
            ]
            out["parts"] = []
            for label, part, messages in parts:
                before = meter.cpu()
                result = await part()
                result["intake_cpu_us_per_message"] = round((meter.cpu()["intake"] - before["intake"]) / messages)
                result["part"] = label
                out["parts"].append(result)
                log(f"  {label}: {json.dumps({k: v for k, v in result.items() if k != 'part'})}")
    finally:
        platform.stop()
        broker.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--broker", default="kafka", choices=["kafka", "tansu"])
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every count")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args.broker, args.scale)), indent=2))


if __name__ == "__main__":
    main()
