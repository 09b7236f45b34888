"""URLs the platform calls on a customer's behalf (status callbacks, webhooks) or hands to a
carrier to fetch (MMS media): they must point at the public internet.

Otherwise a customer could make the gateway call into its own network (server-side request
forgery): the cloud metadata service at 169.254.169.254, an admin port on localhost, a
database on 10.x. Checked twice: here, when a URL is accepted (its form, and the address if it
is an IP literal), and again when the connection is made (`smsgw.http_guard`), because a name
that resolved to a public address yesterday may resolve to 127.0.0.1 today (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from smsgw.domain import errors as de

MAX_URL_LENGTH = 2048


@dataclass(frozen=True)
class UrlPolicy:
    #: http:// as well as https:// (development: make run's and the tests' local receivers).
    allow_http: bool = False
    #: Loopback, private and other non-public addresses (development only).
    allow_private: bool = False


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for addresses on the public internet (not loopback, private, link-local, CGNAT, multicast...)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_public_url(url: str, *, field: str, policy: UrlPolicy, purpose: str = "a callback") -> None:
    """Raises InvalidArgument naming `field` unless `url` is an absolute URL the policy allows."""
    shown = url[:64] + ("…" if len(url) > 64 else "")
    schemes = ("https", "http") if policy.allow_http else ("https",)
    example = "https://example.com/sms/status"
    if len(url) > MAX_URL_LENGTH:
        raise de.InvalidArgument(f"{field}: {len(url)} characters; at most {MAX_URL_LENGTH}", field=field)
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme not in schemes or not host or any(c.isspace() for c in url):
        raise de.InvalidArgument(
            f"{field}: {shown!r} is not an absolute {' or '.join(schemes)} URL like {example}", field=field
        )
    if parts.username or parts.password:
        raise de.InvalidArgument(
            f"{field}: credentials in the URL are not allowed; sign requests instead "
            "(webhooks are signed with your account's secret)",
            field=field,
        )
    if policy.allow_private:
        return
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if (literal is not None and not is_public(literal)) or host == "localhost" or host.endswith(".localhost"):
        raise de.InvalidArgument(
            f"{field}: {shown!r} points at a non-public address; {purpose} must be reachable on the internet",
            field=field,
            metadata={"detail": "NON_PUBLIC_ADDRESS"},
        )
