"""TLS for gRPC between our services, both ends: the credentials a port serves with (and, for
mutual TLS, the CA it verifies client certificates against) and those a calling service opens
its channel with (the CA it trusts and the certificate it presents).

gRPC Python verifies client certificates only on a port that requires them: with
`require_client_auth=False` it does not even ask for one, so a certificate from any CA would
pass unnoticed (test_grpc_mtls.py shows it). Not every client of our ports is a service, though:
intake's public port serves mobile apps and backends with API keys, carrier-adapter's serves
Android phones with device tokens, and neither has a certificate. So a port verifies client
certificates in one of two ways, both with `SMSGW_GRPC_TLS_CLIENT_CA_FILE`:

- a second port for services (`SMSGW_GRPC_MTLS_PORT`): the same server and services, the same
  server certificate, but a client without a certificate from the client CA gets no connection.
  The main port goes on serving clients without certificates. A servicer only services may call
  asks `has_verified_client_certificate` (the relay between carrier-adapter replicas does), so
  such a call through the main port is refused.
- the main port itself (`SMSGW_GRPC_TLS_REQUIRE_CLIENT_CERT=true`), for a port only services call.

Settings are mixins of the service settings that read them (env prefix SMSGW_), so each is
validated, logged and documented with the rest of the service's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from pydantic import BaseModel, Field

CLIENT_CA_SETTING = "SMSGW_GRPC_TLS_CLIENT_CA_FILE"
REQUIRE_SETTING = "SMSGW_GRPC_TLS_REQUIRE_CLIENT_CERT"
MTLS_PORT_SETTING = "SMSGW_GRPC_MTLS_PORT"
CLIENT_CERT_SETTING = "SMSGW_GRPC_CLIENT_CERT_FILE"
CLIENT_KEY_SETTING = "SMSGW_GRPC_CLIENT_KEY_FILE"


@dataclass(frozen=True)
class TlsFiles:
    """A port's certificate chain and private key (PEM files) and, for mutual TLS, the CA that
    client certificates must chain to and whether the port requires one (it verifies them only then)."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    require_client_cert: bool = False

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.client_ca.read_bytes() if self.client_ca is not None else None,
            require_client_auth=self.require_client_cert,
        )

    def requiring_client_certificates(self) -> TlsFiles:
        """The same, for a port that requires a client certificate signed by the client CA."""
        if self.client_ca is None:
            raise ValueError("requiring client certificates needs a client CA")
        return replace(self, require_client_cert=True)


@dataclass(frozen=True)
class ClientCertificate:
    """The certificate chain and private key (PEM files) a service presents when it calls another."""

    cert: Path
    key: Path


def channel_credentials(
    root_certificates: bytes | None, client: ClientCertificate | None = None
) -> grpc.ChannelCredentials:
    """TLS to a server whose certificate chains to `root_certificates` (None: the system's roots),
    presenting `client` when given (mutual TLS)."""
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates)
    return grpc.ssl_channel_credentials(
        root_certificates, private_key=client.key.read_bytes(), certificate_chain=client.cert.read_bytes()
    )


def has_verified_client_certificate(context: grpc.aio.ServicerContext) -> bool:
    """Whether the caller presented a certificate this port verified against its client CA. gRPC
    names a peer only on a port that required and verified its certificate: elsewhere (the main
    port of a server with an mTLS port) no caller has an identity, certificate or not."""
    return context.peer_identities() is not None


def refuse_unreadable(service: str, setting: str, path: str) -> Path:
    """`path` as a Path, or the service stops naming the setting (before anything starts)."""
    if not Path(path).is_file():
        raise SystemExit(f"{service}: {setting}={path} is not a readable file")
    return Path(path)


class ClientVerificationSettings(BaseModel):
    """Mixin of a service whose gRPC server can verify client certificates (mutual TLS)."""

    grpc_tls_client_ca_file: str = Field(
        "",
        description="with TLS on the gRPC port: PEM CA that client certificates must chain to "
        "(mutual TLS), verified on grpc_mtls_port, or on the main port with "
        "grpc_tls_require_client_cert; empty: client certificates are not asked for",
    )
    grpc_mtls_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="with grpc_tls_client_ca_file: a second port serving the same services over "
        "TLS to clients with a certificate from that CA only, for calls from other services, "
        "while the main port serves clients without certificates (phones, API clients); 0: none",
    )
    grpc_tls_require_client_cert: bool = Field(
        False,
        description="with grpc_tls_client_ca_file: the main port too requires a client certificate "
        "from that CA (a port only services call: no phones, no API clients)",
    )

    def verifying_clients(self, service: str, tls: TlsFiles | None) -> TlsFiles | None:
        """`tls` with the client CA and requirement of these settings; the service stops, naming
        the setting, when they ask for what cannot be done (a CA file missing, client
        certificates on a plaintext port, a CA that no port would verify with)."""
        if not self.grpc_tls_client_ca_file:
            for setting, value in (
                (REQUIRE_SETTING, self.grpc_tls_require_client_cert),
                (MTLS_PORT_SETTING, self.grpc_mtls_port),
            ):
                if value:
                    raise SystemExit(
                        f"{service}: {setting} needs {CLIENT_CA_SETTING} (the CA to verify client certificates with)"
                    )
            return tls
        if tls is None:
            raise SystemExit(
                f"{service}: {CLIENT_CA_SETTING} is set but the gRPC port is plaintext: client certificates "
                "need TLS on the port (SMSGW_GRPC_TLS_CERT_FILE and SMSGW_GRPC_TLS_KEY_FILE)"
            )
        if not (self.grpc_tls_require_client_cert or self.grpc_mtls_port):
            # gRPC Python would not even ask for a certificate: the CA alone would protect nothing.
            raise SystemExit(
                f"{service}: {CLIENT_CA_SETTING} is set but no port requires client certificates: set "
                f"{MTLS_PORT_SETTING} (a second port for services) or {REQUIRE_SETTING}=true (the main port)"
            )
        client_ca = refuse_unreadable(service, CLIENT_CA_SETTING, self.grpc_tls_client_ca_file)
        return TlsFiles(tls.cert, tls.key, client_ca, self.grpc_tls_require_client_cert)


class ClientCertificateSettings(BaseModel):
    """Mixin of a service that calls another's gRPC port and can present a certificate there."""

    grpc_client_cert_file: str = Field(
        "",
        description="PEM certificate chain this service presents when it calls another service over "
        "TLS (mutual TLS; the called port verifies it against its grpc_tls_client_ca_file); empty: none",
    )
    grpc_client_key_file: str = Field("", description="PEM private key of grpc_client_cert_file")

    def client_certificate(self, service: str) -> ClientCertificate | None:
        """The certificate to present, or None; the service stops, naming the setting, when only
        one of the two files is set or one is not readable."""
        if not (self.grpc_client_cert_file or self.grpc_client_key_file):
            return None
        if not (self.grpc_client_cert_file and self.grpc_client_key_file):
            raise SystemExit(
                f"{service}: a client certificate needs both {CLIENT_CERT_SETTING} and {CLIENT_KEY_SETTING}"
            )
        return ClientCertificate(
            refuse_unreadable(service, CLIENT_CERT_SETTING, self.grpc_client_cert_file),
            refuse_unreadable(service, CLIENT_KEY_SETTING, self.grpc_client_key_file),
        )
