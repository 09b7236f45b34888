"""Small helpers the benchmarks share: percentiles, ports, a logged child process, the SMSC simulator."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from smsgw.brokers import free_port
from smsgw_dev.platform import ManagedProcess

__all__ = ["free_port", "pct", "recipient", "start_child", "start_smsc_simulator", "wait_port"]

# US area codes whose numbers phonenumbers holds valid (exchanges 200-899 but N11 and 555).
_AREA_CODES = (212, 213, 312, 415, 510, 617, 646, 702, 713, 718, 805, 818, 917, 949)
_SPACE = len(_AREA_CODES) * 700 * 10_000


def recipient(seq: int) -> str:
    """A valid number, different for each of millions of consecutive `seq`s.

    Messages to one number would let intake's cache of number verdicts answer every validation
    after the first (phonenumbers is ~100 µs a number); real traffic has many recipients, so the
    benchmarks pay for each one. The simulator's special ranges (+1415555066x-069x, 077x) and
    make run's phone prefix (+1650555) are never produced: exchange 555 is skipped.
    """
    h = (seq * 2_654_435_761) % _SPACE  # a multiplicative hash: consecutive seqs land far apart
    area = _AREA_CODES[h % len(_AREA_CODES)]
    h //= len(_AREA_CODES)
    exchange = 200 + h % 700
    if exchange % 100 == 11 or exchange == 555:
        exchange += 1
    return f"+1{area}{exchange}{h // 700 % 10_000:04d}"


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def ms_summary(seconds: list[float]) -> dict[str, float | None]:
    return {f"p{p}": (None if (v := pct(seconds, p)) is None else round(v * 1000, 1)) for p in (50, 95, 99)}


async def wait_port(port: int, timeout: float, *, alive=lambda: True, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what or port} exited before opening port {port}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{what or port}: port {port} not open after {timeout}s")


def start_child(name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> ManagedProcess:
    """A subprocess logging to `log_path`, the platform's own kind (bounded, idempotent stop)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child = ManagedProcess(name=name, argv=argv, env=env if env is not None else dict(os.environ), log_path=log_path)
    child.start()
    return child


async def start_smsc_simulator(
    run_dir: Path, *, dlr_delay: float, system_id: str = "smsgw", password: str = "secret", timeout: float = 30.0
) -> tuple[ManagedProcess, int, int]:
    """Our SMSC simulator as its own process (decimal ids in submit_sm_resp and receipts).

    Returns (child, SMPP port, control port). Log level WARNING: the INFO log is per session,
    not per message, but keep the simulator's own cost as low as the platform's copy.
    """
    port, control_port = free_port(), free_port()
    child = start_child(
        "smsc-simulator",
        [
            sys.executable,
            "-m",
            "smsgw_dev.simulators.smsc",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--control-port",
            str(control_port),
            "--dlr-delay",
            str(dlr_delay),
            "--system-id",
            system_id,
            "--password",
            password,
        ],
        run_dir / "smsc-simulator.log",
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        await wait_port(port, timeout, alive=lambda: child.running, what="smsc-simulator")
        await wait_port(control_port, timeout, alive=lambda: child.running, what="smsc-simulator control")
    except BaseException:
        child.stop()
        raise
    return child, port, control_port


async def smsc_duplicates(control_port: int, prefix: str, timeout: float = 30.0) -> dict:
    """Submits per message at the simulator (GET /submitted), for bodies starting with *prefix*.

    Every benchmark message has a unique body, so a body seen twice is a message submitted twice.
    """
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        async with http.get(f"http://127.0.0.1:{control_port}/submitted") as resp:
            submitted = await resp.json()
    wanted = prefix.encode().hex()
    counts: dict[str, int] = {}
    for m in submitted:
        if m["user_data_hex"].startswith(wanted):
            counts[m["user_data_hex"]] = counts.get(m["user_data_hex"], 0) + 1
    return {"submits": sum(counts.values()), "messages": len(counts), "duplicates": sum(n - 1 for n in counts.values())}
