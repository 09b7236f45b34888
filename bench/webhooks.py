"""Status webhooks to one endpoint: how many a second receipt's dispatcher sends, and its CPU per webhook.

    .venv/bin/python bench/webhooks.py [--webhooks 20000] [--concurrency 4,16,64] [--receiver raw|aiohttp]

The 20-minute soak at 250 messages/s (about 1,000 status webhooks/s to its one endpoint) found the
endpoint 18,798 final statuses behind 180 s after the load (docs/reliability.md). This measures
receipt's `WebhookDispatcher` alone (`smsgw_receipt.webhooks.delivery`: signing, the per-endpoint
schedule, aiohttp's keep-alive client) against a receiver in its own process, for each
concurrency (requests in flight per endpoint, `SMSGW_WEBHOOKS__CONCURRENCY`). The webhooks are
offered as the feed offers them: no more than the endpoint's queue has room for
(`WebhookDispatcher.headroom`). Bounded by --webhooks and --seconds per run.

The receiver is `raw` (a bare HTTP/1.1 keep-alive answerer: about the cheapest an endpoint can be,
so the dispatcher is what is measured) or `aiohttp` (a typical Python receiver). On this 2-core
machine they share the cores; prints webhooks/s and CPU-µs per webhook of the dispatcher's process
and of the receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import free_port, start_child, wait_port
from procstat import Meter

from smsgw.domain.public_urls import UrlPolicy
from smsgw_receipt.webhooks.delivery import DispatcherConfig, WebhookDispatcher
from smsgw_receipt.webhooks.payload import Webhook

#: About the size of a real status webhook's body (message view and the event that changed it).
BODY = json.dumps(
    {
        "type": "message.status",
        "event_id": "",
        "message": {
            "id": "01JEXAMPLEMESSAGEID0000000",
            "account_id": "acct-bench",
            "to": "+14155550100",
            "from": "SMSGW",
            "status": "DELIVERED",
            "previous_status": "SENT",
            "version": 4,
            "segments": 1,
            "carrier": "smpp-sim",
            "carrier_message_ids": ["0123456789abcdef"],
            "created_at": "2026-12-05T08:00:00.000Z",
            "updated_at": "2026-12-05T08:00:01.250Z",
            "error": None,
        },
    }
)


class _OneAccount:
    def secret_for(self, account_id: str) -> str | None:
        return "whsec_bench"

    def default_callback_url(self, account_id: str) -> str:
        return ""


async def _raw_receiver(port: int, delay: float) -> None:
    """Answers each request 204 on a kept-alive connection, `delay` seconds after it came (a
    remote endpoint's round trip); reads exactly Content-Length bytes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                if delay:
                    await asyncio.sleep(delay)
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=512)
    async with server:
        await server.serve_forever()


def _aiohttp_receiver(port: int, delay: float) -> None:
    from aiohttp import web

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def measure(*, concurrency: int, webhooks: int, seconds: float, port: int, receiver_pid: int) -> dict:
    config = DispatcherConfig(concurrency=concurrency, urls=UrlPolicy(allow_http=True, allow_private=True))
    dispatcher = WebhookDispatcher(_OneAccount(), config=config, keep_pending=False)
    url = f"http://127.0.0.1:{port}/hook"
    meter = Meter({"receipt's dispatcher (this process)": os.getpid(), "receiver": receiver_pid})
    await dispatcher.start()
    try:
        # Warm up: the connections open, the endpoint's worker starts.
        for n in range(concurrency * 4):
            dispatcher.enqueue(Webhook(url, "acct-bench", f"warm-{n}", BODY.encode()))
        await asyncio.wait_for(dispatcher.wait_idle(), 30)
        before, started = meter.cpu(), time.monotonic()
        delivered_before = dispatcher.stats.delivered
        deadline = started + seconds
        offered = 0
        while offered < webhooks and time.monotonic() < deadline:
            room = min(dispatcher.headroom(), webhooks - offered)
            if room <= 0:
                await asyncio.sleep(0.002)
                continue
            for _ in range(room):
                body = BODY.replace('"event_id": ""', f'"event_id": "ev-{offered}"', 1).encode()
                dispatcher.enqueue(Webhook(url, "acct-bench", f"ev-{offered}", body))
                offered += 1
            await asyncio.sleep(0)
        await asyncio.wait_for(dispatcher.wait_idle(), max(5.0, deadline - time.monotonic() + 30))
        elapsed = time.monotonic() - started
        after = meter.cpu()
        delivered = dispatcher.stats.delivered - delivered_before
        return {
            "concurrency": concurrency,
            "offered": offered,
            "delivered": delivered,
            "dead_lettered": dispatcher.stats.dead_lettered,
            "webhooks_per_s": round(delivered / elapsed, 1),
            "cpu_us_per_webhook": {name: round((after[name] - before[name]) / max(1, delivered)) for name in after},
        }
    finally:
        await dispatcher.close()


async def run(args: argparse.Namespace) -> list[dict]:
    port = free_port()
    receiver = start_child(
        "webhook receiver",
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve",
            args.receiver,
            "--port",
            str(port),
            "--delay-ms",
            str(args.delay_ms),
        ],
        Path(tempfile.mkdtemp(prefix="bench-webhooks-")) / "receiver.log",
    )
    try:
        await wait_port(port, 30, alive=lambda: receiver.running, what="webhook receiver")
        assert receiver.proc is not None
        return [
            await measure(
                concurrency=c, webhooks=args.webhooks, seconds=args.seconds, port=port, receiver_pid=receiver.proc.pid
            )
            for c in args.concurrency
        ]
    finally:
        receiver.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--webhooks", type=int, default=20_000, help="per concurrency")
    p.add_argument("--seconds", type=float, default=60.0, help="at most, per concurrency")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[4, 16, 64])
    p.add_argument("--receiver", choices=("raw", "aiohttp"), default="raw")
    p.add_argument("--delay-ms", type=float, default=0.0, help="the receiver answers this long after a request")
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--serve", choices=("raw", "aiohttp"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve == "raw":
        asyncio.run(_raw_receiver(args.port, args.delay_ms / 1000))
    elif args.serve == "aiohttp":
        _aiohttp_receiver(args.port, args.delay_ms / 1000)
    else:
        results = asyncio.run(run(args))
        print(json.dumps({"receiver": args.receiver, "delay_ms": args.delay_ms, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
