"""Twilio webhook signatures (``X-Twilio-Signature``), computed and verified.

The signature is base64(HMAC-SHA1(auth token, URL + every POST parameter)), the
parameters sorted by name, each written as name + value (a repeated name: its
values sorted). The URL is the full URL the provider requested, query string
included. Twilio is not consistent about writing the port, so a signature is
also accepted for the URL without its port, or with the default port added
(exactly the variants Twilio's own helper libraries accept). Verification compares in constant time.

Shared by the carrier-adapter (verifies callbacks) and the Twilio simulator
(signs them). Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = ["SIGNATURE_HEADER", "compute_signature", "signing_string", "url_variants", "verify_signature"]

SIGNATURE_HEADER = "X-Twilio-Signature"

#: A mapping (values a str or a list of str; aiohttp/werkzeug multidicts work too) or (name, value) pairs.
Params = Mapping[str, str | Iterable[str]] | Iterable[tuple[str, str]]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _grouped(params: Params | None) -> dict[str, set[str]]:
    grouped: dict[str, set[str]] = {}
    if params is None:
        return grouped
    if hasattr(params, "getall"):  # multidict: items() yields every repeated value
        pairs: Iterable[tuple[str, object]] = params.items()  # type: ignore[union-attr]
    elif isinstance(params, Mapping):
        pairs = []
        for name, value in params.items():
            values = [value] if isinstance(value, (str, bytes)) else list(value)
            pairs.extend((name, v) for v in values)
    else:
        pairs = params
    for name, value in pairs:
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        grouped.setdefault(str(name), set()).add(str(value))
    return grouped


def signing_string(url: str, params: Params | None = None) -> str:
    """What is signed: the URL, then name+value for each parameter in sorted order."""
    grouped = _grouped(params)
    return url + "".join(name + value for name in sorted(grouped) for value in sorted(grouped[name]))


def compute_signature(auth_token: str, url: str, params: Params | None = None) -> str:
    """The ``X-Twilio-Signature`` value for a POST of ``params`` to ``url``."""
    mac = hmac.new(auth_token.encode("utf-8"), signing_string(url, params).encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def url_variants(url: str) -> tuple[str, ...]:
    """The URL as given, then without its port, or with the scheme's default port when it has none.

    The same variants Twilio's helper libraries accept: the port Twilio signs is not always the one it calls.
    """
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    if not parts.hostname:
        return (url,)
    try:
        port = parts.port
    except ValueError:
        return (url,)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    userinfo = userinfo + "@" if userinfo else ""
    if port is not None:
        host = hostport[: hostport.rindex(":")]
        other = userinfo + host
    elif default is not None:
        other = userinfo + hostport + f":{default}"
    else:
        return (url,)
    return (url, urlunsplit(parts._replace(netloc=other)))


def verify_signature(auth_token: str, url: str, params: Params | None, signature: str | None) -> bool:
    """True when ``signature`` was made with ``auth_token`` over this URL and these parameters.

    A missing, empty or malformed signature is simply invalid (never an exception).
    """
    if not signature or not auth_token:
        return False
    try:
        presented = signature.strip().encode("ascii")
    except UnicodeEncodeError:
        return False
    valid = False
    for candidate in url_variants(url):
        expected = compute_signature(auth_token, candidate, params).encode("ascii")
        # No short-circuit: every variant is compared, each in constant time.
        valid |= hmac.compare_digest(expected, presented)
    return valid
