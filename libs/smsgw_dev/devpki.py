"""A throwaway PKI for development and tests, made with the openssl CLI: a CA, a server and a client
certificate it signed, and an unrelated CA (the "wrong" one) with a client certificate of its own.
Keys are EC P-256.

`make run` makes one under .run/tls/ for intake's public port (the CLI trusts its ca.crt); the
TLS tests make their own. Never for production: there the certificate comes from your PKI
(cert-manager, a Kubernetes Secret).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ThrowawayPki:
    ca: Path
    server_cert: Path  # CN and SAN localhost, SAN IP 127.0.0.1
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # trusts nothing above
    other_client_cert: Path  # signed by other_ca: what a client from outside presents
    other_client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr}")


def _ca(directory: Path, name: str, days: int) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.name,
        "-out",
        cert.name,
        "-days",
        str(days),
        "-subj",
        f"/CN=smsgw development {name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str, days: int) -> tuple[Path, Path]:
    cert, key, csr, ext = (directory / f"{name}{suffix}" for suffix in (".crt", ".key", ".csr", ".ext"))
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.name,
        "-out",
        csr.name,
        "-subj",
        f"/CN={name}",
        cwd=directory,
    )
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" + extensions
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        csr.name,
        "-CA",
        ca[0].name,
        "-CAkey",
        ca[1].name,
        "-CAcreateserial",
        "-out",
        cert.name,
        "-days",
        str(days),
        "-extfile",
        ext.name,
        cwd=directory,
    )
    return cert, key


def make_pki(directory: Path, days: int = 1) -> ThrowawayPki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ca", days)
    server = _leaf(
        directory, "localhost", ca, "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n", days
    )
    client = _leaf(directory, "smsgw-client", ca, "extendedKeyUsage=clientAuth\n", days)
    other_ca = _ca(directory, "other-ca", days)
    other_client = _leaf(directory, "outsider-client", other_ca, "extendedKeyUsage=clientAuth\n", days)
    return ThrowawayPki(
        ca=ca[0],
        server_cert=server[0],
        server_key=server[1],
        client_cert=client[0],
        client_key=client[1],
        other_ca=other_ca[0],
        other_client_cert=other_client[0],
        other_client_key=other_client[1],
    )
