#!/usr/bin/env python
"""What one message on a server stream costs the server: the same updates sent one per response
(WatchMessages) and several per response (WatchMessageBatches).

    .venv/bin/python bench/grpc_stream.py [--updates 50000] [--batches 1,10,50,500]

A grpc.aio server on uvloop, as intake runs, streams `--updates` copies of a real
`MessageUpdate` (a delivered message's view, an event id, a cursor) to a synchronous client in
another process, over loopback without TLS. For each batch size the server's process CPU
(utime + stime, gRPC's own threads included) per update is printed; the client's CPU is its own
process's and is not counted. Batch size 1 sends `MessageUpdate`s, larger ones
`WatchMessageBatchesResponse`s, the two RPCs' own responses. Each size runs twice, alternated,
so the spread between a size's two figures is the noise to read the differences against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from smsgw import eventloop
from smsgw.v1 import message_pb2 as mp
from smsgw.v1 import messaging_service_pb2 as api

METHOD = "/bench.Stream/Updates"

CLIENT = textwrap.dedent(
    """
    import sys, grpc
    channel = grpc.insecure_channel(sys.argv[1])
    call = channel.unary_stream(sys.argv[2], request_serializer=lambda b: b, response_deserializer=lambda b: b)
    count = sum(1 for _ in call(b""))
    print(count)
    """
)


def update() -> api.MessageUpdate:
    message = mp.Message(
        id="0193a3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b",
        account_id="acct-bench",
        to="+14155550100",
        body="Your code is 482913. It expires in 10 minutes.",
        status=mp.DELIVERED,
        segments=1,
        carrier="smpp-sim",
    )
    message.created_at.GetCurrentTime()
    message.updated_at.GetCurrentTime()
    return api.MessageUpdate(
        message=message,
        event_id="0193a3c4-5d6e-7f80-9a1b-2c3d4e5f6a7c",
        event_type="smsgw.v1.DeliveryReported",
    )


async def measure(updates: int, batch: int) -> dict:
    one = update()
    responses = (
        [one] * updates
        if batch == 1
        else [api.WatchMessageBatchesResponse(updates=[one] * batch, cursor="c" * 40)] * (updates // batch)
    )

    async def stream(request, context):
        for response in responses:
            yield response

    handler = grpc.method_handlers_generic_handler(
        "bench.Stream",
        {
            "Updates": grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=lambda b: b, response_serializer=lambda m: m.SerializeToString()
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        cpu, wall = time.process_time(), time.monotonic()
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, f"127.0.0.1:{port}", METHOD, stdout=subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(client.communicate(), timeout=300)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    finally:
        await server.stop(None)
    received = int(out)
    if received != len(responses):
        raise RuntimeError(f"batch {batch}: the client read {received} responses of {len(responses)}")
    sent = len(responses) * batch
    return {
        "batch": batch,
        "updates": sent,
        "server_cpu_us_per_update": round(1e6 * cpu / sent, 1),
        "updates_per_s": round(sent / wall, 1),
    }


async def main_async(args: argparse.Namespace) -> list[dict]:
    sizes = [int(b) for b in args.batches.split(",")]
    results = []
    for _ in range(2):
        for batch in sizes:
            result = await measure(args.updates, batch)
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=50_000)
    parser.add_argument("--batches", default="1,10,50,500", help="updates per response, comma-separated")
    args = parser.parse_args()
    eventloop.run(main_async(args))


if __name__ == "__main__":
    main()
