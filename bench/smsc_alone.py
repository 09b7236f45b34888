"""The SMSC simulator alone: how many submit_sm/s it answers, with receipts, over one bind.

    .venv/bin/python bench/smsc_alone.py [--seconds 10] [--window 50] [--dlr-delay 0.0]

Starts `python -m smsgw_dev.simulators.smsc` as its own process, binds one transceiver with our
SMPP session layer, keeps --window submit_sm in flight (receipt requested) for --seconds or
--max-submits, answers every receipt, then waits (bounded) for the last receipts.

The load client is Python too and shares the two cores with the simulator, so the measured
rate is a floor; `capacity_per_core_s` (1e6 / simulator CPU-µs per submit) is what the
simulator could answer with a whole core, which is the figure that tells whether it can be
anyone's bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from common import start_smsc_simulator
from procstat import Meter

from smsgw.smpp import constants as c
from smsgw.smpp.framing import PduStream
from smsgw.smpp.pdu import BindTransceiver, DeliverSm, SubmitSm, Unbind
from smsgw.smpp.session import SmppSession

_log = logging.getLogger("smsc_alone")


async def measure(
    *,
    seconds: float = 10.0,
    max_submits: int = 100_000,
    window: int = 50,
    dlr_delay: float = 0.0,
    receipt_wait: float = 20.0,
    run_dir: Path | None = None,
) -> dict:
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="smsc-alone-"))
    sim, port, _control = await start_smsc_simulator(run_dir, dlr_delay=dlr_delay)
    meter = Meter({"smsc-simulator": sim.proc.pid, "load-client": os.getpid()})
    receipts = 0

    async def on_request(session: SmppSession, pdu) -> None:
        nonlocal receipts
        if isinstance(pdu, DeliverSm):
            if pdu.esm_class & c.ESM_CLASS_SMSC_DELIVERY_RECEIPT:
                receipts += 1
            await session.send(pdu.response())

    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        session = SmppSession(PduStream(reader, writer), handler=on_request, name="smsc-alone", logger=_log)
        session.start()
        resp = await session.request(BindTransceiver(system_id="smsgw", password="secret"), timeout=5)
        if resp.command_status != c.ESME_ROK:
            raise RuntimeError(f"bind refused: 0x{resp.command_status:08X}")

        ok = errors = 0
        slots = asyncio.Semaphore(window)

        async def submit(i: int) -> None:
            nonlocal ok, errors
            try:
                r = await session.request(
                    SubmitSm(
                        source_addr="12345",
                        destination_addr="+14155550100",
                        registered_delivery=c.REGISTERED_DELIVERY_RECEIPT,
                        short_message=f"alone {i}".encode(),
                    ),
                    timeout=10,
                )
                ok, errors = (ok + 1, errors) if r.command_status == c.ESME_ROK else (ok, errors + 1)
            except Exception:
                errors += 1
            finally:
                slots.release()

        cpu0, t0 = meter.cpu(), time.monotonic()
        tasks, i = set(), 0
        while i < max_submits and time.monotonic() - t0 < seconds:
            await slots.acquire()
            task = asyncio.create_task(submit(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks, timeout=15)
        submit_s = time.monotonic() - t0
        deadline = time.monotonic() + receipt_wait
        while receipts < ok and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        all_s = time.monotonic() - t0
        cpu1, rss = meter.cpu(), meter.rss()
        with_receipts = receipts / all_s
        sim_us = (cpu1["smsc-simulator"] - cpu0["smsc-simulator"]) / max(1, ok)
        client_us = (cpu1["load-client"] - cpu0["load-client"]) / max(1, ok)
        try:
            await session.request(Unbind(), timeout=2)
        except Exception:
            pass
        await session.close()
    finally:
        sim.stop()
    return {
        "window": window,
        "dlr_delay_s": dlr_delay,
        "seconds": round(submit_s, 2),
        "submits_ok": ok,
        "submit_errors": errors,
        "receipts": receipts,
        "submits_per_s": round(ok / submit_s, 1),
        "submits_with_receipts_per_s": round(min(ok, receipts) / all_s, 1),
        "simulator_cpu_us_per_submit": round(sim_us, 1),
        "load_client_cpu_us_per_submit": round(client_us, 1),
        "capacity_per_core_s": round(1e6 / sim_us) if sim_us else None,
        "simulator_rss_kib": rss["smsc-simulator"],
        "log": str(sim.log_path),
        "note": "measured rate shares 2 cores with the Python load client; capacity = 1e6 / simulator CPU-µs",
        **({"with_receipts_per_s_raw": round(with_receipts, 1)} if receipts > ok else {}),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--max-submits", type=int, default=100_000)
    p.add_argument("--window", type=int, default=50)
    p.add_argument("--dlr-delay", type=float, default=0.0)
    args = p.parse_args()
    print(
        json.dumps(
            asyncio.run(
                measure(
                    seconds=args.seconds, max_submits=args.max_submits, window=args.window, dlr_delay=args.dlr_delay
                )
            ),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
