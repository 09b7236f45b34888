#!/usr/bin/env python
"""What one unary call costs the server before any of intake's work: gRPC's floor for SendMessage,
and what smsgw's server (ServiceServer) adds to it.

    .venv/bin/python bench/grpc_unary.py [--calls 20000] [--in-flight 64]

A grpc.aio server on uvloop, as intake runs, answers a real `SendMessageRequest` with a real
`SendMessageResponse` (a queued message's view) at once, to a grpc.aio client in another process
that keeps `--in-flight` calls open, over loopback without TLS. Two servers: a bare grpc.aio
server, and `smsgw.grpcx.server.ServiceServer`, as every service runs (each call counted per
method, requests that do not decode refused). For each the server's process CPU (utime + stime, gRPC's
own threads included) per call is printed; the client's CPU is its own process's and is not
counted. Each runs twice, alternated, so the spread between a server's two figures is the noise
to read the differences against.
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
from grpc_stream import update

from smsgw import eventloop
from smsgw.grpcx.server import ServiceServer
from smsgw.v1 import message_pb2 as mp
from smsgw.v1 import messaging_service_pb2 as api

METHOD = "/bench.Unary/Send"

CLIENT = textwrap.dedent(
    """
    import asyncio, sys, grpc
    from smsgw.v1 import messaging_service_pb2 as api

    async def main(address, method, calls, in_flight):
        request = api.SendMessageRequest(to="+14155550100", body="Your code is 482913.").SerializeToString()
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
            left = iter(range(calls))
            answered = 0

            async def worker():
                nonlocal answered
                for _ in left:
                    await call(request, timeout=30)
                    answered += 1

            await asyncio.gather(*(worker() for _ in range(in_flight)))
            print(answered)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    """
)


def response() -> api.SendMessageResponse:
    # The message grpc_stream.py streams, as SendMessage answers it: just queued.
    message = mp.Message()
    message.CopyFrom(update().message)
    message.status = mp.QUEUED
    return api.SendMessageResponse(message=message)


async def measure(calls: int, in_flight: int, smsgw_server: bool) -> dict:
    answer = response()

    async def send(request, context):
        return answer

    handler = grpc.method_handlers_generic_handler(
        "bench.Unary",
        {
            "Send": grpc.unary_unary_rpc_method_handler(
                send,
                request_deserializer=api.SendMessageRequest.FromString,
                response_serializer=api.SendMessageResponse.SerializeToString,
            )
        },
    )
    if smsgw_server:
        # As every service registers its methods: counted, refusing undecodable requests.
        service = ServiceServer(host="127.0.0.1", port=0, service_names=[])
        service.add(lambda server: server.add_generic_rpc_handlers((handler,)))
        server, port = service.server, service.port
    else:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        cpu, wall = time.process_time(), time.monotonic()
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLIENT,
            f"127.0.0.1:{port}",
            METHOD,
            str(calls),
            str(in_flight),
            stdout=subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(client.communicate(), timeout=300)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    finally:
        await server.stop(None)
    answered = int(out)
    if answered != calls:
        raise RuntimeError(f"the client got {answered} answers of {calls} calls")
    return {
        "server": "smsgw ServiceServer" if smsgw_server else "bare grpc.aio",
        "calls": calls,
        "in_flight": in_flight,
        "server_cpu_us_per_call": round(1e6 * cpu / calls, 1),
        "calls_per_s": round(calls / wall, 1),
    }


async def main_async(args: argparse.Namespace) -> list[dict]:
    results = []
    for _ in range(2):
        for smsgw_server in (False, True):
            result = await measure(args.calls, args.in_flight, smsgw_server)
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=64)
    args = parser.parse_args()
    eventloop.run(main_async(args))


if __name__ == "__main__":
    main()
