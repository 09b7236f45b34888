"""`smsgw projections ...`: rebuild a message store from the log, or keep one up to date.

  smsgw projections rebuild --store sqlite:///path.db|postgresql://... --bootstrap HOST:PORT [--topic-prefix P]
  smsgw projections run     --store ... --bootstrap HOST:PORT [--topic-prefix P]

`rebuild` drops the store's contents, replays the events topic from the beginning up to
its end at the time of the call, prints a summary and exits. `run` resumes from the
store's checkpoint and keeps projecting until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time

from smsgw.events.topics import MESSAGE_EVENTS
from smsgw.settings import ServiceSettings, url_password_masked

from .projector import Projector, make_consumer
from .store import StoreError
from .urls import open_store


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smsgw projections", description="message read model in SQLite or PostgreSQL")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (
        ("rebuild", "drop the store's contents and replay the whole log into it"),
        ("run", "keep the store up to date from its checkpoint until stopped"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument(
            "--store",
            required=True,
            help="sqlite:///relative.db, sqlite:////absolute.db or postgresql://user@host:port/db[?schema=S]",
        )
        cmd.add_argument(
            "--bootstrap",
            default=os.environ.get("SMSGW_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            help="Kafka bootstrap host:port (default $SMSGW_KAFKA_BOOTSTRAP or 127.0.0.1:9092)",
        )
        cmd.add_argument(
            "--topic-prefix",
            default=os.environ.get("SMSGW_TOPIC_PREFIX", ""),
            help="prefix of the topic names (default $SMSGW_TOPIC_PREFIX)",
        )
        cmd.add_argument(
            "--fetch-max-wait-ms",
            type=int,
            default=int(os.environ.get("SMSGW_KAFKA_FETCH_MAX_WAIT_MS", "500")),
            help="broker fetch wait; keep it small on Tansu (default $SMSGW_KAFKA_FETCH_MAX_WAIT_MS or 500)",
        )
        if name == "rebuild":
            cmd.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    return p


def _projector(args) -> Projector:
    topic = args.topic_prefix + MESSAGE_EVENTS.name
    # TLS and SASL as the services take them (SMSGW_KAFKA_SECURITY_PROTOCOL, ...; docs/brokers.md).
    kafka = ServiceSettings(kafka_bootstrap=args.bootstrap).kafka_connection()
    consumer = make_consumer(kafka, client_id="smsgw-projections-cli", fetch_max_wait_ms=args.fetch_max_wait_ms)
    return Projector(open_store(args.store), consumer, topic, kafka=kafka)


async def rebuild(args) -> int:
    projector = _projector(args)
    started = time.monotonic()
    try:
        await projector.rebuild(timeout=args.timeout)
    finally:
        await projector.stop()
        await projector.store.close()
    s = projector.stats
    print(
        f"rebuilt {url_password_masked(args.store)} from {projector.topic} in {time.monotonic() - started:.1f}s: "
        f"{s.records} records, {s.applied} events applied, {s.skipped} undecodable skipped, "
        f"{len(projector.positions)} partitions"
    )
    return 0


async def run(args) -> int:
    projector = _projector(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await projector.start()
        projector.spawn()
        await stop.wait()
    finally:
        await projector.stop()
        await projector.store.close()
    return 0


def projections_main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        return asyncio.run(rebuild(args) if args.command == "rebuild" else run(args))
    except (StoreError, TimeoutError, ValueError, OSError) as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def rebuild_main(argv: list[str] | None = None) -> int:
    """`smsgw projections rebuild ARGS`: argv are the ARGS after `rebuild`."""
    return projections_main(["rebuild", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(projections_main())
