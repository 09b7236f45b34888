"""The network the chaos suite cuts inside a Kafka cluster (smsgw.brokers.node_network): nodes in
namespaces of their own on a bridge, links cut one by one, nothing left behind."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from smsgw.brokers.node_network import NodeNetwork, available

pytestmark = pytest.mark.skipif(bool(available()), reason=f"no network namespaces here: {available()}")

ECHO = """
import socket, sys, threading
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], 9092))
server.listen()
print("listening", flush=True)
def echo(connection):
    while data := connection.recv(100):
        connection.sendall(data)
while True:
    threading.Thread(target=echo, args=(server.accept()[0],), daemon=True).start()
"""

PROBE = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], 9092), timeout=1.5)
    c.sendall(b"ping")
    print(c.recv(10).decode())
except OSError as error:
    print(type(error).__name__)
"""


def _probe(network: NodeNetwork, target: int, from_node: int | None = None) -> str:
    prefix = network.command(from_node) if from_node is not None else []
    argv = [*prefix, sys.executable, "-c", PROBE, network.address(target)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True).stdout.strip()


def _leftovers(network: NodeNetwork) -> list[str]:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [
        name
        for name in (network.bridge, *(f"sgh{network.tag}{n}" for n in network.nodes))
        if f" {name}:" in links or f" {name}@" in links
    ] + [network.namespace(n) for n in network.nodes if network.namespace(n) in spaces]


def test_links_are_cut_one_by_one_and_an_open_connection_resumes():
    network = NodeNetwork((1, 2)).create()
    server = None
    try:
        server = subprocess.Popen(
            [*network.command(1), sys.executable, "-c", ECHO, network.address(1)], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        held = socket.create_connection((network.address(1), 9092), timeout=2)
        held.sendall(b"a")
        assert held.recv(10) == b"a"
        assert _probe(network, 1) == "ping" and _probe(network, 1, from_node=2) == "ping"

        network.cut_from_nodes(1)
        assert _probe(network, 1) == "ping", "the services still reach a node cut off from the others"
        assert _probe(network, 1, from_node=2) == "TimeoutError", "a cut drops packets, it refuses nothing"
        network.restore(1)

        network.cut_from_clients(1)
        assert _probe(network, 1, from_node=2) == "ping", "the nodes still reach a node cut off from the services"
        assert _probe(network, 1) == "TimeoutError"
        held.settimeout(1.0)
        held.sendall(b"b")
        with pytest.raises(TimeoutError):
            held.recv(10)  # open, and nothing comes through

        started = time.monotonic()
        network.restore(1)
        held.settimeout(10.0)
        assert held.recv(10) == b"b", "the connection resumes once the link is back (TCP retransmits)"
        assert time.monotonic() - started < 10
        assert _probe(network, 1) == "ping" and _probe(network, 1, from_node=2) == "ping"
        held.close()
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        network.destroy()
    assert _leftovers(network) == []
