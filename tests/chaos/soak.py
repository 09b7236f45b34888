"""`make soak`: the platform under a steady load for a long while (30 minutes by default), a fault
every few minutes, its processes' memory and open file descriptors sampled throughout.

    python -m tests.chaos.soak [--minutes 30] [--rate 200] [--fault-every 180]

Apache Kafka (one node) and the SMSC simulator, both reached through Toxiproxy, as in `make
chaos`. The faults cycle through those that leave the processes running (a restart would reset
the memory being watched): the SMSC link cut, a throttling storm, submit responses lost,
receipts disordered, the Kafka link slowed. The load is `--rate` messages a second from
`--senders` paced senders (SendMessage, an idempotency key each, resent on UNAVAILABLE), to 100
recipients; the account's webhook endpoint answers every webhook. Routing's records and
receipt's settled correlations are kept 4 minutes (RETENTION_SECONDS) instead of an hour, so
that their windows are full a third of the way into a 15-minute run.

Judged at the end: every acknowledged message watched to a final status (none lost or stuck), no
message at the SMSC twice unless its history reports the attempt in doubt, and no growth: each
service process's RSS over the last tenth of the run within 10 % (and 16 MiB) of its RSS a third
of the way in (caches and retention windows fill in the first 5 minutes), and its open file
descriptors within 10 of that point. A run shorter than 15 minutes shows memory without judging
it (the windows are still filling). Prints a table per process; exits 1 on any failure.
Results: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc

from smsgw.domain import status as st
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_dev.platform import Platform
from tests.chaos.__main__ import (
    Context,
    Fault,
    Scenario,
    kafka_link_slow,
    platform_for,
    receipts_disordered,
    smsc_link_cut,
    smsc_throttling_storm,
    submit_responses_lost,
    supervise,
)
from tests.chaos.ledger import ACCOUNT, Load, SubmitCounter, Watcher, WebhookReceiver
from tests.chaos.toxiproxy import build as toxiproxy_build

FAULTS: tuple[tuple[str, Fault], ...] = (
    ("SMSC link cut 10 s", smsc_link_cut(10)),
    ("SMSC throttling storm 15 s", smsc_throttling_storm),
    ("every 10th submit response lost for 15 s", submit_responses_lost),
    ("receipts duplicated, stale, early and unknown 20 s", receipts_disordered),
    ("Kafka link 200 ms slower each way for 20 s", kafka_link_slow(20, 200)),
)

#: State kept for a while after a message ends (routing's records, receipt's settled correlations)
#: grows for that long, then stays flat: windows of 4 minutes, so that a run of 15 minutes or more
#: measures the flat part (production keeps them an hour: memory is rate x window, docs/capacity.md).
RETENTION_SECONDS = 240
SOAK = Scenario(
    "soak",
    smsc_link_cut(0),
    smsc_link=True,
    kafka_link=True,
    extra_env={
        "SMSGW_RECORD_RETENTION_SECONDS": str(RETENTION_SECONDS),
        "SMSGW_RECEIPT_POLICIES": json.dumps(
            {
                "default": {"receipt_timeout": 3600, "orphan_after": 5, "retain_after_final": RETENTION_SECONDS},
                "carriers": {"smsc-sim-nodlr": {"receipt_timeout": 3, "on_timeout": "expire"}},
            }
        ),
    },
)


@dataclass
class Usage:
    """One process's samples: (seconds since the load began, RSS in KiB, open file descriptors)."""

    samples: list[tuple[float, int, int]] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)


def _proc_usage(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None
    return rss, fds


async def sample(platform: Platform, usage: dict[str, Usage], started: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        now = time.monotonic() - started
        for name in platform.service_processes:
            process = platform.processes.get(name)
            if process is None or process.proc is None or not process.running:
                continue
            got = _proc_usage(process.proc.pid)
            if got is not None:
                entry = usage.setdefault(name, Usage())
                entry.pids.add(process.proc.pid)
                entry.samples.append((now, *got))
        await asyncio.sleep(5.0)


def growth_verdicts(usage: dict[str, Usage], seconds: float) -> tuple[list[str], bool]:
    """Per process: RSS and FDs a third of the way in (or once the retention windows are full, if
    later) against the last tenth of the run. A run too short for the windows to be full well
    before its last tenth shows its figures without judging them: its growth is the windows filling."""
    lines, ok = [], True
    full = RETENTION_SECONDS + 60  # the windows are full this long into the run
    baseline = max(seconds / 3, full)
    judged = seconds >= 3 * full
    if not judged:
        lines.append(
            f"(memory not judged: the retention windows fill in the first {full / 60:.0f} minutes, so growth is "
            f"judged in runs of {3 * full / 60:.0f} minutes or more; this one is {seconds / 60:.0f})"
        )
    lines.append(
        f"| process | RSS at {baseline:.0f} s (MiB) | RSS, last tenth (MiB) | growth | FDs at {baseline:.0f} s "
        "| FDs, last tenth | verdict |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for name, entry in sorted(usage.items()):
        if len(entry.pids) > 1:
            lines.append(f"| {name} | - | - | - | - | - | restarted: not judged |")
            ok = False
            continue
        third = [s for s in entry.samples if baseline - 30 <= s[0] <= baseline + 30]
        last = [s for s in entry.samples if s[0] >= seconds * 0.9]
        if not third or not last:
            lines.append(f"| {name} | - | - | - | - | - | too few samples |")
            ok = False
            continue
        rss_third = statistics.median(s[1] for s in third) / 1024
        rss_last = statistics.median(s[1] for s in last) / 1024
        fds_third, fds_last = max(s[2] for s in third), max(s[2] for s in last)
        grew = rss_last - rss_third
        flat = grew <= max(0.10 * rss_third, 16.0) and fds_last - fds_third <= 10
        ok = ok and (flat or not judged)
        verdict = ("flat" if flat else "**grew**") if judged else "not judged"
        lines.append(
            f"| {name} | {rss_third:.0f} | {rss_last:.0f} | {grew:+.1f} MiB ({100 * grew / rss_third:+.1f} %) "
            f"| {fds_third} | {fds_last} | {verdict} |"
        )
    return lines, ok


async def soak(
    minutes: float,
    rate: float,
    senders: int,
    fault_every: float,
    root: Path,
    traced: tuple[str, ...] = (),
    webhooks_down: bool = False,
) -> int:
    """Every service process is sent SIGUSR2 a third of the way in and at the end of the load: its
    log then says where its resident memory is (smsgw.memory_report), printed here too. `traced`:
    processes whose allocations tracemalloc records (SMSGW_TRACEMALLOC_FRAMES): their reports also
    name what their heap holds and what grew in between. `webhooks_down`: the
    account's webhook endpoint never answers (every webhook fails and is retried)."""
    seconds = minutes * 60
    prefix = f"soak{uuid.uuid4().hex[:6]}."
    scenario = replace(SOAK, service_env={name: {"SMSGW_TRACEMALLOC_FRAMES": "1"} for name in traced})
    async with platform_for(scenario, root / "soak", prefix) as ctx:
        platform = ctx.platform
        per_sender = rate / senders
        loads = [
            Load(
                tag=f"{prefix}{i}",
                rate=per_sender,
                count=int(per_sender * seconds) + 1,
                seconds=seconds,
                recipients=100,
            )
            for i in range(senders)
        ]
        watcher, counter = Watcher(), SubmitCounter(platform.smsc_control_port or 0)
        # The account's webhook endpoint, up and answering (a down one keeps every webhook retrying).
        hooks = ctx.hooks = WebhookReceiver(platform.account_webhook_port)
        if not webhooks_down:
            await hooks.start()
        usage: dict[str, Usage] = {}
        stop = asyncio.Event()
        restarts: Counter[str] = Counter()
        faults: list[str] = []
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            background = [
                asyncio.create_task(watcher.run(channel, stop)),
                asyncio.create_task(counter.run(stop)),
                asyncio.create_task(supervise(platform, stop, restarts)),
            ]
            await asyncio.sleep(1.0)
            started = time.monotonic()
            background.append(asyncio.create_task(sample(platform, usage, started, stop)))
            stub = api_grpc.MessagingServiceStub(channel)
            sending = asyncio.gather(*(load.run(stub) for load in loads))
            injecting = asyncio.create_task(inject(ctx, fault_every, seconds, faults))
            reporting = asyncio.create_task(report_memory(platform, [seconds / 3, seconds - 5]))
            await sending
            await reporting
            injecting.cancel()
            await asyncio.gather(injecting, return_exceptions=True)
            lost, stuck, drained = await drain(watcher, loads, timeout=180)
            unhooked = [] if webhooks_down else await webhooked(watcher, hooks, loads, timeout=180)
            duplicated, reported = await duplicates(counter, loads, stub)
            stop.set()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if not webhooks_down:
                await hooks.stop()

    accepted = sum(len(load.accepted) for load in loads)
    refused = Counter[str]()
    for load in loads:
        refused.update(load.refused)
    lines, flat = growth_verdicts(usage, seconds)
    ok = flat and not lost and not stuck and duplicated == reported and not restarts and not unhooked
    print(
        f"\nsoak: {minutes:g} min at {rate:g} messages/s offered ({senders} senders), faults every "
        f"{fault_every:g} s: {', '.join(faults)}"
    )
    print(
        f"accepted {accepted} ({accepted / seconds:.1f}/s); failed calls {dict(refused) or 0}; lost {len(lost)}; "
        f"stuck {len(stuck)} (drained in {drained:.0f} s); at the SMSC twice {duplicated} "
        f"(reported in doubt {reported}); processes restarted {dict(restarts) or 0}"
    )
    if not webhooks_down:
        print(
            f"webhooks: the final status of {accepted - len(unhooked)} of {accepted} messages reached the account's "
            f"endpoint ({len(unhooked)} not, 180 s after the load)"
        )
    print("\n".join(lines))
    print("soak:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


async def report_memory(platform: Platform, at: list[float]) -> None:
    """SIGUSR2 to each service process at each of `at` (seconds into the load): a memory report in
    its log, whose first line is printed here."""
    started = time.monotonic()
    for when in at:
        await asyncio.sleep(max(0.0, when - (time.monotonic() - started)))
        print(f"  [{time.monotonic() - started:6.0f} s] memory of each service (smsgw.memory_report):", flush=True)
        for name in sorted(platform.service_processes):
            process = platform.processes.get(name)
            if process is None or not process.running:
                continue
            log_file = process.log_path
            seen = log_file.stat().st_size if log_file.exists() else 0
            process.signal(signal.SIGUSR2)
            print(f"    {name}: {await _reported(log_file, seen)}", flush=True)


async def _reported(log_file: Path, since: int, timeout: float = 10.0) -> str:
    """The memory report's first line written to `log_file` after byte `since`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        with open(log_file, "rb") as log:
            log.seek(since)
            for line in log.read().decode(errors="replace").splitlines():
                if "smsgw.memory_report" in line and ": RSS " in line:
                    return line.split("smsgw.memory_report: ", 1)[-1]
    return f"no report in {timeout:g} s"


async def inject(ctx: Context, every: float, seconds: float, done: list[str]) -> None:
    """One fault every `every` seconds, in turn, while the load lasts (none in its last minute)."""
    started = time.monotonic()
    for n in range(10_000):
        await asyncio.sleep(every)
        if time.monotonic() - started > seconds - 60:
            return
        name, fault = FAULTS[n % len(FAULTS)]
        print(f"  [{time.monotonic() - started:6.0f} s] {name}", flush=True)
        try:
            await fault(ctx)
        except Exception as error:  # a fault whose own check failed: said, and on to the next
            print(f"    the fault's check failed: {error!r}", flush=True)
            done.append(f"{name} (its check failed)")
            continue
        done.append(name)


async def drain(watcher: Watcher, loads: list[Load], timeout: float) -> tuple[list[str], list[str], float]:
    """Waits until the watcher saw a final status for every acknowledged message. Lost: ids the
    watcher never heard of; stuck: seen, never final."""
    started = time.monotonic()
    ids = [message_id for load in loads for message_id in load.accepted]
    while time.monotonic() - started < timeout:
        pending = [m for m in ids if not any(st.is_final(s) for s in watcher.seen.get(m, ()))]
        if not pending:
            break
        await asyncio.sleep(2.0)
    lost = [m for m in ids if m not in watcher.seen]
    stuck = [m for m in ids if m in watcher.seen and not any(st.is_final(s) for s in watcher.seen[m])]
    return lost, stuck, time.monotonic() - started


async def webhooked(watcher: Watcher, hooks: WebhookReceiver, loads: list[Load], timeout: float) -> list[str]:
    """Waits until the account's endpoint was POSTed each message's final status (the one the
    watcher saw); returns the messages whose final status it never got."""
    started = time.monotonic()
    ids = [message_id for load in loads for message_id in load.accepted]

    def missing() -> list[str]:
        return [
            m for m in ids if not any(st.is_final(s) and s in hooks.seen.get(m, set()) for s in watcher.seen.get(m, ()))
        ]

    while (pending := missing()) and time.monotonic() - started < timeout:
        await asyncio.sleep(2.0)
    return pending


async def duplicates(counter: SubmitCounter, loads: list[Load], stub) -> tuple[int, int]:
    """Messages of the load at the SMSC more than once, and how many of them report an attempt in doubt."""
    ours = {load.body(n).encode("latin-1"): message_id for load in loads for message_id, n in load.accepted.items()}
    repeated = [ours[data] for data in await counter.repeated() if data in ours]
    reported = 0
    for message_id in repeated:
        history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=message_id), metadata=ACCOUNT)
        if any(
            e.event.WhichOneof("payload") == "submit_attempt_failed" and e.event.submit_attempt_failed.in_doubt
            for e in history.entries
        ):
            reported += 1
    return len(repeated), reported


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second offered, in all")
    parser.add_argument("--senders", type=int, default=8, help="paced senders sharing the rate")
    parser.add_argument("--fault-every", type=float, default=180.0, help="seconds between faults")
    parser.add_argument("--keep", type=Path, help="run under this directory and keep it (the services' logs)")
    parser.add_argument(
        "--trace-memory",
        action="append",
        default=[],
        metavar="PROCESS",
        help="record this process's allocations and log its largest at a third of the way and at the end "
        "(e.g. receipt; with --keep to read its log)",
    )
    parser.add_argument("--webhooks-down", action="store_true", help="the account's webhook endpoint never answers")
    args = parser.parse_args()
    toxiproxy_build()
    with tempfile.TemporaryDirectory(prefix="smsgw-soak-") as temporary:
        root = args.keep or Path(temporary)
        run = soak(
            args.minutes,
            args.rate,
            args.senders,
            args.fault_every,
            root,
            traced=tuple(args.trace_memory),
            webhooks_down=args.webhooks_down,
        )
        sys.exit(asyncio.run(run))


if __name__ == "__main__":
    main()
