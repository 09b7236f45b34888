"""Scheduled sends: how close to its `send_at` a message is SENT, with routing killed in between.

    .venv/bin/python bench/scheduled_sends.py [--broker kafka] [--messages 300] [--spread 20]

The whole platform runs on one broker. `--messages` messages are accepted at once, each with a
`send_at` spread evenly over the `--spread` seconds starting 5 s later; a third of the way into
that span routing is killed with SIGKILL (`--graceful`: stopped with SIGTERM) and started again (the messages held for later are in
its changelog, not in its memory alone). For every message the figure is SENT - send_at (the
adapter's CarrierAccepted time against the time asked, one clock); the SMSC's record says how
many were submitted more than once, and every message must be SENT. Bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
from common import ms_summary, recipient
from google.protobuf.timestamp_pb2 import Timestamp

from smsgw.brokers import start_broker
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_dev.platform import Platform

LEAD = 5.0  # seconds between acceptance and the first send_at
PART_TIMEOUT = 180.0

_numbers = itertools.count()


async def _lateness(stub, metadata, message_id: str, deadline: float) -> float | None:
    """SENT - send_at in seconds, once SENT; None if it was not SENT in time."""
    while time.monotonic() < deadline:
        m = await stub.GetMessage(api.GetMessageRequest(id=message_id), metadata=metadata, timeout=30)
        if m.HasField("sent_at"):
            return (m.sent_at.ToNanoseconds() - m.send_at.ToNanoseconds()) / 1e9
        await asyncio.sleep(0.5)
    return None


async def run(broker_kind: str, messages: int, spread: float, graceful: bool = False, log=print) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"smsgw-bench-schedule-{broker_kind}-"))
    broker = start_broker(broker_kind, log_path=run_dir / f"{broker_kind}.log")
    platform = Platform.for_broker(broker, run_dir, dlr_delay=0.0, android_phone=False)
    try:
        await platform.start()
        metadata = [("authorization", f"Bearer {await platform.api_key('bench-schedule')}")]
        async with platform.intake_channel() as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            first = time.time() + LEAD
            requests = []
            for n in range(messages):
                at = Timestamp()
                at.FromNanoseconds(int((first + spread * n / max(1, messages - 1)) * 1e9))
                requests.append(api.SendMessageRequest(to=recipient(next(_numbers)), body=f"scheduled {n}", send_at=at))
            ids: list[str] = []
            for start in range(0, messages, 100):
                reply = await stub.SendBatch(
                    api.SendBatchRequest(messages=requests[start : start + 100]), metadata=metadata, timeout=60
                )
                ids.extend(r.accepted.message.id for r in reply.results if r.HasField("accepted"))
            accepted_by = time.time()
            await asyncio.sleep(max(0.0, first + spread / 3 - time.time()))
            killed_at = time.time()
            await platform.restart("routing", hard=not graceful)  # SIGKILL (or SIGTERM), then started again
            back_at = time.time()
            deadline = time.monotonic() + PART_TIMEOUT
            late = await asyncio.gather(*(_lateness(stub, metadata, i, deadline) for i in ids))
            due = [(r.send_at.ToNanoseconds() / 1e9) for r in requests[: len(ids)]]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{platform.smsc_control_port}/submitted") as response:
                bodies = Counter(bytes.fromhex(s["user_data_hex"]).decode("latin-1") for s in await response.json())
        sent = [v for v in late if v is not None]

        def phase(low: float, high: float) -> dict:
            values = [v for v, at in zip(late, due, strict=True) if v is not None and low <= at < high]
            return {"messages": len(values), **ms_summary(values), "max": round(max(values) * 1000) if values else None}

        result = {
            "broker": broker_kind,
            "messages": messages,
            "accepted": len(ids),
            "accepted_before_first_send_at_s": round(first - accepted_by, 1),
            "send_at_span_s": spread,
            "routing_stopped_by": "SIGTERM" if graceful else "SIGKILL",
            "routing_killed_after_first_send_at_s": round(killed_at - first, 1),
            "routing_back_in_s": round(back_at - killed_at, 1),
            "sent": len(sent),
            "not_sent": len(late) - len(sent),
            "submitted_twice_or_more": sum(
                1 for body, count in bodies.items() if body.startswith("scheduled") and count > 1
            ),
            "sent_after_send_at_ms": {
                **ms_summary(sent),
                "max": round(max(sent) * 1000, 1) if sent else None,
                "min": round(min(sent) * 1000, 1) if sent else None,
            },
            "over_1s": sum(1 for v in sent if v > 1.0),
            # By when the message was due: before routing was killed, while it was down, after.
            "sent_after_send_at_ms_by_phase": {
                "due_before_the_kill": phase(0, killed_at),
                "due_while_routing_was_down": phase(killed_at, back_at),
                "due_after_it_was_back": phase(back_at, float("inf")),
            },
        }
        log(f"  {json.dumps(result)}")
        return result
    finally:
        platform.stop()
        broker.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--broker", default="kafka", choices=["kafka", "tansu"])
    p.add_argument("--messages", type=int, default=300)
    p.add_argument("--spread", type=float, default=20.0, help="seconds the send_at times span")
    p.add_argument("--graceful", action="store_true", help="stop routing with SIGTERM instead of SIGKILL")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args.broker, args.messages, args.spread, args.graceful)), indent=2))


if __name__ == "__main__":
    main()
