"""Priority lanes: how long an OTP takes to be SENT in the middle of a 10,000-message campaign.

    .venv/bin/python bench/priority_lanes.py [--broker kafka] [--campaign 10000] [--probes 40]

The whole platform runs on one broker. A campaign of `--campaign` messages is sent through
SendBatch (100 a call, 4 calls in flight, NORMAL priority) to the SMSC simulator, once to a
carrier with a contracted rate (`--max-tps`, 200 by default: the campaign queues for the carrier,
the case lanes are for) and once to one without (the campaign queues for the two cores).
Once 2,000 of it are accepted, a HIGH probe (an OTP) and a NORMAL probe go out every 250 ms,
`--probes` of each, each to a number of its own. For every probe the figure is accepted → SENT
(intake's created_at to the adapter's CarrierAccepted, both on this machine's clock); the NORMAL
probes show what the OTP would wait without its lane. Bounded in count and time (PART_TIMEOUT).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import time
from pathlib import Path

import aiohttp
from common import ms_summary, recipient

from smsgw.brokers import start_broker
from smsgw.domain import status as st
from smsgw.v1 import message_pb2 as mp
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_dev.platform import Platform

PART_TIMEOUT = 240.0
BATCH = 100
IN_FLIGHT = 4
PROBE_EVERY = 0.25
PROBES_AFTER = 2000  # campaign messages accepted before the first probe: "in the middle"

_numbers = itertools.count()


class _RatedPlatform(Platform):
    """The simulator's carrier with a contracted rate (None: unlimited)."""

    max_tps: float | None = None

    def carriers(self) -> list[dict]:
        if self.max_tps is None:
            return super().carriers()
        return [dict(c, max_tps=self.max_tps) if c["name"] == "smsc-sim" else c for c in super().carriers()]


async def _campaign(stub, metadata, size: int, accepted: list[str]) -> float:
    """Sends the campaign; returns when it was all accepted (monotonic)."""
    calls = [
        api.SendBatchRequest(
            messages=[
                api.SendMessageRequest(to=recipient(next(_numbers)), body=f"campaign {n}")
                for n in range(start, min(size, start + BATCH))
            ]
        )
        for start in range(0, size, BATCH)
    ]
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(request) -> None:
        async with slots:
            reply = await stub.SendBatch(request, metadata=metadata, timeout=60)
            accepted.extend(r.accepted.message.id for r in reply.results if r.HasField("accepted"))

    await asyncio.wait_for(asyncio.gather(*(one(call) for call in calls)), PART_TIMEOUT)
    return time.monotonic()


async def _probes(stub, metadata, count: int, accepted: list[str]) -> dict[str, list[str]]:
    """A HIGH and a NORMAL probe every PROBE_EVERY seconds, once the campaign is under way."""
    deadline = time.monotonic() + PART_TIMEOUT
    while len(accepted) < PROBES_AFTER and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    ids: dict[str, list[str]] = {"HIGH": [], "NORMAL": []}
    for n in range(count):
        for lane, priority in (
            ("HIGH", mp.MessagePriority.MESSAGE_PRIORITY_HIGH),
            ("NORMAL", mp.MessagePriority.MESSAGE_PRIORITY_NORMAL),
        ):
            request = api.SendMessageRequest(to=recipient(next(_numbers)), body=f"probe {lane} {n}", priority=priority)
            reply = await stub.SendMessage(request, metadata=metadata, timeout=30)
            ids[lane].append(reply.message.id)
        await asyncio.sleep(PROBE_EVERY)
    return ids


async def _sent_after(stub, metadata, message_id: str, deadline: float) -> float:
    """Accepted → SENT of one message, in seconds, once it has been sent."""
    while time.monotonic() < deadline:
        m = await stub.GetMessage(api.GetMessageRequest(id=message_id), metadata=metadata, timeout=30)
        if m.HasField("sent_at"):
            return (m.sent_at.ToNanoseconds() - m.created_at.ToNanoseconds()) / 1e9
        if m.status in (st.FAILED, st.EXPIRED, st.CANCELED):
            raise RuntimeError(f"probe {message_id} ended {mp.MessageStatus.Name(m.status)}")
        await asyncio.sleep(0.5)
    raise TimeoutError(f"probe {message_id} not SENT within the part's time")


async def _hops(stub, metadata, message_id: str) -> tuple[float, float]:
    """Where a sent message spent its accepted → SENT: (accepted → MessageRouted: intake's write
    and routing's read, routed → CarrierAccepted: the dispatch topic and the adapter), seconds."""
    history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=message_id), metadata=metadata, timeout=30)
    at = {entry.event.WhichOneof("payload"): entry.event.occurred_at.ToNanoseconds() / 1e9 for entry in history.entries}
    return at["message_routed"] - at["message_queued"], at["carrier_accepted"] - at["message_routed"]


async def _submitted(port: int) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/submitted") as response:
            return len(await response.json())


async def scenario(broker, max_tps: float | None, campaign: int, probes: int, log=print) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"smsgw-bench-lanes-{broker.kind}-"))
    platform = _RatedPlatform.for_broker(
        broker,
        run_dir,
        dlr_delay=0.0,
        android_phone=False,
        topic_prefix=f"lanes{int(time.time())}",
    )
    assert isinstance(platform, _RatedPlatform) and platform.smsc_control_port is not None
    platform.max_tps = max_tps
    smsc_port = platform.smsc_control_port
    label = f"carrier at {max_tps:g} TPS" if max_tps else "carrier without a rate limit"
    try:
        await platform.start()
        metadata = [("authorization", f"Bearer {await platform.api_key('bench-lanes')}")]
        async with platform.intake_channel() as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            accepted: list[str] = []
            started = time.monotonic()
            accepted_at, ids = await asyncio.gather(
                _campaign(stub, metadata, campaign, accepted), _probes(stub, metadata, probes, accepted)
            )
            deadline = time.monotonic() + PART_TIMEOUT
            took = {
                lane: await asyncio.gather(*(_sent_after(stub, metadata, i, deadline) for i in lane_ids))
                for lane, lane_ids in ids.items()
            }
            hops = [await _hops(stub, metadata, i) for i in ids["HIGH"]]
            total = campaign + 2 * probes
            while await _submitted(smsc_port) < total and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
            drained = time.monotonic()
            submitted = await _submitted(smsc_port)
        result = {
            "scenario": label,
            "broker": broker.kind,
            "campaign": campaign,
            "campaign_accepted_in_s": round(accepted_at - started, 1),
            "campaign_submitted_in_s": round(drained - started, 1),
            "submitted_to_smsc": submitted,
            "probes_per_lane": probes,
            "accepted_to_sent_ms": {
                lane: {**ms_summary(values), "max": round(max(values) * 1000, 1)} for lane, values in took.items()
            },
            # HIGH's time by hop: waiting for routing, or for the adapter.
            "high_hops_ms": {
                "accepted_to_routed": {
                    **ms_summary([h[0] for h in hops]),
                    "max": round(max(h[0] for h in hops) * 1000, 1),
                },
                "routed_to_sent": {**ms_summary([h[1] for h in hops]), "max": round(max(h[1] for h in hops) * 1000, 1)},
            },
            # In the order sent: where in the campaign the slow ones were.
            "high_in_order_ms": [round(v * 1000) for v in took["HIGH"]],
        }
        log(f"  {label}: {json.dumps({k: v for k, v in result.items() if k != 'scenario'})}")
        return result
    finally:
        platform.stop()


async def run(
    broker_kind: str,
    max_tps: float,
    campaign: int,
    probes: int,
    log=print,
    *,
    scenarios: tuple[str, ...] = ("rated", "unlimited"),
) -> list[dict]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"smsgw-bench-lanes-{broker_kind}-"))
    broker = start_broker(broker_kind, log_path=run_dir / f"{broker_kind}.log")
    rates = {"rated": max_tps, "unlimited": None}
    try:
        return [await scenario(broker, rates[name], campaign, probes, log) for name in scenarios]
    finally:
        broker.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--broker", default="kafka", choices=["kafka", "tansu"])
    p.add_argument("--max-tps", type=float, default=200.0, help="the throttled scenario's carrier rate")
    p.add_argument("--campaign", type=int, default=10_000)
    p.add_argument("--probes", type=int, default=40, help="HIGH and NORMAL probes, each")
    p.add_argument(
        "--scenarios", default="rated,unlimited", help="comma-separated: rated (the carrier at --max-tps), unlimited"
    )
    args = p.parse_args()
    scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    results = asyncio.run(run(args.broker, args.max_tps, args.campaign, args.probes, scenarios=scenarios))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
