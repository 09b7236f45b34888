"""One offered-load step, the same for every system under test.

The caller gives a `send(count, first_seq)` coroutine that submits `count` messages and
returns the keys of those accepted, and a `Tracker` that its receipt listener (WatchMessageBatches
for smsgw, the dlr-url for Kannel) fills with the time each key reached DELIVERED. The step
paces calls to hold the offered rate (a call waits for a free in-flight slot, so a system that
answers slowly gets less than offered: accepted/s says so), stops after `seconds` or
`max_messages`, then waits at most `drain_s` for the accepted messages to be delivered.
CPU is read before the first send and after the drain, so work still going on for a previous
step's stragglers is charged to this one (the drain bound keeps that small).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

from common import ms_summary
from procstat import Meter, cpu_per_message


@dataclass
class Tracker:
    """Send and final-status times by message key, filled by the sender and the listener."""

    sent_at: dict = field(default_factory=dict)
    accepted_at: dict = field(default_factory=dict)
    delivered_at: dict = field(default_factory=dict)
    #: First SENT (carrier accepted) time by key, where the listener sees it (smsgw only).
    carrier_at: dict = field(default_factory=dict)
    #: Other final statuses by key (FAILED, UNDELIVERED, EXPIRED...).
    other_final: dict = field(default_factory=dict)
    #: Wall-clock time each send call started, by key: the start of the hops below.
    sent_wall: dict = field(default_factory=dict)
    #: By key, the wall-clock times of the message's way, where the listener sees them (smsgw
    #: only): each status's time as the service that made it recorded it, and when it reached
    #: the listener. The services and the benchmark share this machine's clock.
    hops: dict = field(default_factory=dict)


#: The way of a delivered message, hop by hop: (name, from, to), the names of `Tracker.hops` times
#: ("call": when the send call started).
HOPS = (
    ("call → QUEUED (intake admits)", "call", "queued"),
    ("QUEUED → SENDING (append, routing)", "queued", "sending"),
    ("SENDING → SENT (carrier-adapter, SMPP submit)", "sending", "sent"),
    ("SENT → DELIVERED (receipt back, carrier-adapter, receipt service)", "sent", "delivered"),
    ("DELIVERED → listener (intake's projection, watch)", "delivered", "seen"),
)


def hop_summary(keys: list, tracker: Tracker) -> dict[str, dict] | None:
    """ms_summary of each hop over the delivered `keys` the listener timed (None: it timed none)."""
    ways = [{**tracker.hops[k], "call": tracker.sent_wall[k]} for k in keys if k in tracker.hops]
    if not ways:
        return None
    # A receipt that overtook the submit's answer has no SENT: those hops are left out for it.
    return {name: ms_summary([w[end] - w[start] for w in ways if start in w and end in w]) for name, start, end in HOPS}


@dataclass
class StepConfig:
    rate: float  # offered messages/s
    seconds: float  # send for at most this long
    max_messages: int  # ...or this many, whichever first
    batch: int  # messages per send() call
    in_flight: int  # send() calls outstanding at most
    drain_s: float  # then wait at most this long for DELIVERED


async def run_step(cfg: StepConfig, send, tracker: Tracker, meter: Meter, *, load_generator: str) -> dict:
    keys: list = []
    errors = 0
    slots = asyncio.Semaphore(cfg.in_flight)
    last_reply = 0.0

    async def one(count: int, seq: int) -> None:
        nonlocal errors, last_reply
        started, started_wall = time.monotonic(), time.time()
        try:
            accepted = await send(count, seq)
        except Exception:
            accepted, errors = [], errors + count
        else:
            errors += count - len(accepted)
        finally:
            slots.release()
        now = last_reply = time.monotonic()
        for key in accepted:
            tracker.sent_at[key], tracker.accepted_at[key] = started, now
            tracker.sent_wall[key] = started_wall
        keys.extend(accepted)

    cpu0, rss0 = meter.cpu(), meter.rss()
    t0 = time.monotonic()
    issued, tasks = 0, set()
    while issued < cfg.max_messages and time.monotonic() - t0 < cfg.seconds:
        wait = t0 + issued / cfg.rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await slots.acquire()
        count = min(cfg.batch, cfg.max_messages - issued)
        task = asyncio.create_task(one(count, issued))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        issued += count
    if tasks:
        _, stuck = await asyncio.wait(set(tasks), timeout=30)
        for task in stuck:
            task.cancel()
    send_s = time.monotonic() - t0

    deadline = time.monotonic() + cfg.drain_s
    while time.monotonic() < deadline:
        if all(k in tracker.delivered_at or k in tracker.other_final for k in keys):
            break
        await asyncio.sleep(0.05)
    cpu1, rss1 = meter.cpu(), meter.rss()

    delivered = [k for k in keys if k in tracker.delivered_at]
    last_delivered = max((tracker.delivered_at[k] for k in delivered), default=t0)
    carrier = [tracker.carrier_at[k] - tracker.accepted_at[k] for k in keys if k in tracker.carrier_at]
    return {
        "offered_per_s": round(cfg.rate, 1),
        "issued": issued,
        "accepted": len(keys),
        "refused_or_failed_calls": errors,
        "send_s": round(send_s, 2),
        "accepted_per_s": round(len(keys) / max(1e-9, (last_reply or time.monotonic()) - t0), 1),
        "delivered": len(delivered),
        "delivered_per_s": round(len(delivered) / max(1e-9, last_delivered - t0), 1) if delivered else 0.0,
        "not_delivered_in_bound": len(keys) - len(delivered),
        "other_final": dict(Counter(tracker.other_final[k] for k in keys if k in tracker.other_final)),
        "send_to_delivered_ms": ms_summary([tracker.delivered_at[k] - tracker.sent_at[k] for k in delivered]),
        "accepted_to_sent_ms": ms_summary(carrier) if carrier else None,
        "hops_ms": hop_summary(delivered, tracker),
        "cpu_us_per_delivered": cpu_per_message(cpu0, cpu1, len(delivered), exclude=(load_generator,)),
        "rss_kib_start": rss0,
        "rss_kib_end": rss1,
    }


async def idle_cpu(meter: Meter, seconds: float = 3.0) -> dict[str, float]:
    """CPU-µs per second of each process with no load: the polling floor that low rates divide."""
    cpu0, t0 = meter.cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, elapsed = meter.cpu(), time.monotonic() - t0
    return {name: round((cpu1[name] - cpu0[name]) / elapsed) for name in cpu1}


def rates_from_probe(max_rate: float, fractions: list[float]) -> list[float]:
    """Offered rates as fractions of a measured maximum (BENCHMARKING.md: 25 %..120 %)."""
    return [max(5.0, round(max_rate * f, 1)) for f in fractions]
