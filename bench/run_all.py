"""`make bench`: end-to-end throughput of smsgw (per broker) and of Kannel, side by side, in one run.

    .venv/bin/python bench/run_all.py [--quick] [--brokers tansu,kafka] [--skip-kannel]
        [--rates 50,100,200] [--dlr-delay 0.0] [--out FILE]

1. The SMSC simulator alone (bench/smsc_alone.py): it must not be anyone's bottleneck.
   Then, after smsgw's steps, the accept rates of the API (bench/api_accept.py: SendMessage at
   1 and 64 in flight, SendBatch, SendStream) unless --skip-api.
2. For each broker: smsgw (bench/smsgw_load.py), then Kannel (bench/kannel_load.py), each
   through the same steps: warm-up, a max probe (a burst as fast as accepted), then offered
   rates at fractions of the probe's DELIVERED/s (or --rates), each step bounded in time and
   count, then a bounded wait for receipts.
3. A table on stdout, the ratio smsgw ÷ Kannel DELIVERED/s at each one's best step, and
   everything in JSON (--out, default .run/bench/results-<date>.json).
How to read the figures: ../shared/BENCHMARKING.md (beside the checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import api_accept
import kannel_load
import smsc_alone
import smsgw_load

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(msg, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: fewer, shorter steps")
    p.add_argument("--brokers", default="tansu,kafka")
    p.add_argument("--skip-kannel", action="store_true")
    p.add_argument("--skip-api", action="store_true", help="skip the accept rates (bench/api_accept.py)")
    p.add_argument("--rates", default="", help="offered msg/s, comma-separated (default: fractions of a probe)")
    p.add_argument("--fractions", default="0.25,0.5,0.8,1.0,1.2", help="of the probe's DELIVERED/s")
    p.add_argument("--step-seconds", type=float, default=15.0)
    p.add_argument("--max-step-messages", type=int, default=20_000)
    p.add_argument("--drain-seconds", type=float, default=30.0, help="wait for receipts after a step, at most")
    p.add_argument("--smsgw-probe", type=int, default=1500, help="messages in smsgw's max probe")
    p.add_argument("--kannel-probe", type=int, default=10_000, help="messages in Kannel's max probe")
    p.add_argument(
        "--dlr-delay",
        type=float,
        default=0.0,
        help="simulator's receipt delay (0: the early-receipt case of BENCHMARKING.md)",
    )
    p.add_argument("--in-flight", type=int, default=4, help="SendBatch calls in flight")
    p.add_argument("--connections", type=int, default=64, help="HTTP connections to Kannel's smsbox")
    p.add_argument(
        "--replicas",
        default="",
        help="smsgw processes per service, e.g. routing=2,receipt=2,carrier-adapter=2 (default: one each)",
    )
    p.add_argument("--plaintext-api", action="store_true", help="intake without TLS (needed for intake=2 and more)")
    p.add_argument(
        "--shared-store",
        action="store_true",
        help="intake's replicas share one PostgreSQL store, each projecting its partitions "
        "(SMSGW_PROJECTION_SHARED; a throwaway PostgreSQL cluster, metered as 'postgres')",
    )
    p.add_argument(
        "--kafka-jvm",
        choices=("startup", "steady"),
        default="startup",
        help="Apache Kafka's JVM flags: startup (C1 only, as in the tests) or steady (the JIT's C2 "
        "tier on, as in production: cheaper once warm, dearer for its first minute under load; "
        "docs/benchmarks.md, 'The benchmark's broker: C1 or C2')",
    )
    p.add_argument("--out", default="")
    args = p.parse_args()
    if args.quick:
        args.fractions, args.step_seconds, args.drain_seconds = "0.5,1.0", 6.0, 15.0
        args.smsgw_probe, args.kannel_probe = min(args.smsgw_probe, 400), min(args.kannel_probe, 3000)
    return args


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip() + (
            " (dirty)"
            if subprocess.run(
                ["git", "-C", str(ROOT), "status", "--porcelain", "--", "services", "libs"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            else ""
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _replicas(spec: str) -> dict[str, int]:
    """ "routing=2,receipt=2" -> {"routing": 2, "receipt": 2}."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition("=")
        if not count.isdigit() or int(count) < 1:
            raise SystemExit(f"--replicas {spec!r}: expected service=N with N >= 1, e.g. routing=2")
        out[name.strip()] = int(count)
    return out


def best(result: dict) -> dict | None:
    steps = [s for s in [result.get("probe"), *result.get("steps", [])] if s]
    return max(steps, key=lambda s: s["delivered_per_s"], default=None)


def table(results: list[dict]) -> str:
    head = (
        "system",
        "step",
        "offered/s",
        "accepted/s",
        "DELIVERED/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "not deliv.",
        "other final",
        "dup@SMSC",
        "lost(log)",
        "CPU µs/msg",
        "bench µs/msg",
    )
    rows = []
    for r in results:
        for s in [r.get("probe"), *r.get("steps", [])]:
            if not s:
                continue
            lat, cpu = s["send_to_delivered_ms"], s["cpu_us_per_delivered"]
            smsc = s.get("smsc")
            rows.append(
                (
                    r["system"],
                    s["step"],
                    s["offered_per_s"],
                    s["accepted_per_s"],
                    s["delivered_per_s"],
                    lat["p50"],
                    lat["p95"],
                    lat["p99"],
                    s["not_delivered_in_bound"],
                    sum(s["other_final"].values()),
                    smsc["duplicates"] if isinstance(smsc, dict) else "n/a",
                    s.get("receipts_lost_in_log", "-"),
                    cpu.get("total"),
                    cpu.get("bench (load generator)"),
                )
            )
    cells = [head, *[tuple("-" if v is None else str(v) for v in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = [" | ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def cpu_breakdown(results: list[dict]) -> str:
    lines = ["CPU-µs per delivered message and RSS (MiB, end of step) per process, at each system's best step:"]
    for r in results:
        s = best(r)
        if s:
            parts = [
                f"{name} {us} µs / {s['rss_kib_end'].get(name, 0) // 1024} MiB"
                for name, us in s["cpu_us_per_delivered"].items()
                if name != "total"
            ]
            lines.append(f"  {r['system']} ({s['step']}): " + ", ".join(parts))
            records = s.get("records_per_delivered")
            if records:
                topics = ", ".join(f"{t} {n}" for t, n in records.items() if t not in ("total", "commits"))
                lines.append(
                    f"    records per delivered message: {records['total']} written to the topics ({topics});"
                    f" {records['commits']} commit records"
                )
            idle = r.get("idle_cpu_us_per_s", {})
            lines.append(
                f"    idle floor, CPU-µs per second: total {sum(v for k, v in idle.items() if k != 'bench (load generator)')}"
                f" ({', '.join(f'{k} {v}' for k, v in idle.items())})"
            )
    return "\n".join(lines)


def hops(results: list[dict]) -> str:
    """Where a delivered message's time goes, hop by hop, at each step (smsgw only: from the
    times its services recorded in its transitions, and when the benchmark's watch saw it)."""
    lines = ["Send → DELIVERED hop by hop, p50 / p99 ms (the services' own timestamps, one clock):"]
    for r in results:
        for s in [r.get("probe"), *r.get("steps", [])]:
            if s and s.get("hops_ms"):
                cells = ", ".join(f"{name} {v['p50']} / {v['p99']}" for name, v in s["hops_ms"].items())
                lines.append(f"  {r['system']} {s['step']} ({s['delivered_per_s']}/s): {cells}")
    return "\n".join(lines) if len(lines) > 1 else ""


async def main_async(args: argparse.Namespace) -> dict:
    rates = [float(x) for x in args.rates.split(",") if x.strip()] or None
    fractions = [float(x) for x in args.fractions.split(",") if x.strip()]
    started = datetime.now(UTC)
    out: dict = {
        "date": started.isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": f"{host.node()} {host.machine()}, {os.cpu_count()} cores",
        "python": sys.version.split()[0],
        "args": vars(args),
        "results": [],
    }
    out["event_loop"] = os.environ.get("SMSGW_EVENT_LOOP", "uvloop")
    out["kafka_jvm"] = args.kafka_jvm
    log(f"bench: commit {out['commit']}, {out['date']}, {out['machine']}; event loop {out['event_loop']}")

    log("SMSC simulator alone (one bind, window 50, receipts):")
    out["smsc_alone"] = await smsc_alone.measure(seconds=5 if args.quick else 10, dlr_delay=args.dlr_delay)
    a = out["smsc_alone"]
    log(
        f"  {a['submits_per_s']} submit/s, {a['submits_with_receipts_per_s']} with receipts/s; "
        f"{a['simulator_cpu_us_per_submit']} µs CPU per submit -> ~{a['capacity_per_core_s']}/s per core"
    )
    if (a["capacity_per_core_s"] or 0) < 2000:
        log("  WARNING: the simulator answers < 2,000 submit/s per core: it may bound the figures below")

    common = dict(
        rates=rates,
        fractions=fractions,
        step_s=args.step_seconds,
        max_step_messages=args.max_step_messages,
        drain_s=args.drain_seconds,
        dlr_delay=args.dlr_delay,
    )

    def loadavg() -> str:  # another job on the two cores shows here
        return " ".join(open("/proc/loadavg").read().split()[:3])

    out["loadavg"] = {"start": loadavg()}
    for broker in [b.strip() for b in args.brokers.split(",") if b.strip()]:
        log(f"smsgw on {broker}:")
        try:
            out["results"].append(
                await smsgw_load.run(
                    broker,
                    probe_messages=args.smsgw_probe,
                    in_flight=args.in_flight,
                    replicas=_replicas(args.replicas),
                    plaintext=args.plaintext_api,
                    shared_store=args.shared_store,
                    steady_broker=args.kafka_jvm == "steady",
                    log=log,
                    **common,
                )
            )
        except Exception as exc:
            log(f"  FAILED: {exc!r}")
            out["results"].append({"system": f"smsgw/{broker}", "error": repr(exc)})
    if not args.skip_api:
        log("Accept rates of the public API (smsgw on kafka, the pipeline draining meanwhile):")
        try:
            out["api_accept"] = await api_accept.run("kafka", 0.3 if args.quick else 1.0, log=log)
        except Exception as exc:
            log(f"  FAILED: {exc!r}")
            out["api_accept"] = {"error": repr(exc)}
    if not args.skip_kannel:
        log("Kannel:")
        try:
            out["results"].append(
                await kannel_load.run(probe_messages=args.kannel_probe, connections=args.connections, log=log, **common)
            )
        except Exception as exc:
            log(f"  FAILED: {exc!r}")
            out["results"].append({"system": "kannel", "error": repr(exc)})
    out["loadavg"]["end"] = loadavg()
    out["duration_s"] = round((datetime.now(UTC) - started).total_seconds())
    return out


def main() -> None:
    args = parse_args()
    t0 = time.monotonic()
    out = asyncio.run(main_async(args))
    ok = [r for r in out["results"] if "error" not in r]
    print()
    print(f"commit {out['commit']}, {out['date']}, {out['machine']}; receipt delay {args.dlr_delay}s")
    print(table(ok))
    print(cpu_breakdown(ok))
    if by_hop := hops(ok):
        print(by_hop)
    kannel = next((r for r in ok if r["system"] == "kannel"), None)
    out["ratios"] = {}
    kannel_best = best(kannel) if kannel else None
    if kannel_best and kannel_best["delivered_per_s"]:
        k = kannel_best["delivered_per_s"]
        for r in ok:
            ours = best(r)
            if r["system"].startswith("smsgw/") and ours:
                ratio = ours["delivered_per_s"] / k
                out["ratios"][r["system"]] = round(ratio, 3)
                print(f"{r['system']} best {ours['delivered_per_s']} DELIVERED/s ÷ Kannel best {k} = {ratio:.3f}")
    for r in out["results"]:
        if "error" in r:
            print(f"{r['system']}: FAILED {r['error']}")
    path = Path(args.out or ROOT / ".run" / "bench" / f"results-{out['date'][:10]}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False))
    print(f"results: {path} ({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
