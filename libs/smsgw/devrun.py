"""`make run`: the embedded broker, the SMSC simulator and all four services, until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

from smsgw.brokers import start_tansu
from smsgw.platform import Platform

DEFAULT_PORTS = {"intake": 50051, "routing": 50052, "carrier-adapter": 50053, "receipt": 50054}


def _port(name: str, default: int) -> int:
    return int(os.environ.get(f"SMSGW_{name.upper().replace('-', '_')}_PORT", default))


def _check_ports_free(ports: dict[str, int]) -> None:
    """Fail fast, naming the port and how to move it, instead of a service dying mid-start."""
    busy = []
    for name, port in ports.items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                busy.append(f"{port} ({name}: set SMSGW_{name.upper().replace('-', '_')}_PORT)")
    if busy:
        raise RuntimeError("ports already in use: " + ", ".join(busy))


async def main() -> int:
    started = time.monotonic()
    run_dir = Path(os.environ.get("SMSGW_RUN_DIR", ".run")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    grpc_ports = {name: _port(name, port) for name, port in DEFAULT_PORTS.items()}
    ports = {"broker": _port("broker", 9092), "smsc": _port("smsc", 2775), "smsc-control": _port("smsc-control", 2776),
             "twilio": _port("twilio", 8089), "http-callback": _port("http-callback", 50063),
             "metrics": _port("metrics", 9464), **grpc_ports}
    try:
        _check_ports_free(ports)
    except RuntimeError as exc:
        print(f"smsgw cannot start: {exc}", file=sys.stderr)
        return 1
    broker_port = ports["broker"]
    print(f"starting Tansu (embedded broker) on 127.0.0.1:{broker_port} ...", flush=True)
    broker = start_tansu(port=broker_port, log_path=run_dir / "tansu.log")
    platform = Platform.for_broker(
        broker, run_dir,
        smsc_port=ports["smsc"], smsc_control_port=ports["smsc-control"], grpc_ports=grpc_ports,
        twilio_port=ports["twilio"], http_callback_port=ports["http-callback"], metrics_port=ports["metrics"],
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print("starting SMSC simulator and services: intake, routing, carrier-adapter, receipt ...", flush=True)
        await platform.start()
        print(f"\nsmsgw is ready in {time.monotonic() - started:.1f}s", flush=True)
        print(f"  gRPC API (MessagingService): {platform.intake_address}")
        print(f"  broker: {broker.bootstrap} (Tansu, memory only)   SMSC simulator: 127.0.0.1:{platform.smsc_port}")
        print(f"  Twilio simulator: http://127.0.0.1:{platform.twilio_port} (carrier twilio-sim: +1415555077x)"
              f"   HTTP provider callbacks: 127.0.0.1:{platform.http_callback_port}")
        print(f"  carrier metrics (Prometheus): http://127.0.0.1:{platform.metrics_port}/metrics")
        print(f"  logs: {run_dir}/*.log")
        print(f'  try:  .venv/bin/smsgw send --to +14155550100 --body "hello"')
        print("Ctrl-C stops everything.", flush=True)
        await stop.wait()
        print("\nstopping ...", flush=True)
        return 0
    except Exception as exc:  # show why, then clean up
        print(f"smsgw failed to start: {exc}", file=sys.stderr)
        return 1
    finally:
        platform.stop()
        broker.stop()
        print("stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
