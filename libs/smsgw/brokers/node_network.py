"""Each node of a `KafkaCluster` in a network namespace of its own, joined by a bridge, so that
the network between two nodes, or between the services and one node, can be cut or slowed on
its own: on one loopback address every node and every client share a single link, and a proxy
cannot sit between the nodes (a follower fetches from the leader's advertised address, the same
one the clients use).

    node n    namespace smsgw-<tag>-<n>, interface eth0, address 10.77.<subnet>.<10 + n>
    bridge    sgb<tag> in the root namespace, 10.77.<subnet>.1: the address the services and
              the tests (in the root namespace) reach the nodes from

A cut is `tc` rules on both ends of the node's link (its own interface inside its namespace,
and the bridge's end of it): packets to and from the cut addresses are classified into an `htb`
class whose queue holds no packet (pfifo, limit 0), so they are dropped and the connections stay open,
as behind a failed switch port (each side learns only from its own timeouts). No rule needs a
kernel module beyond htb and u32 (this machine has no netem and no tc actions). Needs Linux,
root and iproute2 (`ip`, `tc`); `available()` says whether this machine has them.
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["NetworkUnavailable", "NodeNetwork", "available"]


class NetworkUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, no iproute2, a restricted container)."""


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """Runs one iproute2 command; a failure is NetworkUnavailable with its message."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise NetworkUnavailable(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["ip", *args], check)


def available() -> str | None:
    """None when namespaces, veth pairs and tc work here; else why not."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    probe = f"smsgw-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except NetworkUnavailable as error:
        return f"cannot create a network namespace (root needed): {error}"
    _ip("netns", "del", probe, check=False)
    return None


def _free_subnet() -> int:
    """A /24 of 10.77.0.0/16 that no interface or route of this machine uses."""
    used = _ip("-o", "route", "show", "table", "all").stdout + _ip("-o", "addr").stdout
    for _ in range(100):
        subnet = secrets.randbelow(250) + 1
        if f"10.77.{subnet}." not in used:
            return subnet
    raise NetworkUnavailable("no free 10.77.x.0/24 subnet")


@dataclass
class NodeNetwork:
    nodes: tuple[int, ...]
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    subnet: int = 0
    created: bool = False
    #: Per node, whether filters are in force (what `restore` removes).
    _cut: dict[int, bool] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"sgb{self.tag}"

    @property
    def clients(self) -> str:
        """The address the root namespace (services, tests) reaches the nodes from."""
        return f"10.77.{self.subnet}.1"

    def address(self, node: int) -> str:
        return f"10.77.{self.subnet}.{10 + node}"

    def namespace(self, node: int) -> str:
        return f"smsgw-{self.tag}-{node}"

    def host_end(self, node: int) -> str:
        """The bridge's end of the node's veth pair (what the node receives leaves through it)."""
        return f"sgh{self.tag}{node}"

    def command(self, node: int) -> list[str]:
        """The prefix that runs a program inside the node's namespace."""
        return ["ip", "netns", "exec", self.namespace(node)]

    def create(self) -> NodeNetwork:
        reason = available()
        if reason is not None:
            raise NetworkUnavailable(reason)
        self.subnet = self.subnet or _free_subnet()
        self.created = True  # from here on, destroy() removes whatever was made
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.clients}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for node in self.nodes:
            ns, host_end = self.namespace(node), self.host_end(node)
            _ip("netns", "add", ns)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", host_end, "master", self.bridge)
            _ip("link", "set", host_end, "up")
            _ip("-n", ns, "addr", "add", f"{self.address(node)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            for end in self._ends(node):
                end.add_black_hole()
            self._cut[node] = False
        return self

    def destroy(self) -> None:
        """Removes the namespaces (their veth pairs go with them) and the bridge."""
        if not self.created:
            return
        for node in self.nodes:
            # The pair goes with its host end at once; with the namespace only once the kernel
            # has let go of the namespace (sockets still closing hold it).
            _ip("link", "del", self.host_end(node), check=False)
            _ip("netns", "del", self.namespace(node), check=False)
        _ip("link", "del", self.bridge, check=False)
        self.created = False

    # -- faults ----------------------------------------------------------------------------
    def cut(self, node: int, peers: Iterable[str]) -> None:
        """Nothing passes between `node` and these addresses, either way; the connections stay
        open (no reset), so each side learns only from its own timeouts."""
        sends, receives = self._ends(node)
        for address in peers:
            ipaddress.ip_address(address)  # a typo must not become a filter that matches nothing
            sends.drop("dst", address)
            receives.drop("src", address)
            self._cut[node] = True

    def cut_from_nodes(self, node: int) -> None:
        """The node goes on answering the services but reaches no other node (nor they it)."""
        self.cut(node, [self.address(other) for other in self.nodes if other != node])

    def cut_from_clients(self, node: int) -> None:
        """The services reach the node no longer; the nodes still reach each other."""
        self.cut(node, [self.clients])

    def restore(self, node: int) -> None:
        """Removes every cut of the node."""
        if self._cut.get(node):
            for end in self._ends(node):
                end.undrop()
            self._cut[node] = False

    def _ends(self, node: int) -> tuple[_LinkEnd, _LinkEnd]:
        """The node's link: its eth0 (what it sends), the bridge's end (what it receives)."""
        return (
            _LinkEnd(self.command(node), "eth0"),
            _LinkEnd([], self.host_end(node)),
        )


@dataclass(frozen=True)
class _LinkEnd:
    """One interface's egress: an htb root whose default class is unlimited, and class 1:20 with
    a queue of no packet (pfifo limit 0: every packet is dropped), where the filters send what is
    to be dropped (a class of a low rate lets its burst through)."""

    prefix: list[str]
    device: str

    def add_black_hole(self) -> None:
        self._tc("qdisc", "add", "dev", self.device, "root", "handle", "1:", "htb", "default", "10", "r2q", "100000")
        self._tc("class", "add", "dev", self.device, "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit")
        self._tc(
            "class",
            "add",
            "dev",
            self.device,
            "parent",
            "1:",
            "classid",
            "1:20",
            "htb",
            "rate",
            "8bit",
            "ceil",
            "8bit",
            "quantum",
            "1514",
        )
        self._tc("qdisc", "add", "dev", self.device, "parent", "1:20", "handle", "20:", "pfifo", "limit", "0")

    def drop(self, direction: str, address: str) -> None:
        self._tc("filter", "add", "dev", self.device, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                 "match", "ip", direction, f"{address}/32", "flowid", "1:20")  # fmt: skip

    def undrop(self) -> None:
        self._tc("filter", "del", "dev", self.device, "parent", "1:")

    def _tc(self, *args: str) -> None:
        _run([*self.prefix, "tc", *args])
