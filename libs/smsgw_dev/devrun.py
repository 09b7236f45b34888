"""`make run`: a broker, the SMSC simulator and all four services, until Ctrl-C.

The broker is Apache Kafka (one KRaft node from the Maven jars) when Java and
the jars are there, else the embedded Tansu. `make bench` measured Tansu 0.6 carrying about a
third of Kafka's rate at several times its CPU, and falling to 0 DELIVERED/s once its backlog
grew (docs/benchmarks.md). SMSGW_RUN_BROKER=tansu|kafka chooses.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from smsgw import config_file
from smsgw.brokers import start_apache_kafka, start_tansu
from smsgw.brokers._base import reserve_ports
from smsgw.brokers.apache_kafka import default_jars_dir, find_java
from smsgw.config_cli import apply_accounts
from smsgw.domain.account_specs import load_account_section
from smsgw.v1 import accounts_pb2_grpc as ac_grpc
from smsgw_dev.platform import Platform

DEFAULT_PORTS = {"intake": 16051, "routing": 16052, "carrier-adapter": 16053, "receipt": 16054}


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


def _broker_kind() -> tuple[str, str]:
    """("kafka" | "tansu", why Kafka is not used when it was not asked for)."""
    asked = os.environ.get("SMSGW_RUN_BROKER", "")
    if asked not in ("", "kafka", "tansu"):
        raise SystemExit(f"SMSGW_RUN_BROKER={asked!r}: use kafka or tansu")
    if asked == "tansu":
        return "tansu", ""
    try:
        find_java()
    except Exception as exc:  # noqa: BLE001 - the reason is shown
        missing = str(exc)
    else:
        jars = default_jars_dir()
        missing = "" if any(jars.glob("kafka_2.13-*.jar")) else f"no Kafka jars in {jars} (make kafka-jars)"
    if missing and asked == "kafka":
        raise SystemExit(f"SMSGW_RUN_BROKER=kafka, but {missing}")
    return ("tansu", missing) if missing else ("kafka", "")


async def main() -> int:
    started = time.monotonic()
    run_dir = Path(os.environ.get("SMSGW_RUN_DIR", ".run")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    grpc_ports = {name: _port(name, port) for name, port in DEFAULT_PORTS.items()}
    ports = {
        "broker": _port("broker", 9092),
        "smsc": _port("smsc", 2775),
        "smsc-control": _port("smsc-control", 2776),
        "twilio": _port("twilio", 8089),
        "http-callback": _port("http-callback", 16063),
        "metrics": _port("metrics", 9464),
        **grpc_ports,
    }
    reserve_ports(*ports.values())  # never handed out to the processes whose ports are picked at random
    try:
        _check_ports_free(ports)
    except RuntimeError as exc:
        print(f"smsgw cannot start: {exc}", file=sys.stderr)
        return 1
    operator_config = Path(os.environ.get("SMSGW_RUN_CONFIG", "smsgw.yaml"))
    if operator_config.exists():
        # Checked before anything starts: a mistake is shown with its line, not as a service dying.
        _, problems = config_file.check(operator_config)
        if problems:
            for problem in problems:
                print(problem.render(str(operator_config)), file=sys.stderr)
            print(f"smsgw cannot start: {operator_config} has {len(problems)} problem(s)", file=sys.stderr)
            return 1
    broker_port = ports["broker"]
    kind, why_not_kafka = _broker_kind()
    if kind != "kafka" or not (run_dir / "kafka" / "kraft-logs" / "meta.properties").exists():
        # A broker that starts empty: the services' local state (message store, faust data, webhook
        # store: all rebuilt from the log) starts empty too; a store left from an earlier run would
        # hold messages and checkpoints the new log does not have.
        shutil.rmtree(run_dir / "state", ignore_errors=True)
    if kind == "kafka":
        kept = (run_dir / "kafka" / "kraft-logs" / "meta.properties").exists()
        print(
            f"starting Apache Kafka (one KRaft node) on 127.0.0.1:{broker_port}"
            f"{', with the data of the last run' if kept else ''} ...",
            flush=True,
        )
        broker = start_apache_kafka(
            port=broker_port, data_dir=run_dir / "kafka", keep_data=True, log_path=run_dir / "kafka.log"
        )
        broker_note = "Apache Kafka, data kept in .run/kafka across runs; `make clean-data` wipes it"
    else:
        if why_not_kafka:
            print(
                f"Apache Kafka is not available ({why_not_kafka}); using Tansu, which carries far less "
                "(docs/benchmarks.md)",
                flush=True,
            )
        print(f"starting Tansu (embedded broker) on 127.0.0.1:{broker_port} ...", flush=True)
        broker = start_tansu(port=broker_port, log_path=run_dir / "tansu.log")
        broker_note = "Tansu, memory only: messages are lost when it stops"
    platform = Platform.for_broker(
        broker,
        run_dir,
        smsc_port=ports["smsc"],
        smsc_control_port=ports["smsc-control"],
        grpc_ports=grpc_ports,
        twilio_port=ports["twilio"],
        http_callback_port=ports["http-callback"],
        metrics_port=ports["metrics"],
        config_file=operator_config.resolve() if operator_config.exists() else None,
        # The simulated phone holds a token of the simulators' "phones" carrier only.
        android_phone=not operator_config.exists(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print("starting SMSC simulator and services: intake, routing, carrier-adapter, receipt ...", flush=True)
        await platform.start()
        # A development account and its key, so a newcomer's first `smsgw send` just works.
        dev_key_file = run_dir / "dev-api-key"
        if not await platform.still_valid(dev_key_file):  # kept from the last run with its data
            dev_key_file.write_text(await platform.api_key("default", name="make run development key") + "\n")
            dev_key_file.chmod(0o600)
        applied = await _apply_accounts(platform)
        assert platform.pki is not None  # make run serves TLS
        # The banner is written at once: whoever waits for "smsgw is ready" (a user, a script,
        # the tests) reads it whole, never half of it.
        banner = [f"\nsmsgw is ready in {time.monotonic() - started:.1f}s"]
        banner.append(
            f"  gRPC API (MessagingService, AdminService): {platform.intake_address}, TLS"
            f" (CA {platform.pki.ca}, which the CLI trusts)"
        )
        banner.append(f"  broker: {broker.bootstrap} ({broker_note})   SMSC simulator: 127.0.0.1:{platform.smsc_port}")
        banner.append(
            f"  Twilio simulator: http://127.0.0.1:{platform.twilio_port} (carrier twilio-sim: +1415555077x)"
            f"   HTTP provider callbacks: 127.0.0.1:{platform.http_callback_port}"
        )
        banner.append(f"  carrier metrics (Prometheus): http://127.0.0.1:{platform.metrics_port}/metrics")
        banner.append(
            f"  API key of account 'default': {dev_key_file} (the CLI reads it); admin key: {platform.admin_key_file}"
        )
        if platform.config_file is not None:
            banner.append(
                f"  configuration: {operator_config} (yours; its sections: {', '.join(_sections(operator_config))})"
            )
            for line in applied:
                banner.append(f"    {line}")
        else:
            banner.append(
                f"  configuration: {run_dir}/smsgw.yaml (the simulators); your own carriers and routes: "
                "copy deploy/smsgw.example.yaml to ./smsgw.yaml"
            )
        banner.append(f"  logs: {run_dir}/*.log")
        banner.append('  try:  .venv/bin/smsgw send --to +14155550100 --body "hello"')
        banner.append("Ctrl-C stops everything.")
        print("\n".join(banner), flush=True)
        await stop.wait()
        print("\nstopping ...", flush=True)
        return 0
    except Exception as exc:  # noqa: BLE001 - show why, then clean up
        print(f"smsgw failed to start: {exc}", file=sys.stderr)
        return 1
    finally:
        platform.stop()
        broker.stop()
        print("stopped.", flush=True)


def _sections(path: Path) -> list[str]:
    return list(config_file.read(path).data)


async def _apply_accounts(platform: Platform) -> list[str]:
    """The operator's `accounts` made the platform's, as `smsgw config apply` would (admin API)."""
    if platform.config_file is None or "accounts" not in (document := config_file.read(platform.config_file)):
        return []
    specs = document.load("accounts", load_account_section)
    async with platform.intake_channel() as channel:
        metadata = (("authorization", f"Bearer {platform.admin_key}"),)
        return await apply_accounts(ac_grpc.AdminServiceStub(channel), specs, metadata)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
