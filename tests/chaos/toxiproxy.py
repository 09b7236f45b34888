"""Network faults on one TCP link, through Toxiproxy (Shopify's TCP proxy for fault tests).

Built once with `go install` into .cache/go-bin (the version pinned below), started on loopback,
driven over its HTTP API: a proxy per link, disabled to cut it (open connections closed, new ones
refused), and "toxics" for the rest (latency; `timeout` 0, which stops the data both ways and
leaves the connections open: a half-open link, as behind a dead NAT or a silent firewall).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from smsgw.brokers._base import free_port

VERSION = "v2.5.0"
MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
REPO = Path(__file__).resolve().parents[2]
GOBIN = REPO / ".cache" / "go-bin" / f"toxiproxy-{VERSION}"


class ToxiproxyUnavailable(RuntimeError):
    """Go is missing or the build failed: the network scenarios cannot run here."""


def build() -> Path:
    binary = GOBIN / "server"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise ToxiproxyUnavailable("Go is needed to build Toxiproxy (go install), and 'go' is not on PATH")
    env = dict(os.environ, GOBIN=str(GOBIN), GOFLAGS="-mod=mod")
    done = subprocess.run([go, "install", f"{MODULE}@{VERSION}"], env=env, capture_output=True, text=True)
    if done.returncode != 0 or not binary.exists():
        raise ToxiproxyUnavailable(f"go install {MODULE}@{VERSION} failed:\n{done.stderr[-2000:]}")
    return binary


@dataclass
class Link:
    """One proxied link: clients connect to `listen_port`, Toxiproxy forwards to `upstream_port`."""

    api: str
    name: str
    listen_port: int
    upstream_port: int

    async def _call(self, method: str, path: str, body: dict | None = None) -> None:
        async with aiohttp.ClientSession() as http, http.request(method, self.api + path, json=body) as response:
            if response.status >= 300:
                raise RuntimeError(f"toxiproxy {method} {path}: {response.status} {await response.text()}")

    async def create(self) -> None:
        await self._call(
            "POST",
            "/proxies",
            {
                "name": self.name,
                "listen": f"127.0.0.1:{self.listen_port}",
                "upstream": f"127.0.0.1:{self.upstream_port}",
            },
        )

    async def cut(self) -> None:
        """Closes every connection of the link and refuses new ones."""
        await self._call("POST", f"/proxies/{self.name}", {"enabled": False})

    async def restore(self) -> None:
        await self._call("POST", f"/proxies/{self.name}", {"enabled": True})

    async def add_toxic(self, name: str, kind: str, stream: str, **attributes: int) -> None:
        await self._call(
            "POST",
            f"/proxies/{self.name}/toxics",
            {"name": name, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes},
        )

    async def remove_toxic(self, name: str) -> None:
        await self._call("DELETE", f"/proxies/{self.name}/toxics/{name}")


class Toxiproxy:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        binary = await asyncio.to_thread(build)
        self.process = await asyncio.to_thread(self._spawn, binary)
        for _ in range(100):
            try:
                async with aiohttp.ClientSession() as http, http.get(self.api + "/version") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise ToxiproxyUnavailable(f"toxiproxy did not answer on {self.api}; see {self.log_path}")

    async def link(self, name: str, upstream_port: int, listen_port: int) -> Link:
        link = Link(self.api, name, listen_port, upstream_port)
        await link.create()
        return link

    def _spawn(self, binary: Path) -> subprocess.Popen:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [str(binary), "-host", "127.0.0.1", "-port", str(self.port)], stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
