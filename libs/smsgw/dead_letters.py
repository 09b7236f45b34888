"""`smsgw dlq list|replay`: the records the services could not handle (smsgw.dead-letters.v1).

  smsgw dlq list   [--bootstrap HOST:PORT] [--topic-prefix P]
      one line per dead letter: its offset, when, which service, where it came from, the error
  smsgw dlq replay --offset N [--offset M ...] | --all   [--bootstrap ...]
      puts the records back on their source topics, key, value and headers as they were (once
      the cause is fixed): the service handles them again, and a record it still cannot handle
      comes back here after its attempts (smsgw.kafka.partitioned_loop.DEAD_LETTER_AFTER)

The records are written by routing's and receipt's loop (partitioned_loop.PartitionedLoop._dead_letter)
and by carrier-adapter's dispatcher (a dispatch command it cannot decode), with the headers
`letter_headers` gives: smsgw-dlq-source (topic/partition/offset), -service, -error and -at.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from smsgw.events.topics import DEAD_LETTERS
from smsgw.kafka.clients import wait_for_partitions
from smsgw.settings import ServiceSettings

_DLQ_HEADER = "smsgw-dlq-"


def letter_headers(
    headers: Iterable[tuple[str, bytes]] | None, *, source: tuple[str, int, int], service: str, error: BaseException
) -> list[tuple[str, bytes]]:
    """The headers a record goes to the dead-letter topic with: its own, then where it was read
    (topic, partition, offset), the service that gave up on it, why and when. `list` shows them;
    `replay` strips them again."""
    topic, partition, offset = source
    return [
        *(headers or ()),
        (_DLQ_HEADER + "source", f"{topic}/{partition}/{offset}".encode()),
        (_DLQ_HEADER + "service", service.encode()),
        (_DLQ_HEADER + "error", f"{type(error).__name__}: {error}"[:500].encode()),
        (_DLQ_HEADER + "at", datetime.now(UTC).isoformat(timespec="milliseconds").encode()),
    ]


@dataclass(frozen=True)
class DeadLetter:
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str:
        return next((v.decode(errors="replace") for k, v in self.headers if k == _DLQ_HEADER + name), "")

    @property
    def source(self) -> tuple[str, int, int]:
        """(topic, partition, offset) the record was read from."""
        topic, partition, offset = self.header("source").rsplit("/", 2)
        return topic, int(partition), int(offset)

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if not k.startswith(_DLQ_HEADER)]


async def read_dead_letters(kafka, topic: str) -> list[DeadLetter]:
    """Every record of the dead-letter topic, up to its end now."""
    consumer = AIOKafkaConsumer(**kafka.client_kwargs(), enable_auto_commit=False, client_id="smsgw-dlq-cli")
    await consumer.start()
    try:
        try:
            partitions = await wait_for_partitions(kafka, topic, timeout=10.0)
        except TimeoutError:
            raise ValueError(f"no topic {topic} (is this the platform's cluster and prefix?)") from None
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        letters: list[DeadLetter] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                letters.extend(DeadLetter(r.offset, r.key, r.value or b"", tuple(r.headers or ())) for r in records)
        return sorted(letters, key=lambda letter: letter.offset)
    finally:
        await consumer.stop()


async def replay(kafka, letters: list[DeadLetter]) -> None:
    producer = AIOKafkaProducer(**kafka.client_kwargs(), acks="all", client_id="smsgw-dlq-cli")
    await producer.start()
    try:
        for letter in letters:
            topic, partition, _offset = letter.source
            await producer.send_and_wait(
                topic, value=letter.value, key=letter.key, partition=partition, headers=letter.original_headers
            )
    finally:
        await producer.stop()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smsgw dlq", description="records the services could not handle")
    p.add_argument(
        "--bootstrap",
        default=os.environ.get("SMSGW_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        help="Kafka bootstrap host:port (default $SMSGW_KAFKA_BOOTSTRAP or 127.0.0.1:9092)",
    )
    p.add_argument("--topic-prefix", default=os.environ.get("SMSGW_TOPIC_PREFIX", ""))
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every dead letter, oldest first")
    again = sub.add_parser("replay", help="put dead letters back on their source topics")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--offset", type=int, action="append", help="a dead letter's offset (from list); repeatable")
    which.add_argument("--all", action="store_true")
    return p


async def run(args: argparse.Namespace) -> int:
    # TLS and SASL as the services take them (SMSGW_KAFKA_SECURITY_PROTOCOL, ...; docs/brokers.md).
    kafka = ServiceSettings(kafka_bootstrap=args.bootstrap).kafka_connection()
    letters = await read_dead_letters(kafka, args.topic_prefix + DEAD_LETTERS.name)
    if args.command == "list":
        if not letters:
            print("no dead letters")
        for letter in letters:
            topic, partition, offset = letter.source
            print(
                f"{letter.offset}  {letter.header('at')}  {letter.header('service')}  "
                f"{topic}/{partition}@{offset}  key={(letter.key or b'').decode(errors='replace')}  "
                f"{letter.header('error')}"
            )
        return 0
    chosen = letters if args.all else [letter for letter in letters if letter.offset in set(args.offset)]
    missing = set() if args.all else set(args.offset) - {letter.offset for letter in chosen}
    if missing:
        print(f"error: no dead letter at offset {', '.join(map(str, sorted(missing)))}", file=sys.stderr)
        return 1
    await replay(kafka, chosen)
    print(f"replayed {len(chosen)} dead letter(s) to their source topics")
    return 0


def dlq_main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
