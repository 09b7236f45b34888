"""`make run` keeps its data: a message sent before stopping it is there, with its history, after
starting it again (Apache Kafka's log under .run/kafka, the services' stores under .run/state).
Runs `python -m smsgw_dev.devrun` (what `make run` runs) and the `smsgw` CLI as a user would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smsgw.brokers._base import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

NAMES = (
    "broker",
    "smsc",
    "smsc-control",
    "twilio",
    "http-callback",
    "metrics",
    "intake",
    "routing",
    "carrier-adapter",
    "receipt",
)


def _env(ports: dict[str, int]) -> dict[str, str]:
    env = dict(os.environ, SMSGW_RUN_BROKER="kafka", PYTHONUNBUFFERED="1")
    env.update({f"SMSGW_{name.upper().replace('-', '_')}_PORT": str(port) for name, port in ports.items()})
    return env


def _start(cwd: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    log = (cwd / "devrun.log").open("a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsgw_dev.devrun"],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = (cwd / "devrun.log").read_text()
        # The banner's last line: the whole banner is in the log (it is written at once).
        if text.count("Ctrl-C stops everything.") > text.count("stopped."):
            return proc, text
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"make run did not get ready:\n{(cwd / 'devrun.log').read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a user stops it
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def _cli(cwd: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "smsgw.cli", "--server", f"127.0.0.1:{env['SMSGW_INTAKE_PORT']}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_message_sent_before_a_restart_is_there_after_it(tmp_path):
    ports = {name: free_port() for name in NAMES}
    env = _env(ports)
    proc, first = _start(tmp_path, env)
    try:
        assert "with the data of the last run" not in first
        sent = _cli(tmp_path, env, "send", "--to", "+14155550100", "--body", "kept across restarts")
        message_id = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", sent).group(0)
        assert "DELIVERED" in _cli(tmp_path, env, "get", message_id)
    finally:
        _stop(proc)

    proc, log = _start(tmp_path, env)
    try:
        assert "with the data of the last run" in log
        got = _cli(tmp_path, env, "get", message_id)
        assert "DELIVERED" in got and "kept across restarts" in got
        history = _cli(tmp_path, env, "history", message_id)
        assert "MessageQueued" in history and "DeliveryReported" in history
        # The development key of the first run still works (the same .run/dev-api-key), and a new
        # message goes through after the restart as well.
        again = _cli(tmp_path, env, "send", "--to", "+14155550100", "--body", "after the restart")
        assert "DELIVERED" in again
    finally:
        _stop(proc)


def test_make_run_checks_and_uses_the_operators_smsgw_yaml(tmp_path):
    import yaml

    ports = {name: free_port() for name in NAMES}
    env = _env(ports)
    example = Path(__file__).resolve().parents[2] / "deploy" / "smsgw.example.yaml"
    (tmp_path / "smsgw.yaml").write_text(example.read_text().replace('prefix: "+44"', 'prefix: "44"'))
    refused = subprocess.run(
        [sys.executable, "-m", "smsgw_dev.devrun"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1
    assert re.search(r"smsgw\.yaml:\d+:\d+: routes\[1\]\.prefix: '44' must be '\+' followed by", refused.stderr)
    assert "smsgw cannot start: smsgw.yaml has 1 problem(s)" in refused.stderr

    # The example as shipped, its SMPP carriers pointed at this run's simulator port.
    document = yaml.safe_load(example.read_text())
    for carrier in document["carriers"]:
        carrier["port"] = ports["smsc"]
    (tmp_path / "smsgw.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    proc, log = _start(tmp_path, env)
    try:
        assert "configuration: smsgw.yaml (yours" in log
        # Its accounts were made the platform's through the admin API (smsgw config apply).
        assert "account acme: created (ACME Ltd)" in log and "account acme: set smart encoding on" in log, log
        listed = subprocess.run(
            [sys.executable, "-m", "smsgw.cli", "admin", "list-accounts"],
            cwd=tmp_path,
            env=dict(env, SMSGW_SERVER=f"127.0.0.1:{env['SMSGW_INTAKE_PORT']}"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0 and "acme" in listed.stdout, listed.stderr
        sent = _cli(tmp_path, env, "send", "--to", "+14155550100", "--body", "through my own carrier")
        assert "DELIVERED" in sent and "carrier=smsc-main" in sent, sent
        # The routes are the file's: its `us` route's name is on the message's history (the
        # sender, a long code, is not one the route rewrites).
        message_id = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", sent).group(0)
        history = _cli(tmp_path, env, "history", message_id)
        assert "'route': 'us'" in history and "'sender'" not in history, history
    finally:
        _stop(proc)
