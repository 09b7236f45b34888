#!/usr/bin/env python
"""What the Kafka client costs per record: aiokafka (the services' client) against librdkafka
(confluent-kafka), on the same Apache Kafka broker, in the same run.

    make bench-clients        # or: .venv/bin/python bench/kafka_clients.py --records 50000

The services spend most of their CPU outside intake in the Kafka protocol (docs/benchmarks.md:
py-spy puts aiokafka's producer, fetcher and connection writes at 20-40 % of carrier-adapter,
routing and receipt). A C client is the lever named for it; this measures how much it would
save, per record and per hop, before anyone rewrites a service around it.

Three phases per client, each on fresh topics of 12 partitions, event-sized records (130 bytes,
keyed by a message id), acks=all and the idempotent producer on both:
  produce  N records written, every delivery confirmed
  hop      a consumer group reads them, writes one record per record read to a second topic,
           waits for those acks and commits each batch: what routing, carrier-adapter and
           receipt do for each record
  consume  a reader without a group reads the second topic to its end
and reports CPU-µs per record of this process (utime + stime: the client's own threads
included) and of the broker (the JVM, from /proc). The clients run one after the other, twice
(a, b, a, b): the spread between a client's two runs is the noise to read the difference against.

aiokafka runs in asyncio (uvloop), as in the services. confluent-kafka runs as its API is made to
be used, a thread polling; wrapping it in asyncio (a delivery callback per record handed to the
loop) would add to its figure, so its figure is a floor for what a service could reach with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstat import Meter

from smsgw.brokers import start_broker
from smsgw.eventloop import run as run_on_service_loop

PARTITIONS = 12
VALUE = b"x" * 130
#: No phase may take longer than this (seconds): a stuck client fails the run, it does not hang it.
PHASE_LIMIT = 300.0


class Phase:
    """One phase's wall time and the CPU, over it, of this process (its client's threads included)
    and of the broker: procstat.Meter's figures, taken before and after (in clock ticks of 10 ms:
    with the default 50,000 records a phase, 0.2 µs a record)."""

    def __init__(self, broker_pid: int) -> None:
        self.meter = Meter({"client": os.getpid(), "broker": broker_pid})

    def __enter__(self) -> Phase:
        self.t0, self.cpu0 = time.monotonic(), self.meter.cpu()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.monotonic() - self.t0
        cpu = self.meter.cpu()
        self.client_us = cpu["client"] - self.cpu0["client"]
        self.broker_us = cpu["broker"] - self.cpu0["broker"]

    def row(self, records: int) -> dict[str, float]:
        return {
            "records_per_s": round(records / self.seconds, 1),
            "client_us_per_record": round(self.client_us / records, 1),
            "broker_us_per_record": round(self.broker_us / records, 1),
        }


async def create_topics(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
    finally:
        await admin.close()


def keys(n: int) -> list[bytes]:
    return [uuid.uuid4().hex.encode() for _ in range(n)]


# -- aiokafka --------------------------------------------------------------------------------
def aio_producer(bootstrap: str, linger_ms: int = 10) -> AIOKafkaProducer:
    """As the services' (smsgw.kafka.clients.make_producer): acks from every replica, idempotent."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=linger_ms)


async def aiokafka_run(bootstrap: str, broker_pid: int, n: int, source: str, target: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    producer = aio_producer(bootstrap)
    await producer.start()
    try:
        with Phase(broker_pid) as m:
            async with asyncio.timeout(PHASE_LIMIT):
                pending = []
                for key in keys(n):
                    pending.append(await producer.send(source, VALUE, key=key))
                    if len(pending) >= 1000:
                        await asyncio.gather(*pending)
                        pending.clear()
                await asyncio.gather(*pending)
        out["produce"] = m.row(n)

        out["hop"] = await aiokafka_hop(bootstrap, broker_pid, n, source, target, producer)
    finally:
        await producer.stop()

    reader = AIOKafkaConsumer(
        target, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        with Phase(broker_pid) as m:
            done = 0
            async with asyncio.timeout(PHASE_LIMIT):
                while done < n:
                    batches = await reader.getmany(timeout_ms=500, max_records=2000)
                    done += sum(len(records) for records in batches.values())
        out["consume"] = m.row(n)
    finally:
        await reader.stop()
    return out


async def aiokafka_hop(
    bootstrap: str, broker_pid: int, n: int, source: str, target: str, producer: AIOKafkaProducer | None = None
) -> dict[str, float]:
    """Reads n records of `source` in a group, writes one to `target` for each, awaits the batch's
    acks and commits it."""
    own = producer is None
    if producer is None:
        producer = aio_producer(bootstrap)
        await producer.start()
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"hop-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        with Phase(broker_pid) as m:
            done = 0
            async with asyncio.timeout(PHASE_LIMIT):
                while done < n:
                    batches = await consumer.getmany(timeout_ms=500, max_records=500)
                    sent = [
                        await producer.send(target, record.value, key=record.key)
                        for records in batches.values()
                        for record in records
                    ]
                    await asyncio.gather(*sent)
                    if sent:
                        await consumer.commit()
                    done += len(sent)
        return m.row(n)
    finally:
        await consumer.stop()
        if own:
            await producer.stop()


# -- confluent-kafka (librdkafka) ------------------------------------------------------------
class Rdkafka:
    """librdkafka's clients, configured as aiokafka's above; delivery failures collected."""

    def __init__(self, bootstrap: str) -> None:
        import confluent_kafka

        self.kafka = confluent_kafka
        self.bootstrap = bootstrap
        self.failed: list[str] = []

    def delivered(self, error, _message) -> None:
        if error is not None:
            self.failed.append(str(error))

    def producer(self):
        return self.kafka.Producer(
            {"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 10}
        )

    def consumer(self, group_prefix: str, topic: str, **extra):
        consumer = self.kafka.Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"{group_prefix}-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                **extra,
            }
        )
        consumer.subscribe([topic])
        return consumer

    def check(self) -> None:
        if self.failed:
            raise RuntimeError(f"confluent-kafka: {len(self.failed)} deliveries failed, e.g. {self.failed[0]}")


def confluent_run(bootstrap: str, broker_pid: int, n: int, source: str, target: str) -> dict[str, dict]:
    rd = Rdkafka(bootstrap)
    out: dict[str, dict] = {}
    producer = rd.producer()
    deadline = time.monotonic() + PHASE_LIMIT
    with Phase(broker_pid) as m:
        for key in keys(n):
            while True:
                try:
                    producer.produce(source, VALUE, key=key, on_delivery=rd.delivered)
                    break
                except BufferError:  # the local queue is full: serve delivery reports first
                    producer.poll(0.01)
            producer.poll(0)
        if producer.flush(max(1.0, deadline - time.monotonic())) != 0:
            raise RuntimeError("confluent-kafka: records not delivered within the phase limit")
    out["produce"] = m.row(n)

    out["hop"] = confluent_hop(bootstrap, broker_pid, n, source, target, rd, producer)

    reader = rd.consumer("read", target)
    try:
        deadline = time.monotonic() + PHASE_LIMIT
        with Phase(broker_pid) as m:
            done = 0
            while done < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"confluent-kafka consume: {done} of {n} records within the phase limit")
                done += len(reader.consume(num_messages=2000, timeout=0.5))
        out["consume"] = m.row(n)
    finally:
        reader.close()
    rd.check()
    return out


def confluent_hop(
    bootstrap: str, broker_pid: int, n: int, source: str, target: str, rd: Rdkafka | None = None, producer=None
) -> dict[str, float]:
    """aiokafka_hop with librdkafka: a batch's records written, flushed (its acks), then committed."""
    rd = rd or Rdkafka(bootstrap)
    producer = producer or rd.producer()
    consumer = rd.consumer("hop", source, **{"isolation.level": "read_committed"})
    try:
        deadline = time.monotonic() + PHASE_LIMIT
        with Phase(broker_pid) as m:
            done = 0
            while done < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"confluent-kafka hop: {done} of {n} records within the phase limit")
                records = consumer.consume(num_messages=500, timeout=0.5)
                for record in records:
                    if record.error() is not None:
                        raise rd.kafka.KafkaException(record.error())
                    producer.produce(target, record.value(), key=record.key(), on_delivery=rd.delivered)
                if records:
                    producer.flush(30)  # the batch's acks, then its commit: as the services do
                    consumer.commit(asynchronous=False)
                done += len(records)
        rd.check()
        return m.row(n)
    finally:
        consumer.close()


# -- paced: the pipeline's regime -------------------------------------------------------------
async def feed(bootstrap: str, topic: str, rate: float, n: int) -> None:
    """Writes n records to `topic` at `rate` per second, in 10 ms ticks (run as a child process,
    so that its CPU is not counted as the hop's)."""
    producer = aio_producer(bootstrap, linger_ms=0)
    await producer.start()
    try:
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        async with asyncio.timeout(n / rate + PHASE_LIMIT):
            for key in keys(n):
                due = start + sent / rate
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                await producer.send(topic, VALUE, key=key)
                sent += 1
            await producer.flush()
    finally:
        await producer.stop()


async def paced_hop(bootstrap: str, broker_pid: int, client: str, n: int, rate: float) -> dict[str, float]:
    """The hop of one client fed at `rate` records/s by a child process: small fetches and small
    produce requests, as in the pipeline at that rate (the bulk phases measure the other end)."""
    source, target = f"paced-{uuid.uuid4().hex[:8]}", f"paced-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, source, target)
    feeder = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--feed", source, "--bootstrap", bootstrap, "--rate", str(rate), "--records", str(n)
    )
    try:
        if client == "aiokafka":
            row = await aiokafka_hop(bootstrap, broker_pid, n, source, target)
        else:
            row = await asyncio.to_thread(confluent_hop, bootstrap, broker_pid, n, source, target)
    finally:
        if feeder.returncode is None:
            feeder.kill()
        await feeder.wait()
    return row


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000, help="records per phase (at most 500,000)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each client, alternated (at most 5)")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument(
        "--paced", type=float, default=1000.0, help="records/s of the paced hop (0: none; at most 20,000)"
    )
    parser.add_argument("--feed", help=argparse.SUPPRESS)  # the paced hop's child: the topic to fill
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=1000.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n, rounds = min(args.records, 500_000), min(args.rounds, 5)
    if args.feed:
        await feed(args.bootstrap, args.feed, min(args.rate, 20_000.0), n)
        return
    paced = min(args.paced, 20_000.0)

    broker = start_broker("kafka")
    results: list[dict] = []
    try:
        assert broker.pid is not None
        for round_no in range(1, rounds + 1):
            for client in ("aiokafka", "confluent-kafka"):
                source, target = f"clients-{uuid.uuid4().hex[:8]}", f"clients-{uuid.uuid4().hex[:8]}"
                await create_topics(broker.bootstrap, source, target)
                if client == "aiokafka":
                    phases = await aiokafka_run(broker.bootstrap, broker.pid, n, source, target)
                else:
                    phases = await asyncio.to_thread(confluent_run, broker.bootstrap, broker.pid, n, source, target)
                if paced > 0:
                    # 30 s of records at the paced rate, at most n.
                    phases[f"hop@{paced:.0f}/s"] = await paced_hop(
                        broker.bootstrap, broker.pid, client, min(n, int(paced * 30)), paced
                    )
                for phase, row in phases.items():
                    results.append({"round": round_no, "client": client, "phase": phase, **row})
                    print(
                        f"round {round_no} {client:16s} {phase:12s} {row['records_per_s']:>10,.0f} records/s  "
                        f"client {row['client_us_per_record']:6.1f} µs/record  broker {row['broker_us_per_record']:6.1f}",
                        flush=True,
                    )
    finally:
        broker.stop()
    if args.json:
        Path(args.json).write_text(json.dumps({"records": n, "results": results}, indent=2))


if __name__ == "__main__":
    run_on_service_loop(main())  # uvloop and the collector tuned, as in the services
