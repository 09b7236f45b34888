"""One SMPP bind of the carrier-adapter's client: how many submit_sm/s it carries, with receipts.

    .venv/bin/python bench/smpp_bind.py [--seconds 10] [--window 50] [--senders 200]

The throughput issue's "one SMPP bind >= 2,000 submit_sm/s to the simulator", measured on what the
carrier-adapter runs (`smsgw.smpp.client.SmppClient`: its window, its enquire_link and receipt
handling), not on a bare session as `bench/smsc_alone.py` does. The SMSC simulator is its own
process; --senders tasks call `submit()` (each awaits its submit_sm_resp, as the adapter's
dispatcher does), bounded by --seconds and --max-submits, then the receipts are awaited (bounded).
Prints submits/s, receipts, and CPU-µs per submit of the client process (this one, the load
tasks included) and of the simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from common import start_smsc_simulator
from procstat import Meter

from smsgw.smpp.client import SmppClient
from smsgw.smpp.inbound import InboundDeliver


async def measure(
    *,
    seconds: float = 10.0,
    max_submits: int = 100_000,
    window: int = 50,
    senders: int = 200,
    receipt_wait: float = 20.0,
    run_dir: Path | None = None,
) -> dict:
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="smpp-bind-"))
    sim, port, _control = await start_smsc_simulator(run_dir, dlr_delay=0.0)
    receipts = 0

    async def on_deliver(deliver: InboundDeliver) -> None:
        nonlocal receipts
        receipts += deliver.is_receipt

    client = SmppClient(
        host="127.0.0.1", port=port, system_id="smsgw", password="secret", window=window, on_deliver=on_deliver
    )
    meter = Meter({"smsc-simulator": sim.proc.pid if sim.proc else 0, "smpp client (this process)": os.getpid()})
    submitted = failed = 0
    try:
        await asyncio.wait_for(client.start(), 30)
        before, started = meter.cpu(), time.monotonic()
        deadline = started + seconds

        async def sender(n: int) -> None:
            nonlocal submitted, failed
            i = n
            while time.monotonic() < deadline and submitted + failed < max_submits:
                outcome = await client.submit(
                    source="SMSGW", destination=f"+1415{5550000 + i % 10_000:07d}", text=f"bind {i}"
                )
                if outcome.ok:
                    submitted += 1
                else:
                    failed += 1
                i += senders

        await asyncio.gather(*(sender(n) for n in range(senders)))
        elapsed = time.monotonic() - started
        after = meter.cpu()
        wait_until = time.monotonic() + receipt_wait
        while receipts < submitted and time.monotonic() < wait_until:
            await asyncio.sleep(0.1)
        return {
            "window": window,
            "senders": senders,
            "submits": submitted,
            "refused": failed,
            "submits_per_s": round(submitted / elapsed, 1),
            "receipts": receipts,
            "cpu_us_per_submit": {name: round((after[name] - before[name]) / max(1, submitted)) for name in after},
        }
    finally:
        await client.close()
        sim.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--max-submits", type=int, default=100_000)
    p.add_argument("--window", type=int, default=50)
    p.add_argument("--senders", type=int, default=200)
    args = p.parse_args()
    result = asyncio.run(
        measure(seconds=args.seconds, max_submits=args.max_submits, window=args.window, senders=args.senders)
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
