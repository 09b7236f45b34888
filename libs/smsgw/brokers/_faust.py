"""faust-streaming settings per broker kind, and a Worker that can be embedded in a running loop.

Numbers behind these choices: docs/brokers.md (measured with bench/faust_hop.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["EmbeddedWorker", "faust_settings"]


def faust_settings(kind: str, bootstrap: str, supports_idempotence: bool = True) -> dict[str, Any]:
    """faust.App(...) keyword arguments for a broker of *kind* ("tansu" | "kafka" | "external")."""
    common: dict[str, Any] = {
        "broker": f"kafka://{bootstrap}",
        "store": "memory://",
        "web_enabled": False,
        "topic_partitions": 12,
        "topic_replication_factor": 1,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "processing_guarantee": "at_least_once",
        "table_standby_replicas": 0,
    }
    if kind == "tansu":
        common.update(
            broker_session_timeout=2.0,
            broker_heartbeat_interval=0.5,
            broker_rebalance_timeout=10.0,
        )
    else:
        common.update(
            broker_session_timeout=6.0,
            broker_heartbeat_interval=1.0,
            broker_rebalance_timeout=20.0,
        )
    return common


def _worker_base():
    import faust

    return faust.Worker


class _Lazy(type):
    """Build EmbeddedWorker on first use so importing smsgw.brokers does not import faust."""

    _cls = None

    def _build(cls):
        if cls._cls is None:
            Base = _worker_base()

            class EmbeddedWorker(Base):  # type: ignore[misc, valid-type]
                """faust.Worker for a process that owns its loop, signals and logging (e.g. grpc.aio).

                    worker = EmbeddedWorker(app)          # inside the running loop
                    await worker.start()                  # returns once assigned + tables recovered
                    ...
                    await worker.stop()

                Differences from faust.Worker: no signal handlers (the host process decides when to
                stop), no logging/stdout takeover, no spinner, no process-title change.
                """

                def __init__(self, app, *services, loop=None, **kwargs):
                    kwargs.setdefault("override_logging", False)
                    kwargs.setdefault("redirect_stdouts", False)
                    kwargs.setdefault("quiet", True)
                    # mode.Worker.on_started() blocks until stop() when daemon=True (default):
                    # with daemon=False, `await worker.start()` returns once the app is running.
                    kwargs.setdefault("daemon", False)
                    if loop is None:
                        loop = asyncio.get_running_loop()
                    super().__init__(app, *services, loop=loop, **kwargs)
                    self.spinner = None

                def install_signal_handlers(self) -> None:
                    pass

                def _setproctitle(self, info, *, ident=""):
                    pass

            cls._cls = EmbeddedWorker
        return cls._cls

    def __call__(cls, *args, **kwargs):
        return cls._build()(*args, **kwargs)

    def __instancecheck__(cls, obj):
        return isinstance(obj, cls._build())


class EmbeddedWorker(metaclass=_Lazy):
    """See _Lazy._build: a faust.Worker subclass for embedding in an existing asyncio loop."""
