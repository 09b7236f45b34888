"""HTTP clients that only reach the public internet (the connect-time half of smsgw.domain.public_urls).

aiohttp resolves a host name through the connector's resolver; this one drops every address
that is not public and fails when none is left, so a callback host that resolves to 127.0.0.1
or 169.254.169.254 (at connect time: DNS rebinding included) is never connected to. IP literals
never reach a resolver: callers check the URL itself with `check_public_url` before each request.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from smsgw.domain.public_urls import UrlPolicy, is_public


class PublicOnlyResolver(AbstractResolver):
    def __init__(self, inner: AbstractResolver | None = None):
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        public = [r for r in results if is_public(ipaddress.ip_address(r["host"]))]
        if not public:
            # errno + text: aiohttp shows the text (strerror) in the connection error it raises.
            raise OSError(
                errno.EACCES,
                f"{host} resolves only to non-public addresses "
                f"({', '.join(sorted({r['host'] for r in results}))}); refusing to connect",
            )
        return public

    async def close(self) -> None:
        await self._inner.close()


def guarded_connector(policy: UrlPolicy, **kwargs) -> aiohttp.TCPConnector:
    """A connector for customer-given URLs: public addresses only, unless the policy allows private ones."""
    if not policy.allow_private:
        kwargs["resolver"] = PublicOnlyResolver()
    return aiohttp.TCPConnector(**kwargs)
