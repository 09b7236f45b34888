"""Kannel (Debian `kannel`: bearerbox + smsbox) under the same offered-load steps, side by side.

Kannel binds one SMPP transceiver to a separate instance of our SMSC simulator (same receipt
delay as smsgw's), load goes in as GET /cgi-bin/sendsms (one message per request, many
requests in parallel) and receipts come back to a local HTTP listener through each
message's dlr-url (type 1 = delivered, 2 = failed). The settings are those of
/work/shared/BENCHMARKING.md: store-type = file, dlr-storage = internal,
max-pending-submits = 50 (our window), msg-id-type = 0 (our simulator prints decimal ids both
in submit_sm_resp and in the receipt text). Logs at warning level (console and files): the
"could not find message" line (receipts lost) is an error, so it is still counted.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from common import free_port, smsc_duplicates, start_child, start_smsc_simulator, wait_port
from procstat import Meter
from steps import StepConfig, Tracker, idle_cpu, rates_from_probe, run_step
from yarl import URL

from smsgw_dev.platform import ManagedProcess

LOST = "could not find message"


def ensure_kannel(log=print) -> str:
    """bearerbox's path, installing Debian's kannel first if it is missing (bounded)."""
    if not shutil.which("bearerbox"):
        log("  installing Debian's kannel (apt-get)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, timeout=300, env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "kannel"], check=True, timeout=600, env=env, capture_output=True
        )
    path = shutil.which("bearerbox")
    if not path:
        raise RuntimeError("bearerbox not found after installing kannel")
    return path


def kannel_version() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "kannel"], capture_output=True, text=True, timeout=10
        ).stdout
        return out or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def write_config(run_dir: Path, *, admin: int, smsbox: int, sendsms: int, smsc_port: int) -> Path:
    conf = run_dir / "kannel.conf"
    conf.write_text(f"""
group = core
admin-port = {admin}
admin-password = bench
smsbox-port = {smsbox}
box-allow-ip = 127.0.0.1
log-file = "{run_dir}/bearerbox.log"
log-level = 2
store-type = file
store-location = "{run_dir}/kannel.store"
dlr-storage = internal

group = smsc
smsc = smpp
smsc-id = sim
host = 127.0.0.1
port = {smsc_port}
receive-port = 0
transceiver-mode = yes
smsc-username = smsgw
smsc-password = secret
system-type = VMA
max-pending-submits = 50
msg-id-type = 0
enquire-link-interval = 30

group = smsbox
bearerbox-host = 127.0.0.1
sendsms-port = {sendsms}
log-file = "{run_dir}/smsbox.log"
log-level = 2

group = sendsms-user
username = bench
password = bench
max-messages = 1
concatenation = false
user-allow-ip = 127.0.0.1

group = sms-service
keyword = default
text = "no service"
""")
    return conf


async def _dlr_listener(port: int, tracker: Tracker) -> web.AppRunner:
    async def dlr(request: web.Request) -> web.Response:
        key, kind = int(request.query.get("id", "-1")), request.query.get("type", "")
        if kind == "1":
            tracker.delivered_at.setdefault(key, time.monotonic())
        elif kind == "2":
            tracker.other_final.setdefault(key, "failed (dlr type 2)")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/dlr", dlr)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _wait_online(admin: int, timeout: float) -> None:
    """Until bearerbox's status page says the SMSC link is online (bound)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"http://127.0.0.1:{admin}/status.txt?password=bench") as resp:
                    if "(online" in await resp.text():
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"Kannel's SMSC link not online after {timeout}s")


def lost_receipts(run_dir: Path) -> int:
    try:
        with open(run_dir / "bearerbox.log", errors="replace") as f:
            return sum(1 for line in f if LOST in line)
    except FileNotFoundError:
        return 0


async def run(
    *,
    rates: list[float] | None,
    fractions: list[float],
    step_s: float,
    max_step_messages: int,
    probe_messages: int,
    drain_s: float,
    dlr_delay: float,
    connections: int,
    log=print,
) -> dict:
    ensure_kannel(log)
    run_dir = Path(tempfile.mkdtemp(prefix="kannel-bench-"))
    result: dict = {
        "system": "kannel",
        "kannel_version": kannel_version(),
        "run_dir": str(run_dir),
        "dlr_delay_s": dlr_delay,
    }
    children: list[ManagedProcess] = []
    dlr_runner = None
    tracker = Tracker()
    try:
        sim, smsc_port, control_port = await start_smsc_simulator(run_dir, dlr_delay=dlr_delay)
        children.append(sim)
        admin, smsbox_port, sendsms, dlr_port = free_port(), free_port(), free_port(), free_port()
        conf = write_config(run_dir, admin=admin, smsbox=smsbox_port, sendsms=sendsms, smsc_port=smsc_port)
        dlr_runner = await _dlr_listener(dlr_port, tracker)
        t0 = time.monotonic()
        # -v 2: console at warning level too (its default is debug, a line per PDU).
        bearerbox = start_child("bearerbox", ["bearerbox", "-v", "2", str(conf)], run_dir / "bearerbox.console.log")
        children.append(bearerbox)
        smsbox = None
        try:
            await wait_port(admin, 30, alive=lambda: bearerbox.running, what="bearerbox")
            await _wait_online(admin, 30)
            smsbox = start_child("smsbox", ["smsbox", "-v", "2", str(conf)], run_dir / "smsbox.console.log")
            children.append(smsbox)
            await wait_port(sendsms, 30, alive=lambda: smsbox.running, what="smsbox")
        except (RuntimeError, TimeoutError) as exc:
            box = smsbox or bearerbox
            raise RuntimeError(f"{exc}; {box.log_path}:\n{box.log_tail(10)}") from exc
        result["startup_s"] = round(time.monotonic() - t0, 1)
        meter = Meter(
            {
                "bearerbox": bearerbox.proc.pid,
                "smsbox": smsbox.proc.pid,
                "smsc-simulator": sim.proc.pid,
                "bench (load generator)": os.getpid(),
            }
        )
        keys = itertools.count()
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:

            async def one(label: str, seq: int) -> int | None:
                key = next(keys)
                query = urlencode(
                    {
                        "username": "bench",
                        "password": "bench",
                        "from": "12345",
                        "to": "+14155550100",
                        "text": f"{label} {seq}",
                        "dlr-mask": "3",
                        "dlr-url": f"http://127.0.0.1:{dlr_port}/dlr?id={key}&type=%d",
                    }
                )
                async with http.get(URL(f"http://127.0.0.1:{sendsms}/cgi-bin/sendsms?{query}", encoded=True)) as resp:
                    await resp.read()
                    return key if resp.status in (200, 202) else None

            def sender(label: str):
                async def send(count: int, seq: int) -> list[int]:
                    replies = await asyncio.gather(*(one(label, seq + i) for i in range(count)), return_exceptions=True)
                    return [k for k in replies if isinstance(k, int)]

                return send

            async def step(label: str, rate: float, seconds: float, max_messages: int, drain: float = drain_s) -> dict:
                # One HTTP request per message: calls of up to 50 requests, 8 calls in flight,
                # over at most `connections` keep-alive connections.
                batch = int(min(50, max(1, rate / 20)))
                cfg = StepConfig(
                    rate=rate, seconds=seconds, max_messages=max_messages, batch=batch, in_flight=8, drain_s=drain
                )
                lost0 = lost_receipts(run_dir)
                out = await run_step(cfg, sender(label), tracker, meter, load_generator="bench (load generator)")
                out["step"], out["batch"] = label, batch
                out["receipts_lost_in_log"] = lost_receipts(run_dir) - lost0
                try:
                    out["smsc"] = await smsc_duplicates(control_port, f"{label} ")
                except Exception as exc:
                    out["smsc"] = f"n/a ({exc!r})"
                for child in children:
                    if not child.running:
                        raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")
                log(
                    f"  kannel {label}: offered {out['offered_per_s']}/s accepted {out['accepted_per_s']}/s "
                    f"delivered {out['delivered_per_s']}/s (not delivered {out['not_delivered_in_bound']}, "
                    f"lost in log {out['receipts_lost_in_log']}), p50 {out['send_to_delivered_ms']['p50']} ms, "
                    f"CPU {out['cpu_us_per_delivered']['total']} µs/msg"
                )
                return out

            await step("warm", 20, 3, 50)
            result["idle_cpu_us_per_s"] = await idle_cpu(meter)
            if rates is None:  # the probe is drained longer, so its backlog does not spill into s0
                probe = await step("probe", 20_000, 30, probe_messages, max(drain_s, 90))
                result["probe"] = probe
                rates = rates_from_probe(probe["delivered_per_s"] or 10.0, fractions)
            result["steps"] = [
                await step(f"s{i}", r, step_s, min(max_step_messages, int(r * step_s) + 1)) for i, r in enumerate(rates)
            ]
    finally:
        # smsbox before bearerbox, the simulator last (as Kannel's own init scripts order it).
        for child in reversed(children):
            child.stop()
        if dlr_runner is not None:
            await dlr_runner.cleanup()
    result["receipts_lost_in_log_total"] = lost_receipts(run_dir)
    return result
