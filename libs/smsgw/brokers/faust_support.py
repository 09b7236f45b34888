"""faust-streaming glue: per-broker App settings, an embeddable Worker, a tuned Kafka transport.

Importing this module imports faust; ``smsgw.brokers`` itself does not.

    from smsgw.brokers import start_tansu
    from smsgw.brokers.faust_support import faust_settings, embedded_worker

    broker = start_tansu()
    app = faust.App("routing", **faust_settings(broker.kind, broker.bootstrap))
    ...                                   # agents/tables defined in a factory function
    async with embedded_worker(app):      # inside the loop that also runs grpc.aio
        await grpc_server.wait_for_termination()

Why each setting: docs/brokers.md (measured with bench/faust_hop.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as _fk

#: The release the two reaches into faust below (its consumer's fetch wait, its transport
#: registry's finaliser) were read against; pinned exactly in pyproject.toml, checked here so an
#: upgrade fails at import instead of quietly changing what they touch.
CHECKED_VERSION = "0.15.3"
if faust.__version__ != CHECKED_VERSION:
    raise ImportError(
        f"smsgw.brokers.faust_support was checked against faust-streaming {CHECKED_VERSION}, not "
        f"{faust.__version__}: read _ConsumerThread and register_transport against it, then change the pin and this"
    )

__all__ = [
    "TRANSPORT_SCHEME",
    "EmbeddedWorker",
    "Transport",
    "embedded_worker",
    "faust_settings",
    "register_transport",
    "true_end_offsets",
]

#: URL scheme of the tuned transport, e.g. ``smsgw-kafka://host:port?fetch_max_wait_ms=50``.
TRANSPORT_SCHEME = "smsgw-kafka"


# ----------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------


def faust_settings(
    kind: str, bootstrap: str, *, tuned_transport: bool = True, with_tables: bool = True
) -> dict[str, Any]:
    """faust.App(...) keyword arguments that work on a broker of *kind*.

    kind: "tansu" (dev broker) or "kafka"/"external" (Apache Kafka semantics).
    tuned_transport: use the smsgw-kafka:// transport: on Tansu a 50 ms fetch wait and exact
        recovery highwaters, on Kafka an idempotent producer. False: stock kafka:// transport.
    with_tables: only with tuned_transport=False on Tansu: send one record per produce batch so
        Table recovery is complete (Tansu reports a partition's end offset as base offset of its
        last batch + 1). Costs ~2-3x broker CPU per event; the tuned transport fixes it instead.
    """
    tansu = kind == "tansu"
    params: list[str] = []
    if tuned_transport:
        register_transport()
        if tansu:
            params.append("fetch_max_wait_ms=50")  # Tansu parks an empty Fetch for half its max wait
            params.append("true_end_offsets=1")  # Tansu under-reports end offsets
        else:
            params.append("idempotence=1")
    scheme = TRANSPORT_SCHEME if tuned_transport else "kafka"
    broker_url = f"{scheme}://{bootstrap}" + (f"?{'&'.join(params)}" if params else "")

    settings: dict[str, Any] = {
        "broker": broker_url,
        "store": "memory://",
        "web_enabled": False,
        "topic_partitions": 12,
        "topic_replication_factor": 1,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "processing_guarantee": "at_least_once",
        "table_standby_replicas": 0,
    }
    if tansu:
        # Tansu holds a JoinGroup for session_timeout/2: every (re)join costs 1 s here.
        settings.update(broker_session_timeout=2.0, broker_heartbeat_interval=0.5, broker_rebalance_timeout=10.0)
        if with_tables and not tuned_transport:
            settings["producer_max_batch_size"] = 1
    else:
        # Kafka rejects session timeouts below group.min.session.timeout.ms (6 s by default).
        settings.update(broker_session_timeout=10.0, broker_heartbeat_interval=1.0, broker_rebalance_timeout=20.0)
    return settings


# ----------------------------------------------------------------------------------------------
# tuned transport
# ----------------------------------------------------------------------------------------------


def _params(urls) -> dict[str, str]:
    try:
        return dict(urls[0].query)
    except (IndexError, AttributeError, TypeError):
        return {}


def _truthy(v: str | None) -> bool:
    return (v or "").lower() in ("1", "true", "yes", "on")


async def true_end_offsets(bootstrap: list[str], reported: dict, *, timeout: float = 5.0) -> dict:
    """Correct end offsets from a broker that reports (base offset of the last batch + 1).

    Tansu (v0.6.0-510f3e2) answers ListOffsets(latest) that way, so a partition whose last
    batch holds n records looks n-1 records shorter than it is. Reads the last batch of each
    partition (from reported-1) and returns max(offset)+1 per partition. Cheap: one small
    fetch per partition; used only when faust builds recovery highwaters.
    """
    from aiokafka import AIOKafkaConsumer

    need = {tp: end for tp, end in reported.items() if end}
    if not need:
        return dict(reported)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10, auto_offset_reset="none"
    )
    await consumer.start()
    result = dict(reported)
    try:
        consumer.assign(list(need))
        for tp, end in need.items():
            consumer.seek(tp, end - 1)
        pending = set(need)
        deadline = asyncio.get_running_loop().time() + timeout
        while pending and asyncio.get_running_loop().time() < deadline:
            for tp, msgs in (await consumer.getmany(*pending, timeout_ms=100)).items():
                if msgs:
                    result[tp] = max(result[tp], msgs[-1].offset + 1)
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return result


class _ConsumerThread(_fk.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        fmw = _params(transport.url).get("fetch_max_wait_ms")
        if fmw:
            # faust hard-codes fetch_max_wait_ms=1500; aiokafka reads it at start().
            consumer._fetch_max_wait_ms = int(fmw)  # noqa: SLF001 - faust hard-codes it
        return consumer

    async def _highwaters(self, partitions):
        ends = await super()._highwaters(partitions)
        transport = self.consumer.transport
        if self.consumer.in_transaction or not _truthy(_params(transport.url).get("true_end_offsets")):
            return ends
        # Table recovery reads changelogs up to these: they must be exact (see true_end_offsets).
        return await true_end_offsets(
            _fk.server_list(transport.url, transport.default_port),  # type: ignore[attr-defined]
            dict(ends),
        )


class _Consumer(_fk.Consumer):
    def _new_consumer_thread(self):
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Producer(_fk.Producer):
    def _settings_extra(self):
        extra = dict(super()._settings_extra())
        if _truthy(_params(self.transport.url).get("idempotence")):
            extra.update(acks="all", enable_idempotence=True)
        return extra


class Transport(_fk.Transport):
    """aiokafka transport + URL options.

    ``fetch_max_wait_ms=N``  replaces faust's hard-coded 1500 ms fetch wait.
    ``idempotence=1``        idempotent producer (acks=all) without exactly-once transactions.
    ``true_end_offsets=1``   correct Tansu's short end offsets when faust builds recovery highwaters.
    """

    Consumer = _Consumer
    Producer = _Producer


def register_transport() -> None:
    """Make ``smsgw-kafka://`` resolvable by faust (idempotent; also done on import).

    A process that gets the broker URL from config without importing this module needs the
    alias too: call this, or declare the entry point once in pyproject.toml:
    ``[project.entry-points."faust.transports"] smsgw-kafka = "smsgw.brokers.faust_support:Transport"``
    """
    TRANSPORTS._maybe_finalize()  # noqa: SLF001 - bench/test transport only: aiokafka's batch finaliser
    TRANSPORTS.aliases.setdefault(TRANSPORT_SCHEME, f"{__name__}:Transport")


register_transport()


# ----------------------------------------------------------------------------------------------
# embedding
# ----------------------------------------------------------------------------------------------


class EmbeddedWorker(faust.Worker):
    """faust.Worker for a process that owns its loop, signals and logging (e.g. with grpc.aio).

        worker = EmbeddedWorker(app)     # inside the running loop
        await worker.start()             # returns once partitions are assigned and tables recovered
        ...
        await worker.stop()

    Differences from faust.Worker: daemon=False (mode.Worker.start() otherwise blocks until stop),
    no signal handlers (the host decides when to stop), no logging/stdout takeover, no spinner,
    no process-title change.
    """

    def __init__(
        self, app: faust.App, *services: Any, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("override_logging", False)
        kwargs.setdefault("redirect_stdouts", False)
        kwargs.setdefault("quiet", True)
        kwargs.setdefault("daemon", False)
        if loop is None:
            loop = asyncio.get_running_loop()
        super().__init__(app, *services, loop=loop, **kwargs)
        self.spinner = None

    def install_signal_handlers(self) -> None:
        pass

    def _setproctitle(self, info: str, *, ident: str = "") -> None:
        pass


@contextlib.asynccontextmanager
async def embedded_worker(
    app: faust.App, *, start_timeout: float = 60.0, stop_timeout: float = 30.0, **kwargs: Any
) -> AsyncIterator[EmbeddedWorker]:
    """Run *app* in the current loop for the duration of the block."""
    worker = EmbeddedWorker(app, **kwargs)
    try:
        await asyncio.wait_for(worker.start(), start_timeout)
        yield worker
    finally:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(worker.stop(), stop_timeout)
