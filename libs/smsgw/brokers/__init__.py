"""Kafka-protocol brokers for dev runs and tests: Tansu (fast, memory-only) and Apache Kafka (reference).

    from smsgw.brokers import start_tansu, start_apache_kafka
    broker = start_tansu()                 # or start_apache_kafka(), start_broker("kafka")
    try:
        ... broker.bootstrap ...           # "127.0.0.1:PORT"
        AIOKafkaProducer(**broker.producer_settings())
        faust.App("svc", **broker.faust_settings())   # see smsgw.brokers.faust_support
    finally:
        broker.stop()

CLI: ``python -m smsgw.brokers tansu|kafka [--port N]``. Measurements and pitfalls: docs/brokers.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._base import BrokerStartError, RunningBroker, free_port, wait_for_broker
from .apache_kafka import KAFKA_VERSION, STEADY_JVM_OPTS, ScramListener, default_jars_dir, start_apache_kafka
from .containers import DockerUnavailable, docker_available, start_testcontainers_kafka
from .tansu import start_tansu, tansu_binary

__all__ = [
    "KAFKA_VERSION",
    "STEADY_JVM_OPTS",
    "BrokerStartError",
    "DockerUnavailable",
    "RunningBroker",
    "ScramListener",
    "connect_external",
    "default_jars_dir",
    "docker_available",
    "free_port",
    "start_apache_kafka",
    "start_broker",
    "start_tansu",
    "start_testcontainers_kafka",
    "tansu_binary",
    "wait_for_broker",
]


def connect_external(bootstrap: str, *, supports_idempotence: bool = True, timeout: float = 10.0) -> RunningBroker:
    """Wrap a broker someone else runs (stop() is a no-op); waits until it answers Metadata."""
    wait_for_broker(bootstrap, timeout)
    return RunningBroker(kind="external", bootstrap=bootstrap, supports_idempotence=supports_idempotence)


def start_broker(
    kind: str | None = None, *, port: int | None = None, log_path: Path | None = None, steady: bool = False
) -> RunningBroker:
    """Start a broker by name: "tansu", "kafka", "testcontainers", or "external".

    *kind* defaults to $SMSGW_BROKER (else "tansu"). "external" reads $SMSGW_KAFKA_BOOTSTRAP and
    $SMSGW_KAFKA_IDEMPOTENCE (default "1"). *steady*: an Apache Kafka tuned for running long under
    load rather than for starting fast (STEADY_JVM_OPTS: the benchmarks).
    """
    kind = (kind or os.environ.get("SMSGW_BROKER") or "tansu").lower()
    if kind == "tansu":
        return start_tansu(port=port, log_path=log_path)
    if kind in ("kafka", "apache-kafka", "apache_kafka"):
        return start_apache_kafka(port=port, log_path=log_path, jvm_opts=STEADY_JVM_OPTS if steady else None)
    if kind == "testcontainers":
        return start_testcontainers_kafka()
    if kind == "external":
        bootstrap = os.environ.get("SMSGW_KAFKA_BOOTSTRAP")
        if not bootstrap:
            raise BrokerStartError("SMSGW_BROKER=external needs SMSGW_KAFKA_BOOTSTRAP=host:port")
        idem = os.environ.get("SMSGW_KAFKA_IDEMPOTENCE", "1").lower() not in ("0", "false", "no")
        return connect_external(bootstrap, supports_idempotence=idem)
    raise ValueError(f"unknown broker kind {kind!r} (tansu, kafka, testcontainers, external)")
