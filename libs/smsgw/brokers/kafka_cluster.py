"""A three-node Apache Kafka cluster on loopback (KRaft, every node broker and controller), or each
node in a network namespace of its own (node_network.py), for fault injection: nodes are killed,
stopped and started again with their data, and their links cut, while the platform runs against
the cluster (tests/chaos).

Configured as production is (k8s/base/kafka.yaml): replication factor 3 and
`min.insync.replicas` 2 for every topic, the internal ones included, so one node may be lost
without losing a write or refusing one, and two lost stop writes (acks=all) until one is back.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ._base import LOCALHOST, BrokerStartError, _wait_ready, data_root, free_port, running, spawn, tail, terminate
from .apache_kafka import (
    _LOG4J,
    JVM_OPTS,
    _check_jars,
    _random_cluster_id,
    _server_properties,
    default_jars_dir,
    find_java,
)
from .node_network import NodeNetwork

__all__ = ["KafkaCluster", "start_kafka_cluster"]

# Per node: three JVMs share this machine with the platform.
NODE_JVM_OPTS = tuple(o for o in JVM_OPTS if not o.startswith("-Xmx")) + ("-Xmx384m",)


@dataclass
class _Node:
    node_id: int
    port: int
    controller_port: int
    root: Path
    proc: subprocess.Popen | None = None
    host: str = LOCALHOST
    #: What runs the node's JVM in its network namespace (NodeNetwork.command), if it has one.
    command: tuple[str, ...] = ()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


def _alive(node: _Node) -> bool:
    return node.proc is not None and running(node.proc)


@dataclass(eq=False)
class KafkaCluster:
    nodes: dict[int, _Node]
    _java: str
    _jars: Path
    _env: dict[str, str]
    _temp_root: Path | None = None
    stopped: set[int] = field(default_factory=set)

    @property
    def bootstrap(self) -> str:
        """Every node's address: clients find the cluster through whichever answers."""
        return ",".join(node.bootstrap for node in self.nodes.values())

    def _start_node(self, node: _Node) -> None:
        """Each node in its own directory: its log4j.properties, its kafka.logs.dir, its data."""
        node.proc = spawn(
            [
                *node.command,
                self._java,
                *NODE_JVM_OPTS,
                f"-Dlog4j.configuration=file:{node.root / 'log4j.properties'}",
                f"-Dkafka.logs.dir={node.root}",
                "-cp",
                f"{self._jars}/*",
                "kafka.Kafka",
                str(node.root / "server.properties"),
            ],
            log_path=node.root / "kafka.log",
            env=self._env,
            cwd=node.root,
        )

    def kill(self, node_id: int) -> None:
        """SIGKILL: the node dies as a crashed machine would (its data stays on disk)."""
        node = self.nodes[node_id]
        if node.proc is not None and running(node.proc):
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(timeout=30)
        self.stopped.add(node_id)

    def alive(self, node_id: int) -> bool:
        """Whether the node's process runs (a node that stopped itself, e.g. on a failed disk, is not)."""
        return _alive(self.nodes[node_id])

    def stop(self, node_id: int, grace: float = 30.0) -> None:
        """SIGTERM: a controlled shutdown (leadership moved first)."""
        terminate(self.nodes[node_id].proc, grace)
        self.stopped.add(node_id)

    def start(self, node_id: int, timeout: float = 90.0) -> None:
        """Starts a stopped node again with its data; returns once it answers Metadata."""
        node = self.nodes[node_id]
        self._start_node(node)
        self.stopped.discard(node_id)
        _wait_ready(node.bootstrap, timeout, alive=functools.partial(_alive, node))

    def start_all(self, timeout: float = 120.0) -> None:
        """Starts every stopped node at once (one alone has no controller quorum) and waits for them."""
        starting = [self.nodes[n] for n in sorted(self.stopped)]
        for node in starting:
            self._start_node(node)
        self.stopped.clear()
        deadline = time.monotonic() + timeout
        for node in starting:
            _wait_ready(node.bootstrap, max(1.0, deadline - time.monotonic()), alive=functools.partial(_alive, node))

    def stop_all(self) -> None:
        for node_id in self.nodes:
            if node_id not in self.stopped:
                terminate(self.nodes[node_id].proc, 30.0)
        if self._temp_root is not None:
            shutil.rmtree(self._temp_root, ignore_errors=True)

    def log_tail(self, node_id: int, lines: int = 40) -> str:
        return tail(self.nodes[node_id].root / "kafka.log", lines)


def start_kafka_cluster(
    size: int = 3, *, root: Path | None = None, timeout: float = 120.0, network: NodeNetwork | None = None
) -> KafkaCluster:
    """Formats and starts `size` nodes on 127.0.0.1 (a quorum of all of them); returns when every
    node answers Metadata. Data under `root` (kept), else a temporary directory (removed by stop_all).
    `network` (created, with nodes 1..size): each node in its namespace, on its own address, so
    the links between nodes and to the services can be cut one by one (the caller destroys it
    after stop_all)."""
    jars = default_jars_dir()
    _check_jars(jars)
    java = find_java()
    temp_root = None
    if root is None:
        temp_root = root = Path(tempfile.mkdtemp(prefix="smsgw-kafka-cluster-", dir=data_root()))
    if network is None:
        nodes = {n: _Node(n, free_port(), free_port(), Path(root) / f"node-{n}") for n in range(1, size + 1)}
    else:  # a namespace of its own: the same ports on every node's own address
        nodes = {
            n: _Node(
                n, 9092, 9093, Path(root) / f"node-{n}", host=network.address(n), command=tuple(network.command(n))
            )
            for n in range(1, size + 1)
        }
    voters = ",".join(f"{n}@{node.host}:{node.controller_port}" for n, node in nodes.items())
    cluster_id = _random_cluster_id()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_OPTS", "KAFKA_HEAP_OPTS", "JAVA_TOOL_OPTIONS", "CLASSPATH")
    }
    replicated = {
        "offsets.topic.replication.factor": size,
        "transaction.state.log.replication.factor": size,
        "transaction.state.log.min.isr": min(2, size),
        "share.coordinator.state.topic.replication.factor": size,
        "share.coordinator.state.topic.min.isr": min(2, size),
        "default.replication.factor": size,
        "min.insync.replicas": min(2, size),
        # A node that comes back catches up, then takes its partitions' leadership back.
        "auto.leader.rebalance.enable": "true",
        "leader.imbalance.check.interval.seconds": 10,
        "replica.lag.time.max.ms": 10000,
        "num.io.threads": 2,
    }
    for n, node in nodes.items():
        node.root.mkdir(parents=True, exist_ok=True)
        (node.root / "log4j.properties").write_text(_LOG4J)
        props = _server_properties(
            port=node.port,
            controller_port=node.controller_port,
            log_dir=node.root / "kraft-logs",
            extra={
                "node.id": n,
                "controller.quorum.voters": voters,
                "listeners": f"PLAINTEXT://{node.host}:{node.port},CONTROLLER://{node.host}:{node.controller_port}",
                "advertised.listeners": f"PLAINTEXT://{node.host}:{node.port}",
                **replicated,
            },
        )
        (node.root / "server.properties").write_text(props)
    base = [java, *NODE_JVM_OPTS, "-cp", f"{jars}/*"]
    for node in nodes.values():
        formatted = subprocess.run(
            [*base, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(node.root / "server.properties")],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            timeout=120,
            check=False,
        )
        if formatted.returncode != 0:
            raise BrokerStartError(f"node {node.node_id}: StorageTool format failed: {formatted.stdout[-2000:]!r}")
    cluster = KafkaCluster(nodes, java, jars, env, temp_root, stopped=set(nodes))
    try:
        cluster.start_all(timeout)
    except (BrokerStartError, TimeoutError) as exc:
        logs = "\n".join(f"--- node {n}:\n{tail(node.root / 'kafka.log', 20)}" for n, node in nodes.items())
        cluster.stop_all()
        raise BrokerStartError(f"the Kafka cluster did not start ({exc}):\n{logs}") from None
    return cluster
