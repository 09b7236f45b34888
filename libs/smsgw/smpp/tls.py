"""SMPP over TLS: the ssl contexts of the client and the simulator, and what a failed handshake means.

SMPP 3.4 has no STARTTLS: an SMSC that wants TLS listens on a port of its own
(3550 by convention) or sits behind stunnel, and the connection is TLS from
its first byte, then ordinary SMPP. So TLS is only a property of the
connection: an ``ssl.SSLContext`` handed to ``asyncio.open_connection`` /
``asyncio.start_server``.

Errors name the setting to fix (``tls_ca_file``, ``tls_cert_file``, ...), as
the carrier configuration spells them.
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsConfigError(ValueError):
    """A TLS setting that cannot work: a missing or unreadable file, a key without its certificate."""


def _check_file(setting: str, path: str | None) -> None:
    if path is not None and not Path(path).is_file():
        raise TlsConfigError(f"{setting}: no such file: {path!r}")


def client_context(
    *, ca_file: str | None = None, verify: bool = True, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """The context an ESME connects with.

    ``ca_file``: PEM file of the CAs that may sign the SMSC's certificate; None trusts the
    system's CAs. ``verify=False`` accepts any certificate and host name (a test SMSC only:
    the link is then encrypted but not authenticated). ``cert_file`` (and ``key_file``, unless
    the key is in the same PEM) present a client certificate, for SMSCs that require mutual TLS.
    """
    _check_file("tls_ca_file", ca_file)
    _check_file("tls_cert_file", cert_file)
    _check_file("tls_key_file", key_file)
    if key_file is not None and cert_file is None:
        raise TlsConfigError("tls_key_file is set without tls_cert_file: the key belongs to a client certificate")
    try:
        # With a ca_file, only those CAs are trusted, not the system's as well.
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except ssl.SSLError as exc:
        raise TlsConfigError(f"tls_ca_file: {ca_file!r} holds no usable PEM certificate ({exc})") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise TlsConfigError(
                f"tls_cert_file/tls_key_file: {cert_file!r} and "
                f"{key_file or '(key in the same file)'!r} are not a PEM certificate and its "
                f"private key ({exc})"
            ) from None
    return context


def server_context(*, cert_file: str, key_file: str | None = None, client_ca_file: str | None = None) -> ssl.SSLContext:
    """The context an SMSC (our simulator) listens with; ``client_ca_file`` requires client certificates."""
    _check_file("tls_cert_file", cert_file)
    _check_file("tls_key_file", key_file)
    _check_file("tls_client_ca_file", client_ca_file)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise TlsConfigError(f"tls_cert_file/tls_key_file: not a PEM certificate and its private key ({exc})") from None
    if client_ca_file is not None:
        context.load_verify_locations(cafile=client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def describe_handshake_failure(exc: ssl.SSLError, host: str, port: int) -> str:
    """A failed handshake in words an operator can act on."""
    where = f"TLS handshake with {host}:{port} failed"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"{where}: the SMSC's certificate is not trusted ({exc.verify_message}); check tls_ca_file "
            "(unset: the system's CAs) and that host is a name the certificate holds"
        )
    reason = getattr(exc, "reason", None) or str(exc)
    if reason == "WRONG_VERSION_NUMBER":
        return f"{where}: the peer does not speak TLS there ({reason}); is it the SMSC's TLS port?"
    if "CERTIFICATE_REQUIRED" in reason or "BAD_CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
        return f"{where}: the SMSC refused our client certificate ({reason}); check tls_cert_file/tls_key_file"
    return f"{where}: {reason}"
