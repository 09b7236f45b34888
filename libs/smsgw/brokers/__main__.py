"""python -m smsgw.brokers tansu|kafka [--port N] [--log PATH]: run a dev broker until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from . import BrokerStartError, start_apache_kafka, start_tansu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m smsgw.brokers", description=__doc__)
    ap.add_argument("kind", choices=["tansu", "kafka"])
    ap.add_argument("--port", type=int, default=None, help="client port (default: a free one)")
    ap.add_argument("--log", type=Path, default=None, help="broker log file (default: in its temp dir)")
    ap.add_argument("--timeout", type=float, default=None, help="start timeout in seconds")
    args = ap.parse_args(argv)

    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    # Install before starting so a Ctrl-C during start-up still stops the broker cleanly.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    kwargs: dict = {"port": args.port, "log_path": args.log}
    if args.timeout is not None:
        kwargs["timeout"] = args.timeout
    try:
        broker = (start_tansu if args.kind == "tansu" else start_apache_kafka)(**kwargs)
    except BrokerStartError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    rc = 0
    try:
        print(f"broker ready at {broker.bootstrap}", flush=True)
        if broker.log_path is not None:
            print(f"{args.kind} log: {broker.log_path}", flush=True)
        while not stop.wait(0.5):
            if not broker.is_running():
                print(
                    f"error: {args.kind} broker exited; last log lines:\n{broker.log_tail()}",
                    file=sys.stderr,
                    flush=True,
                )
                rc = 1
                break
    finally:
        broker.stop()
    if received:
        print(f"stopped {args.kind} broker ({signal.Signals(received[0]).name})", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
