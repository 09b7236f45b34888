"""Callback and media URLs reach only the public internet (SSRF): checked when accepted, and at connect time."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from smsgw.domain import errors as de
from smsgw.domain.public_urls import UrlPolicy, check_public_url, is_public
from smsgw.http_guard import PublicOnlyResolver

STRICT, DEV = UrlPolicy(), UrlPolicy(allow_http=True, allow_private=True)


@pytest.mark.parametrize(
    "url", ["https://example.com/sms/status", "https://93.184.216.34:8443/cb?x=1", "https://[2606:2800:220:1::1]/cb"]
)
def test_public_https_urls_pass(url):
    check_public_url(url, field="status_callback_url", policy=STRICT)


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://example.com/cb", "https URL"),
        ("ftp://example.com/x", "https URL"),
        ("https:///no-host", "https URL"),
        ("https://exa mple.com/", "https URL"),
        ("https://example.com:99999/", "https URL"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://127.0.0.1/admin", "non-public"),
        ("https://localhost:8080/", "non-public"),
        ("https://api.localhost/", "non-public"),
        ("https://169.254.169.254/latest/meta-data/", "non-public"),  # cloud metadata
        ("https://10.0.0.5/", "non-public"),
        ("https://192.168.1.1/", "non-public"),
        ("https://100.64.0.1/", "non-public"),  # carrier-grade NAT
        ("https://[::1]/", "non-public"),
        ("https://[::ffff:127.0.0.1]/", "non-public"),  # IPv4-mapped loopback
        ("https://[fd00:ec2::254]/", "non-public"),  # AWS IPv6 metadata
        ("https://224.0.0.1/", "non-public"),
        ("https://example.com/" + "a" * 2100, "at most 2048"),
    ],
)
def test_everything_else_is_refused_naming_the_field(url, words):
    with pytest.raises(de.InvalidArgument) as refused:
        check_public_url(url, field="status_callback_url", policy=STRICT)
    assert refused.value.field == "status_callback_url" and words in refused.value.message


def test_development_policy_allows_local_http_but_never_credentials_or_junk():
    check_public_url("http://127.0.0.1:8080/hook", field="f", policy=DEV)
    for url in ("ftp://127.0.0.1/", "http://user:pw@127.0.0.1/"):
        with pytest.raises(de.InvalidArgument):
            check_public_url(url, field="f", policy=DEV)


class _Fixed:
    """A resolver that answers from a table (no DNS here)."""

    def __init__(self, table):
        self.table = table

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.table[host]
        ]

    async def close(self):
        pass


def test_at_connect_time_names_resolving_to_private_addresses_are_refused_and_mixed_answers_filtered():
    resolver = PublicOnlyResolver(
        _Fixed({"rebound.example": ["127.0.0.1"], "mixed.example": ["10.1.2.3", "93.184.216.34"]})
    )

    async def scenario():
        with pytest.raises(OSError, match="non-public addresses \\(127.0.0.1\\)"):
            await resolver.resolve("rebound.example", 443)
        return [r["host"] for r in await resolver.resolve("mixed.example", 443)]

    assert asyncio.run(scenario()) == ["93.184.216.34"]
    assert not is_public(ipaddress.ip_address("::ffff:10.0.0.1")) and is_public(ipaddress.ip_address("8.8.8.8"))
