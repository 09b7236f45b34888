"""Replay: how fast intake's projector rebuilds its message store from the events log, and how
long a restarted one takes to be ready again (`make bench-replay`).

Starts Apache Kafka (from the Maven jars), writes `--messages` messages' worth of events to the
events topic (four each, as a delivered message has: MessageQueued, MessageRouted, CarrierAccepted,
DeliveryReported), then, in this process:

1. a fresh store (SQLite in a temp dir, or `--store postgresql://...`) replayed from offset 0 to
   the end: events/s, CPU-µs per event, peak RSS;
2. the same store opened again and caught up (nothing new): the time a restarted intake's
   projector takes before it is ready.

Prints one JSON document; `--out FILE` writes it too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message

from bench.common import recipient
from smsgw import eventloop
from smsgw.brokers import start_broker
from smsgw.events.envelope import encode, new_event, new_message_id
from smsgw.events.topics import MESSAGE_EVENTS
from smsgw.kafka.clients import ensure_topics
from smsgw.projections.projector import Projector, make_consumer
from smsgw.projections.urls import open_store
from smsgw.v1 import events_pb2 as ev

WINDOW = 500  # messages whose events are in flight together

OWNERS = {
    "MessageQueued": "intake",
    "MessageRouted": "routing",
    "CarrierAccepted": "carrier-adapter",
    "DeliveryReported": "receipt",
}


def message_ids(kind: str) -> Callable[[int], str]:
    """`v7`: time-ordered, as intake makes them; `v4`: random, as before 2026-12-04 (and placed as an
    idempotency key's derived v5 ids are)."""
    if kind == "v7":
        return lambda n: new_message_id()
    return lambda n: str(uuid.uuid4())


def message_events(n: int, message_id: str) -> list[ev.EventEnvelope]:
    queued = ev.MessageQueued(to=recipient(n), content=ev.MessageContent(text=f"replay {n}"), segments=1)
    setattr(queued, "from", "+14155550000")
    payloads: list[Message] = [
        queued,
        ev.MessageRouted(carrier="smsc-sim", route="*"),
        ev.CarrierAccepted(carrier="smsc-sim", carrier_message_ids=[str(n)], segments=1),
        ev.DeliveryReported(
            carrier="smsc-sim",
            carrier_message_id=str(n),
            part_index=0,
            total_parts=1,
            state=ev.DeliveryState.DELIVERY_STATE_DELIVERED,
        ),
    ]
    return [
        new_event(
            payload,
            service=OWNERS[payload.DESCRIPTOR.name],
            producer="bench",
            message_id=message_id,
            account_id=f"acct{n % 50}",
            sequence=sequence + 1,
        )
        for sequence, payload in enumerate(payloads)
    ]


async def write_log(bootstrap: str, topic: str, messages: int, ids: str) -> dict:
    """Writes the events in the order a live log has them: a window of messages is queued, then
    routed, then accepted by the carrier, then delivered, while the next window is queued."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        make_id = message_ids(ids)
        windows = [range(start, min(start + WINDOW, messages)) for start in range(0, messages, WINDOW)]
        in_flight: list[list[list[ev.EventEnvelope]]] = []
        for window in [*windows, *[range(0)] * 4]:
            in_flight.append([message_events(n, make_id(n)) for n in window])
            for age, events in enumerate(reversed(in_flight[-4:])):
                for envelopes in events:
                    envelope = envelopes[age]
                    pending.append(await producer.send(topic, key=envelope.message_id.encode(), value=encode(envelope)))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    seconds = time.monotonic() - started
    return {
        "events": messages * 4,
        "ids": ids,
        "seconds": round(seconds, 1),
        "events_per_s": round(messages * 4 / seconds),
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def replay(bootstrap: str, topic: str, store_url: str, events: int) -> dict:
    store = open_store(store_url)
    projector = Projector(store, make_consumer(bootstrap, client_id="bench-replay"), topic, kafka=bootstrap)
    cpu, started = _cpu(), time.monotonic()
    try:
        await projector.rebuild()
    finally:
        await projector.stop()
        await store.close()
    seconds, cpu = time.monotonic() - started, _cpu() - cpu
    return {
        "events": events,
        "seconds": round(seconds, 1),
        "events_per_s": round(events / seconds),
        "cpu_us_per_event": round(cpu * 1e6 / events, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


async def restart(bootstrap: str, topic: str, store_url: str) -> dict:
    store = open_store(store_url)
    projector = Projector(store, make_consumer(bootstrap, client_id="bench-restart"), topic, kafka=bootstrap)
    started = time.monotonic()
    try:
        await projector.start()
        await projector.catch_up()
    finally:
        await projector.stop()
        await store.close()
    return {"ready_seconds": round(time.monotonic() - started, 2)}


async def main_async(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="smsgw-bench-replay-") as tmp:
        broker = start_broker("kafka", log_path=Path(tmp) / "broker.log")
        try:
            prefix = f"replay{uuid.uuid4().hex[:6]}."
            await ensure_topics(broker.bootstrap, prefix)
            topic = prefix + MESSAGE_EVENTS.name
            store_url = args.store or f"sqlite:///{tmp}/messages.db"
            result = {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "messages": args.messages,
                "store": store_url.split(":", 1)[0],
            }
            result["write"] = await write_log(broker.bootstrap, topic, args.messages, args.ids)
            print(f"wrote {result['write']}", file=sys.stderr, flush=True)
            result["replay"] = await replay(broker.bootstrap, topic, store_url, args.messages * 4)
            print(f"replayed {result['replay']}", file=sys.stderr, flush=True)
            result["restart"] = await restart(broker.bootstrap, topic, store_url)
            return result
        finally:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=250_000, help="messages (4 events each); default 1M events")
    parser.add_argument("--ids", choices=("v7", "v4"), default="v7", help="message ids (default: v7, as intake's)")
    parser.add_argument("--store", default="", help="store URL (default: SQLite in a temp dir)")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    # As intake runs (uvloop, the collector tuned): the replay a restarted service does.
    result = eventloop.run(main_async(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
