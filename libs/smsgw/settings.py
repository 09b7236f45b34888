"""Settings shared by every service, read from SMSGW_* environment variables.

Each service subclasses ServiceSettings; values are validated at start and the
effective configuration is logged, so a missing or wrong setting fails fast.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from smsgw import config_file as platform_config
from smsgw.kafka.connection import KafkaConnection


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMSGW_", extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port] of the Kafka cluster")
    # Apache Kafka: on (exactly-once appends per partition). Tansu answers InitProducerId v0
    # with an error, so there it is off and readers dedupe by event id instead.
    kafka_idempotence: bool = Field(True, description="idempotent producers and read_committed readers (off on Tansu)")
    topic_prefix: str = Field(
        "", description="prefix of every topic and consumer group name (several platforms on one cluster)"
    )
    grpc_host: str = Field("127.0.0.1", description="address the gRPC server listens on (0.0.0.0 in a pod)")
    grpc_port: int = Field(0, description="the gRPC port (0: any free port)")
    instance_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="this process's name in Kafka client ids, events' producer field and logs (default: host-pid)",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR (phone numbers are whole at DEBUG only)")
    tracemalloc_frames: int = Field(
        0,
        ge=0,
        le=50,
        description="above 0: record every allocation with tracemalloc (this many frames each; costs CPU and "
        "memory) and log the largest allocation sites on SIGUSR2 (docs/operations.md); 0: off",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text (for a terminal) or json: one JSON object a line with time, level, logger, message, "
        "service, trace_id, span_id and message_id (for a log pipeline)",
    )
    # Short session timeouts make group joins fast on Tansu (it holds a JoinGroup for half of it).
    kafka_session_timeout_ms: int = Field(
        10_000, description="consumer group session: how soon a dead member's partitions move"
    )
    kafka_heartbeat_interval_ms: int = Field(1_000, description="consumer group heartbeat interval")
    kafka_request_timeout_ms: int = Field(
        15_000, description="how long a Kafka request may take before it is retried or fails"
    )
    # Apache Kafka answers a fetch as soon as data arrives, so a long wait costs nothing there.
    # Tansu holds each fetch for half of this wait whatever arrives: keep it small on Tansu.
    kafka_fetch_max_wait_ms: int = Field(500, description="longest a fetch waits for records (keep it small on Tansu)")
    # Tansu up to v0.6.0 can skip records when a consumer resumes from an offset inside a
    # record batch; a batch size of 1 byte makes every record its own batch there.
    kafka_max_batch_size: int = Field(
        16_384, description="producer batch size in bytes (1 on Tansu <= 0.6: a record per batch)"
    )
    # How long a producer holds a record for others to share its request. 0: every service
    # writes a poll's records together before the producer sends, and while a request is in
    # flight (one per broker) the next records gather in the next batch, so a linger only adds
    # its wait to every hop. Measured against 10 ms (docs/benchmarks.md, stop 41, alternated):
    # send -> DELIVERED p50 48-59 ms against 84-86 at 136 messages/s, less CPU per message at
    # moderate rates, the same saturation.
    kafka_linger_ms: int = Field(
        0, ge=0, le=100, description="how long a producer holds a record for others to share its request"
    )
    # How the clients reach a cluster that asks for TLS and SASL (Strimzi's `tls` listener and
    # `scram-sha-512` users): smsgw.kafka.connection, docs/brokers.md.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism, with SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_username: str = Field("", description="the Kafka user, with SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_password_file: str = Field(
        "", description="file holding the SASL password (a Secret's key mounted as a file; never the password itself)"
    )
    kafka_ssl_ca_file: str = Field(
        "", description="CA that signed the brokers' certificates; empty: the system's roots"
    )
    kafka_ssl_cert_file: str = Field("", description="client certificate, for clusters that authenticate by TLS")
    kafka_ssl_key_file: str = Field("", description="the client certificate's private key")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics on this port (docs/metrics.md); 0: off"
    )
    create_topics: bool = Field(
        False,
        description="make missing topics at start (a development cluster); otherwise the service waits for "
        "them, as made by k8s/base/kafka-topics.yaml, and never creates one with a broker's defaults",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="uvloop (C, the default) or asyncio's own loop, e.g. to compare or rule uvloop out"
    )
    gc_young_collection_seconds: float = Field(
        1.0,
        ge=0,
        description="collect the garbage collector's young generations this often whatever their counts "
        "(0: only by the thresholds); frees cycles holding buffers the counts do not see (smsgw.eventloop)",
    )
    trace_file: str = Field("", description="append finished spans as JSON lines to this file (dev/test)")
    ready_file: str = Field("", description="write 'host:port' here once serving (used by the dev runner)")
    # Local, disposable state (intake's store, webhook outbox). Everything in it can be rebuilt from Kafka.
    state_dir: str = Field(".run/state", description="directory for local state that the log can rebuild")

    config_file: str = Field(
        "",
        description="the platform's configuration file (smsgw.yaml; docs/configuration-file.md): its "
        "sections (carriers, routes, numbers, receipt_policies, carrier_health, webhooks) replace the "
        "SMSGW_* variables of the same names, which must then be unset; accounts: smsgw config apply",
    )

    environment: Literal["production", "development"] = Field(
        "production",
        description="production: refuse to start on a development default (simulator carriers, "
        "the development route table, sender or webhook secret, insecure modes); "
        "make run and the tests say development",
    )

    def refuse_development_defaults(self, service: str, problems: list[str]) -> None:
        """In production, stops the service naming every development default still in use; warns otherwise."""
        if not problems:
            return
        if self.environment == "production":
            raise SystemExit(
                f"{service}: refusing to start in production with development defaults: "
                + "; ".join(problems)
                + ". Set them, or SMSGW_ENVIRONMENT=development on a development machine"
            )
        for problem in problems:
            logging.getLogger(service).warning("development default in use: %s", problem)

    def config_section(
        self, section: str, loader: platform_config.SectionLoader, replaces: str | None = None
    ) -> Any | None:
        """The configuration file's `section` made into the service's object by `loader`; None
        without a file or without that section. `replaces`: the setting the section stands in
        for, which must then be unset. Stops the service with every problem and its line."""
        if not self.config_file:
            return None
        try:
            document = platform_config.read(self.config_file)
            if section not in document:
                return None
            if replaces is not None and replaces in self.model_fields_set:
                raise SystemExit(
                    f"{self.config_file} has a `{section}` section and SMSGW_{replaces.upper()} is set too: "
                    "unset the variable or remove the section (one table, one source)"
                )
            return document.load(section, loader)
        except platform_config.ConfigFileError as exc:
            raise SystemExit(f"configuration file {self.config_file}:\n{exc}") from None

    def kafka_connection(self) -> KafkaConnection:
        """The cluster's address and credentials; stops the service naming each unusable setting."""
        password_file = Path(self.kafka_sasl_password_file) if self.kafka_sasl_password_file else None
        if password_file is not None and not password_file.is_file():
            raise SystemExit(f"SMSGW_KAFKA_SASL_PASSWORD_FILE: no file at {password_file}")
        connection = KafkaConnection(
            bootstrap=self.kafka_bootstrap,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            # A Secret mounted as a file ends with the newline an editor added; the password does not.
            sasl_password=password_file.read_text().strip() if password_file else "",
            ssl_ca_file=self.kafka_ssl_ca_file,
            ssl_cert_file=self.kafka_ssl_cert_file,
            ssl_key_file=self.kafka_ssl_key_file,
        )
        problems = connection.problems()
        if problems:
            raise SystemExit("Kafka connection settings: " + "; ".join(problems))
        return connection

    def topic(self, spec) -> str:
        return self.topic_prefix + spec.name

    def log_effective(self, service: str) -> None:
        logging.getLogger(service).info("effective configuration: %s", redacted(self.model_dump()))


_SECRET_WORDS = ("password", "secret", "token", "auth")

# The password of a URL's userinfo (postgresql://user:PASSWORD@host/db). Settings holding URLs
# are named for what they reach (projection_store, default_url), not for the secret inside,
# so the key's name cannot tell. The userinfo ends at the netloc's last '@' (a password may
# hold an unescaped '@'); the netloc ends at '/', '?', '#', whitespace or a quote.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#@:\s\"']*):[^/?#\s\"']*@")

# A JSON-valued setting (carriers, receipt policies) holding a secret under a telling key; the
# value up to its closing quote, past escaped ones (a password may hold a '"').
_SECRET_IN_JSON = re.compile(
    r'("(?:[a-z_]*)(?:password|secret|token|auth)[a-z_]*"\s*:\s*)"(?:[^"\\]|\\.)*"', flags=re.IGNORECASE
)


def url_password_masked(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (the user stays: it
    tells which credentials were used)."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


def redacted(config: dict) -> dict:
    """The configuration with secrets masked: values under a secret's name, secrets under such
    names inside JSON-valued settings, and the password of any URL."""
    out = {}
    for key, value in config.items():
        if any(word in key.lower() for word in _SECRET_WORDS):
            out[key] = "***"
        elif isinstance(value, str):
            if value.lstrip().startswith("{"):
                value = _SECRET_IN_JSON.sub(r'\1"***"', value)
            out[key] = url_password_masked(value)
        else:
            out[key] = value
    return out
