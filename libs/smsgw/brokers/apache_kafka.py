"""Apache Kafka (3.9.x, KRaft, one combined broker+controller node) launcher from plain jars.

The jars come from deploy/kafka/pom.xml via deploy/kafka/fetch-jars.sh; no Kafka distribution,
no Docker. Every start formats a fresh storage dir with a random cluster id.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Mapping
from dataclasses import dataclass
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

__all__ = ["KAFKA_VERSION", "STEADY_JVM_OPTS", "ScramListener", "default_jars_dir", "find_java", "start_apache_kafka"]

KAFKA_VERSION = "3.9.1"
_REPO_ROOT = Path(__file__).resolve().parents[3]  # libs/smsgw/brokers/ -> repo root

# JVM flags tuned for start-up time on a small dev box / CI runner, not for throughput:
# C1 only (TieredStopAtLevel=1) and SerialGC roughly halve the time to "ready" on 2 cores.
JVM_OPTS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Xshare:auto",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
)

#: For a broker that runs long under load: the JIT's optimising tier (C2) on, as in a production
#: broker. Once warm it spends ~20 % less CPU per message than JVM_OPTS' C1-only code (345 against
#: 432 µs in the pipeline at 800/s), but its first minute under load costs ~80 % more (the JIT
#: compiling) and it holds ~150 MiB more: docs/benchmarks.md, "The benchmark's broker: C1 or C2".
STEADY_JVM_OPTS = tuple(opt for opt in JVM_OPTS if opt != "-XX:TieredStopAtLevel=1")

_LOG4J = """\
# Written by smsgw.brokers: keep the broker quiet, keep start/stop and problems.
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.org.apache.kafka.clients=ERROR
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=ERROR
log4j.logger.state.change.logger=ERROR
"""


def default_jars_dir() -> Path:
    """$SMSGW_KAFKA_JARS, else <repo>/.cache/kafka-3.9.1/libs."""
    env = os.environ.get("SMSGW_KAFKA_JARS")
    if env:
        return Path(env)
    return _REPO_ROOT / ".cache" / f"kafka-{KAFKA_VERSION}" / "libs"


def find_java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if not java:
        raise BrokerStartError("no `java` on PATH and no JAVA_HOME: Apache Kafka needs Java 17+")
    return java


def cds_dir(jars_dir: Path) -> Path:
    """Where class-data-sharing archives are cached: $SMSGW_KAFKA_CDS_DIR or <jars>/../cds."""
    env = os.environ.get("SMSGW_KAFKA_CDS_DIR")
    return Path(env) if env else Path(jars_dir).resolve().parent / "cds"


def _cds_archive(jars_dir: Path, java: str, opts: tuple[str, ...]) -> Path | None:
    """Path of the AppCDS archive for this java + jar set + JVM options (may not exist yet).

    A dynamic CDS archive (JDK 13+) of the classes the broker loads roughly halves JVM start-up:
    measured 1.7 s -> 1.0 s to a ready broker on the 2-core dev box. The first start records it
    (-XX:ArchiveClassesAtExit, written when the JVM exits on stop()), later starts map it.
    Disable with SMSGW_KAFKA_CDS=0.
    """
    if os.environ.get("SMSGW_KAFKA_CDS", "1").lower() in ("0", "false", "no", "off"):
        return None
    h = hashlib.sha256()
    real_java = os.path.realpath(java)
    st = os.stat(real_java)
    h.update(f"{real_java}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    for jar in sorted(Path(jars_dir).glob("*.jar")):
        st = jar.stat()
        h.update(f"{jar.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    h.update("\n".join(opts).encode())
    d = cds_dir(jars_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
        if not os.access(d, os.W_OK):
            return None
    except OSError:
        return None
    return d / f"kafka-{KAFKA_VERSION}-{h.hexdigest()[:16]}.jsa"


def _check_jars(jars_dir: Path) -> None:
    if not any(jars_dir.glob("kafka_2.13-*.jar")):
        raise BrokerStartError(
            f"no kafka_2.13-*.jar in {jars_dir}; run deploy/kafka/fetch-jars.sh "
            "(or point SMSGW_KAFKA_JARS at a directory of Kafka runtime jars)"
        )


def _publish_archive(recorded: Path, archive: Path | None) -> None:
    """Move a freshly recorded CDS archive into place (atomic; last writer wins)."""
    try:
        if archive is not None and recorded.exists() and recorded.stat().st_size > 0:
            os.replace(recorded, archive)
    except OSError:
        pass
    finally:
        recorded.unlink(missing_ok=True)


@dataclass(frozen=True)
class ScramListener:
    """A second listener that asks clients for TLS and SCRAM credentials, as a Strimzi cluster's
    `tls` listener with `scram-sha-512` users does; the plaintext one stays for the harness.

    The users are written into the log at format time (`--add-scram`), the KRaft way: a cluster
    without ZooKeeper has no other store for them before its first start.
    """

    port: int
    cert_file: Path  # the broker's certificate (PEM), for 127.0.0.1
    key_file: Path  # its private key (PEM, unencrypted PKCS#8)
    users: Mapping[str, str]  # user name -> password
    mechanism: str = "SCRAM-SHA-512"

    @property
    def bootstrap(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def server_config(self, root: Path, plaintext_port: int, controller_port: int) -> dict[str, object]:
        # Kafka reads a PEM keystore from one file holding the key and then the certificate.
        keystore = root / "broker-keystore.pem"
        keystore.write_text(self.key_file.read_text() + self.cert_file.read_text())
        login = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "listeners": f"PLAINTEXT://{LOCALHOST}:{plaintext_port},SASL_SSL://{LOCALHOST}:{self.port},"
            f"CONTROLLER://{LOCALHOST}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{LOCALHOST}:{plaintext_port},SASL_SSL://{self.bootstrap}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": self.mechanism,
            f"listener.name.sasl_ssl.{self.mechanism.lower()}.sasl.jaas.config": login,
            "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
            "listener.name.sasl_ssl.ssl.keystore.location": str(keystore),
        }

    def format_args(self) -> list[str]:
        args: list[str] = []
        for name, password in self.users.items():
            args += ["--add-scram", f"{self.mechanism}=[name={name},password={password}]"]
        return args


def _random_cluster_id() -> str:
    # Same shape as `kafka-storage.sh random-uuid`: 16 random bytes, url-safe base64, no padding,
    # and (like Kafka's Uuid.randomUuid) never starting with "-", which the CLI would take for a flag.
    while True:
        cid = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _server_properties(*, port: int, controller_port: int, log_dir: Path, extra: Mapping[str, object] | None) -> str:
    props: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.voters": f"1@{LOCALHOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{LOCALHOST}:{port},CONTROLLER://{LOCALHOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOCALHOST}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir),
        # One node: every internal topic has RF 1, small partition counts create faster.
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        # Auto-created topics (faust internals, typos) get the same count the services create.
        "num.partitions": 12,
        "auto.create.topics.enable": "true",
        "group.initial.rebalance.delay.ms": 0,
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "log.retention.hours": 24,
        "log.segment.bytes": 64 * 1024 * 1024,
        "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        "delete.topic.enable": "true",
    }
    if extra:
        props.update(extra)
    return "".join(f"{k}={v}\n" for k, v in props.items())


def start_apache_kafka(
    *,
    port: int | None = None,
    jars_dir: Path | None = None,
    data_dir: Path | None = None,
    keep_data: bool = False,
    log_path: Path | None = None,
    timeout: float = 60.0,
    extra_config: Mapping[str, object] | None = None,
    jvm_opts: tuple[str, ...] | None = None,
    scram_listener: ScramListener | None = None,
) -> RunningBroker:
    """Format and start a one-node KRaft Kafka on 127.0.0.1; wait until it answers Metadata.

    *data_dir*: kept after stop() if given (its contents are replaced by a fresh format, unless
    *keep_data*: then a log formatted by an earlier start is started again, topics, records and
    committed offsets included); otherwise a temp dir is used and removed on stop(). *extra_config* overrides server.properties
    keys (e.g. ``{"group.min.session.timeout.ms": 1000}``). *scram_listener*: a second listener
    that asks for TLS and SCRAM (the returned broker's ``bootstrap`` stays the plaintext one).
    """
    jars = Path(jars_dir) if jars_dir is not None else default_jars_dir()
    _check_jars(jars)
    java = find_java()
    opts = tuple(jvm_opts) if jvm_opts is not None else JVM_OPTS
    attempts = 3 if port is None else 1
    last: Exception | None = None
    if port is not None:
        ensure_port_free(port)

    for _ in range(attempts):
        temp_dirs: list[Path] = []
        if data_dir is None:
            root = Path(tempfile.mkdtemp(prefix="smsgw-kafka-", dir=data_root()))
            temp_dirs.append(root)
        else:
            root = Path(data_dir)
            root.mkdir(parents=True, exist_ok=True)
            if not keep_data:
                shutil.rmtree(root / "kraft-logs", ignore_errors=True)
        log = Path(log_path) if log_path is not None else root / "kafka.log"
        kafka_port = port if port is not None else free_port()
        controller_port = free_port()
        while controller_port == kafka_port:
            controller_port = free_port()

        log4j = root / "log4j.properties"
        log4j.write_text(_LOG4J)
        props = root / "server.properties"
        extra = dict(extra_config or {})
        if scram_listener is not None:
            extra.update(scram_listener.server_config(root, kafka_port, controller_port))
        props.write_text(
            _server_properties(
                port=kafka_port, controller_port=controller_port, log_dir=root / "kraft-logs", extra=extra
            )
        )
        cds: list[str] = []
        server_cds: list[str] = []
        archive = _cds_archive(jars, java, opts)
        record: Path | None = None
        if archive is not None:
            cds = ["-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
            if archive.exists():
                cds.append(f"-XX:SharedArchiveFile={archive}")
            else:
                record = archive.with_name(f".{archive.name}.{os.getpid()}.{time.time_ns()}.tmp")
                server_cds = [f"-XX:ArchiveClassesAtExit={record}"]
        base = [
            java,
            *opts,
            *cds,
            f"-Dlog4j.configuration=file:{log4j}",
            f"-Dkafka.logs.dir={root}",
            "-cp",
            f"{jars}/*",
        ]
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("KAFKA_OPTS", "KAFKA_HEAP_OPTS", "JAVA_TOOL_OPTIONS", "CLASSPATH")
        }

        t0 = time.monotonic()
        log.parent.mkdir(parents=True, exist_ok=True)
        # Formatted by an earlier start: start it again as it is (a new format would refuse the
        # directory's cluster id).
        if not (keep_data and (root / "kraft-logs" / "meta.properties").exists()):
            fmt = subprocess.run(
                [
                    *base,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    _random_cluster_id(),
                    "-c",
                    str(props),
                    "--ignore-formatted",
                    *(scram_listener.format_args() if scram_listener else ()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=root,
                timeout=max(30.0, timeout),
                check=False,
            )
            with open(log, "ab") as f:
                f.write(fmt.stdout)
            if fmt.returncode != 0:
                for d in temp_dirs:
                    shutil.rmtree(d, ignore_errors=True)
                raise BrokerStartError(
                    f"kafka StorageTool format failed (rc={fmt.returncode}); last log lines:\n"
                    + "\n".join(fmt.stdout.decode(errors="replace").splitlines()[-50:])
                )

        proc = spawn([*base[:1], *server_cds, *base[1:], "kafka.Kafka", str(props)], log_path=log, env=env, cwd=root)
        broker = RunningBroker(
            kind="kafka",
            bootstrap=f"{LOCALHOST}:{kafka_port}",
            supports_idempotence=True,
            log_path=log,
            _proc=proc,
            _temp_dirs=temp_dirs,
            _stop_grace=20.0,
            _stop_hook=functools.partial(_publish_archive, record, archive) if record else None,
        )
        try:
            _wait_ready(
                broker.bootstrap,
                max(1.0, timeout - (time.monotonic() - t0)),
                alive=functools.partial(running, proc),
                interval=0.1,
            )
            if proc.poll() is not None:
                raise BrokerStartError("kafka exited right after start")
            return broker
        except (BrokerStartError, TimeoutError) as exc:
            exited = proc.poll() is not None
            terminate(proc, 5.0)
            text = tail(log)
            last = BrokerStartError(f"kafka did not start on {broker.bootstrap} ({exc}); last log lines:\n{text}")
            broker._proc = None  # noqa: SLF001 - the broker handle's own process, same package
            broker.stop()
            # Retry only a lost port race (someone bound our free port in between).
            if not (exited and port is None and "Address already in use" in text):
                break
    assert last is not None
    raise last
