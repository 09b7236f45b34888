"""Shared pieces of the broker launchers: the handle, ports, readiness, process plumbing."""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BrokerStartError",
    "RunningBroker",
    "free_port",
    "reserve_ports",
    "wait_for_broker",
]

LOCALHOST = "127.0.0.1"


class BrokerStartError(RuntimeError):
    """A broker process did not come up; the message carries the tail of its log."""


# Below Linux's ephemeral range (32768-60999): a port the kernel hands out for "any free port"
# can be taken by one of the many outgoing connections before the process it was meant for binds
# it (CI saw a service fail to start on exactly that). Outgoing connections never use these.
_PORT_RANGE = (20000, 32767)
_handed_out: set[int] = set()


def reserve_ports(*ports: int | None) -> None:
    """Ports this process was told to use (settings, a caller's choice): `free_port` never hands
    them out, so a service given one cannot race another of ours picked at random for the same
    port (a `make run` given its gRPC ports once had intake's metrics port taken that way)."""
    _handed_out.update(port for port in ports if port)


def free_port(host: str = LOCALHOST) -> int:
    """A free TCP port on *host*, outside the ephemeral range, not handed out before by this process.

    There is a small window between closing the probe socket and the process binding the port;
    the launchers retry with a new port if the broker then fails to bind.
    """
    for _ in range(200):
        port = random.randint(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded range: let the kernel pick
        s.bind((host, 0))
        return s.getsockname()[1]


def ensure_port_free(port: int, host: str = LOCALHOST) -> None:
    """Fail fast if something already listens on *port*.

    Without this, a broker that cannot bind exits while the readiness probe happily talks to
    whatever else owns the port (e.g. a forgotten dev broker).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise BrokerStartError(f"port {host}:{port} is already in use ({exc})") from exc


def tail(path: Path | None, lines: int = 50) -> str:
    if path is None or not path.exists():
        return "(no log)"
    with open(path, errors="replace") as f:
        return "".join(collections.deque(f, maxlen=lines)) or "(empty log)"


# --------------------------------------------------------------------------------------------
# readiness
# --------------------------------------------------------------------------------------------


def _split(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.rpartition(":")
    return host or LOCALHOST, int(port)


def _tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def _metadata_round_trip(bootstrap: str, timeout: float) -> int:
    """One Metadata request through aiokafka's client; returns the number of brokers reported."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=max(1000, int(timeout * 1000)),
        metadata_max_age_ms=300_000,
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return len(client.cluster.brokers())
    finally:
        await client.close()


def _run_coro_blocking(coro_factory: Callable[[], Any]) -> Any:
    """asyncio.run() the coroutine, in a helper thread if this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_factory())
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["result"] = asyncio.run(coro_factory())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=runner, name="smsgw-broker-wait", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _wait_ready(
    bootstrap: str,
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.1,
) -> None:
    host, port = _split(bootstrap)
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if alive is not None and not alive():
            raise BrokerStartError(f"broker process exited before {bootstrap} became ready")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"broker at {bootstrap} not ready after {timeout:.1f}s (last error: {last_error!r})")
        # Cheap TCP probe first so aiokafka does not log connection errors while the port is closed.
        if _tcp_open(host, port, timeout=min(0.5, remaining)):
            try:
                n = _run_coro_blocking(
                    functools.partial(_metadata_round_trip, bootstrap, min(5.0, max(0.5, remaining)))
                )
                if n:
                    return
                last_error = RuntimeError("metadata response listed no brokers")
            except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
                last_error = exc
        time.sleep(interval)


def wait_for_broker(bootstrap: str, timeout: float) -> None:
    """Block until *bootstrap* answers a Metadata request listing at least one broker.

    Raises TimeoutError after *timeout* seconds. Safe to call from inside a running event loop
    (the round trip then runs on a helper thread with its own loop).
    """
    _wait_ready(bootstrap, timeout)


# --------------------------------------------------------------------------------------------
# process plumbing
# --------------------------------------------------------------------------------------------

# Strong references: a broker whose handle was dropped without stop() is still stopped at exit.
_LIVE: set[RunningBroker] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:  # pragma: no cover - only on abnormal exits
    with _LIVE_LOCK:
        leftovers = list(_LIVE)
    for broker in leftovers:
        with contextlib.suppress(Exception):
            broker.stop()


def _pdeathsig() -> None:  # runs in the child between fork and exec
    """Have the kernel SIGTERM the broker if the launching thread dies (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # noqa: BLE001
        pass


def spawn(
    argv: list[str], *, log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    """Start *argv* in its own session, stdout+stderr appended to *log_path*.

    Its own session keeps a terminal Ctrl-C aimed at the dev runner from hitting the broker
    directly: the runner stops it in order. PR_SET_PDEATHSIG (main thread only, since it is tied
    to the launching thread) reaps it if the launcher is SIGKILLed.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab", buffering=0)  # noqa: SIM115 - the broker process writes it until it stops
    try:
        preexec = None
        if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
            preexec = _pdeathsig
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=preexec,  # noqa: PLW1509 - only sets the parent-death signal (prctl), no locks taken
            close_fds=True,
        )
    finally:
        log_file.close()  # the child holds its own descriptor


def running(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def terminate(proc: subprocess.Popen | None, grace: float) -> int | None:
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


# --------------------------------------------------------------------------------------------
# the handle
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class RunningBroker:
    """A broker this process started (or an external one it was pointed at).

    ``stop()`` is idempotent: terminates the process, waits for it, removes temporary dirs.
    Usable as a context manager.
    """

    kind: str  # "tansu" | "kafka" | "external"
    bootstrap: str  # "127.0.0.1:PORT"
    supports_idempotence: bool
    #: Whether the broker keeps the metadata string of an offset commit (Tansu 0.6.0 drops it).
    #: carrier-adapter records there which commands beyond the commit already went out.
    keeps_commit_metadata: bool = True
    log_path: Path | None = None
    pid: int | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _temp_dirs: list[Path] = field(default_factory=list, repr=False)
    _stop_grace: float = field(default=10.0, repr=False)
    _stop_hook: Callable[[], None] | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self._proc is not None:
            self.pid = self._proc.pid
            with _LIVE_LOCK:
                _LIVE.add(self)

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return _split(self.bootstrap)[1]

    def is_running(self) -> bool:
        if self._proc is None:
            return not self._stopped
        return self._proc.poll() is None

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            terminate(self._proc, self._stop_grace)
            if self._stop_hook is not None:
                self._stop_hook()
        finally:
            for d in self._temp_dirs:
                shutil.rmtree(d, ignore_errors=True)
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def __enter__(self) -> RunningBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 50) -> str:
        return tail(self.log_path, lines)

    # -- client settings ---------------------------------------------------------------------
    def producer_settings(self, **overrides: Any) -> dict[str, Any]:
        """aiokafka AIOKafkaProducer kwargs that work on this broker (acks=all, idempotence if supported)."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "acks": "all",
            "enable_idempotence": self.supports_idempotence,
        }
        kw.update(overrides)
        return kw

    def consumer_settings(self, **overrides: Any) -> dict[str, Any]:
        """aiokafka AIOKafkaConsumer kwargs that work on this broker (group timings, see docs/brokers.md)."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "auto_offset_reset": "earliest",
            "enable_auto_commit": False,
        }
        if self.kind == "tansu":
            # Tansu parks a JoinGroup for half the session timeout, and an empty Fetch for half
            # of fetch_max_wait_ms without waking on new data: keep both short.
            kw.update(session_timeout_ms=2000, heartbeat_interval_ms=500, fetch_max_wait_ms=50)
        kw.update(overrides)
        return kw

    def kafka_settings(self, **overrides: Any) -> dict[str, Any]:
        """Alias of producer_settings() kept for symmetry with faust_settings()."""
        return self.producer_settings(**overrides)

    def faust_settings(self, **overrides: Any) -> dict[str, Any]:
        """faust.App(...) kwargs that work on this broker; see docs/brokers.md for the measurements."""
        from .faust_support import faust_settings  # imports faust

        kw = faust_settings(self.kind, self.bootstrap)
        kw.update(overrides)
        return kw


def data_root() -> Path | None:
    """Where launchers put temporary dirs: $SMSGW_BROKER_TMP or the system default."""
    p = os.environ.get("SMSGW_BROKER_TMP")
    return Path(p) if p else None
