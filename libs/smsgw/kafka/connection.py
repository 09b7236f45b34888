"""How every Kafka client of the platform reaches the cluster: address, TLS and SASL.

One value, built once from the settings, gives every producer, consumer and admin client the
same keyword arguments, so no client can be left talking plaintext to a cluster that asks for
TLS and SCRAM (Strimzi's `tls` and `scram-sha-512` listeners, docs/brokers.md).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.helpers import create_ssl_context

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True)
class KafkaConnection:
    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    #: CA bundle that signed the brokers' certificates; empty: the system's roots.
    ssl_ca_file: str = ""
    #: A client certificate and key, for clusters that authenticate clients by TLS (Strimzi `tls`).
    ssl_cert_file: str = ""
    ssl_key_file: str = ""

    @classmethod
    def of(cls, target: KafkaConnection | str) -> KafkaConnection:
        """*target* itself, or a plaintext connection to a bootstrap string (tests, tools)."""
        return target if isinstance(target, KafkaConnection) else cls(bootstrap=target)

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    def problems(self) -> list[str]:
        """What makes this connection unusable, each naming the setting to fix (empty: none)."""
        found: list[str] = []
        if self.security_protocol not in SECURITY_PROTOCOLS:
            found.append(
                f"SMSGW_KAFKA_SECURITY_PROTOCOL: {self.security_protocol!r} is not one of {SECURITY_PROTOCOLS}"
            )
            return found
        if self.uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                found.append(f"SMSGW_KAFKA_SASL_MECHANISM: {self.sasl_mechanism!r} is not one of {SASL_MECHANISMS}")
            if not self.sasl_username:
                found.append(f"SMSGW_KAFKA_SASL_USERNAME: required with {self.security_protocol}")
            if not self.sasl_password:
                found.append(
                    f"SMSGW_KAFKA_SASL_PASSWORD_FILE: required with {self.security_protocol} (a file holding the password)"
                )
        for setting, path in (
            ("SMSGW_KAFKA_SSL_CA_FILE", self.ssl_ca_file),
            ("SMSGW_KAFKA_SSL_CERT_FILE", self.ssl_cert_file),
            ("SMSGW_KAFKA_SSL_KEY_FILE", self.ssl_key_file),
        ):
            if path and not self.uses_tls:
                found.append(f"{setting}: set, but SMSGW_KAFKA_SECURITY_PROTOCOL={self.security_protocol} uses no TLS")
            elif path and not Path(path).is_file():
                found.append(f"{setting}: no file at {path}")
        if bool(self.ssl_cert_file) != bool(self.ssl_key_file):
            found.append("SMSGW_KAFKA_SSL_CERT_FILE and SMSGW_KAFKA_SSL_KEY_FILE: give both or neither")
        return found

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        kwargs: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol}
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return kwargs

    def ssl_context(self) -> ssl.SSLContext:
        # aiokafka's helper: certificate and host name verification on, as a browser would.
        return create_ssl_context(
            cafile=self.ssl_ca_file or None,
            certfile=self.ssl_cert_file or None,
            keyfile=self.ssl_key_file or None,
        )
