"""`make chaos`: fault scenarios against the real processes under steady load, each judged by its
ledger (tests/chaos/ledger.py), on Apache Kafka: one node for the service faults, a three-node
cluster (replication factor 3, min.insync.replicas 2) for the broker faults, and Toxiproxy
(tests/chaos/toxiproxy.py, built with `go install`) between carrier-adapter and the SMSC for the
network faults.

    python -m tests.chaos [--profile short|full] [--only NAME ...] [--rate 20] [--seconds 30]

Prints a table: scenario, accepted, refused, lost, duplicated at the carrier (unreported, and
reported in doubt), stuck, final status not watched, final status not webhooked, how long the
fault lasted, and how long after it the carrier got the offered rate again. Exits 1 when any
scenario lost, duplicated without reporting it, left stuck or did not report a message.
Results and the commands: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
from aiokafka.admin import AIOKafkaAdminClient
from google.protobuf import duration_pb2

from smsgw.brokers import start_apache_kafka
from smsgw.brokers._base import free_port
from smsgw.brokers.kafka_cluster import KafkaCluster, start_kafka_cluster
from smsgw.brokers.node_network import NodeNetwork
from smsgw.brokers.node_network import available as node_network_unavailable
from smsgw.events.topics import MESSAGE_EVENTS
from smsgw.kafka.clients import ensure_topics
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_dev.platform import Platform, broker_env
from tests.chaos.ledger import HEADER, Load, SubmitCounter, Verdict, Watcher, WebhookReceiver, judge
from tests.chaos.toxiproxy import Link, Toxiproxy, ToxiproxyUnavailable
from tests.chaos.toxiproxy import build as toxiproxy_build
from tests.integration.helpers import scraped_metrics, send_request


@dataclass
class Context:
    platform: Platform
    cluster: KafkaCluster | None
    #: The link from carrier-adapter to the SMSC simulator, through Toxiproxy (Scenario.smsc_link).
    smsc_link: Link | None = None
    #: The tmpfs the services' state directories are on (Scenario.state_tmpfs_mib).
    state_disk: Path | None = None
    #: The link from every client to the broker, through Toxiproxy (Scenario.kafka_link).
    kafka_link: Link | None = None
    #: The account's webhook endpoint (set once the load is about to start).
    hooks: WebhookReceiver | None = None
    #: The tmpfs node 3's log directories are on (Scenario.broker_tmpfs_mib).
    broker_disk: Path | None = None
    #: The cluster's nodes each in a network namespace of its own (Scenario.node_network).
    network: NodeNetwork | None = None


Fault = Callable[[Context], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: Fault
    cluster: bool = False  # the three-node cluster (else one node)
    replicas: dict[str, int] = field(default_factory=dict)
    adapter_replicas: int = 1  # carrier-adapter processes (Platform.carrier_adapter_replicas)
    smsc_link: bool = False  # carrier-adapter reaches the SMSC through Toxiproxy (Context.smsc_link)
    #: Every client reaches the (one-node) broker through Toxiproxy (Context.kafka_link): the
    #: broker advertises the proxy's port, so connections after the bootstrap go through it too.
    kafka_link: bool = False
    short: bool = False  # in the short profile too
    #: Load for at least this long: a broker fault lasts 20-40 s, and the rate after it is measured.
    min_seconds: float = 0.0
    #: Every accepted message must end DELIVERED (the fault may not change any message's fate).
    every_delivered: bool = False
    #: The good calls made during the fault: their p99 latency must stay under this (ms).
    max_p99_during_ms: float | None = None
    #: Distinct recipients of the load (Load.recipients).
    recipients: int = 1
    #: Settings of every service process (Platform.extra_env).
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Settings of one process only (Platform.service_env).
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    #: The services' state directories (intake's message store, receipt's webhook store) on a
    #: tmpfs of this many MiB (Context.state_disk), 0: on the run directory's disk.
    state_tmpfs_mib: int = 0
    #: Only this service's state directory on that tmpfs (e.g. "receipt": its webhook store alone).
    state_tmpfs_of: str = ""
    #: Node 3 of the cluster keeps its log directories (its partitions' data and the metadata
    #: log) on a tmpfs of this many MiB (Context.broker_disk), 0: on the run directory's disk.
    broker_tmpfs_mib: int = 0
    #: Each node of the cluster in a network namespace of its own, so that its links to the other
    #: nodes and to the services can be cut (Context.network; Linux, root).
    node_network: bool = False


def kill9(name: str) -> Fault:
    async def fault(ctx: Context) -> None:
        await ctx.platform.restart(name, hard=True, timeout=120)

    return fault


def kill9_two_of_three(service: str) -> Fault:
    async def fault(ctx: Context) -> None:
        names = ctx.platform.replica_names(service)[1:]
        for name in names:
            ctx.platform.kill(name)
        for name in names:
            ctx.platform.start_service(name)
        await asyncio.gather(*(ctx.platform.wait_serving(name, 120) for name in names))

    return fault


def frozen(name: str, seconds: float) -> Fault:
    """SIGSTOP for longer than the group session (6 s under the Platform), then SIGCONT: the
    member's partitions move to the others; woken, it must not act on work it no longer owns."""

    async def fault(ctx: Context) -> None:
        process = ctx.platform.processes[name]
        process.signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            process.signal(signal.SIGCONT)

    return fault


async def _leader_of_message_events(ctx: Context) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=ctx.platform.bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([ctx.platform.topic_prefix + MESSAGE_EVENTS.name])
        return next(p["leader"] for p in described["partitions"] if p["partition"] == 0)
    finally:
        await admin.close()


async def leader_killed(ctx: Context) -> None:
    """kill -9 of the node leading message-events partition 0, started again 10 s later with its data."""
    assert ctx.cluster is not None
    leader = await _leader_of_message_events(ctx)
    ctx.cluster.kill(leader)
    await asyncio.sleep(10)
    await asyncio.to_thread(ctx.cluster.start, leader)


async def node_restarted(ctx: Context) -> None:
    """A controlled stop of one node (SIGTERM) for 10 s, then started again with its data."""
    assert ctx.cluster is not None
    await asyncio.to_thread(ctx.cluster.stop, 3)
    await asyncio.sleep(10)
    await asyncio.to_thread(ctx.cluster.start, 3)


def leader_cut_off(seconds: float, from_: str) -> Fault:
    """The node leading message-events partition 0 cut off (`from_`: "nodes", the other two; or
    "services", every client) for `seconds`, then joined again. Packets are dropped both ways and
    no connection is closed, as behind a failed switch port.

    Cut from the nodes, the node still answers the services but can neither replicate nor reach
    the controller quorum: after the broker session timeout the others fence it and move its
    leaderships; a write it took meanwhile never reached two replicas, so it was never
    acknowledged. Cut from the services, the cluster sees nothing wrong and the node keeps its
    leaderships: writes and reads of its partitions wait until the link is back."""

    async def fault(ctx: Context) -> None:
        assert ctx.network is not None
        node = await _leader_of_message_events(ctx)
        print(f"    node {node} (leader of message-events 0) cut off from the {from_}", flush=True)
        cut = ctx.network.cut_from_nodes if from_ == "nodes" else ctx.network.cut_from_clients
        await asyncio.to_thread(cut, node)
        try:
            await asyncio.sleep(seconds)
        finally:
            await asyncio.to_thread(ctx.network.restore, node)
        leader = await _leader_of_message_events(ctx)
        print(f"    joined again; message-events 0 is led by node {leader} now", flush=True)

    return fault


async def all_nodes_restarted(ctx: Context) -> None:
    """Every node stopped (no writes possible: intake must answer UNAVAILABLE), 5 s, all started."""
    assert ctx.cluster is not None
    for node_id in ctx.cluster.nodes:
        await asyncio.to_thread(ctx.cluster.stop, node_id)
    await asyncio.sleep(5)
    await asyncio.to_thread(ctx.cluster.start_all)


LinkOf = Callable[[Context], Link | None]
BOTH_WAYS = ("upstream", "downstream")


def _link(which: LinkOf, ctx: Context) -> Link:
    link = which(ctx)
    assert link is not None, "the scenario has no such link (Scenario.smsc_link / kafka_link)"
    return link


def link_cut(which: LinkOf, seconds: float) -> Fault:
    """Every connection of the link closed, and new ones refused, for `seconds`."""

    async def fault(ctx: Context) -> None:
        link = _link(which, ctx)
        await link.cut()
        await asyncio.sleep(seconds)
        await link.restore()

    return fault


def link_half_open(which: LinkOf, seconds: float) -> Fault:
    """The link carries no data either way and its connections stay open (a dead NAT entry, a
    silent firewall): requests on the wire get no answer, only timeouts tell the clients."""

    async def fault(ctx: Context) -> None:
        link = _link(which, ctx)
        for stream in BOTH_WAYS:
            await link.add_toxic(f"silent-{stream}", "timeout", stream, timeout=0)
        await asyncio.sleep(seconds)
        for stream in BOTH_WAYS:
            await link.remove_toxic(f"silent-{stream}")

    return fault


def link_slow(which: LinkOf, seconds: float, latency_ms: int, streams: tuple[str, ...]) -> Fault:
    """Every byte of `streams` `latency_ms` (±a quarter) late for `seconds`."""

    async def fault(ctx: Context) -> None:
        link = _link(which, ctx)
        for stream in streams:
            await link.add_toxic(f"slow-{stream}", "latency", stream, latency=latency_ms, jitter=latency_ms // 4)
        await asyncio.sleep(seconds)
        for stream in streams:
            await link.remove_toxic(f"slow-{stream}")

    return fault


def _smsc(ctx: Context) -> Link | None:
    return ctx.smsc_link


def _kafka(ctx: Context) -> Link | None:
    return ctx.kafka_link


def smsc_link_cut(seconds: float) -> Fault:
    """carrier-adapter to the SMSC: submits on the wire are in doubt, binds fail until it is back."""
    return link_cut(_smsc, seconds)


def smsc_link_half_open(seconds: float) -> Fault:
    return link_half_open(_smsc, seconds)


def smsc_link_slow(seconds: float, latency_ms: int) -> Fault:
    """Every byte from the SMSC late: answers and receipts slow down."""
    return link_slow(_smsc, seconds, latency_ms, ("downstream",))


def kafka_link_cut(seconds: float) -> Fault:
    """Every service to the broker: no one reads or writes the log (intake answers UNAVAILABLE),
    group sessions expire."""
    return link_cut(_kafka, seconds)


def kafka_link_half_open(seconds: float) -> Fault:
    return link_half_open(_kafka, seconds)


def kafka_link_slow(seconds: float, latency_ms: int) -> Fault:
    return link_slow(_kafka, seconds, latency_ms, BOTH_WAYS)


async def smsc_throttling_storm(ctx: Context) -> None:
    """The SMSC answers every submit_sm ESME_RTHROTTLED for 15 s (its control API's /throttle)."""
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{ctx.platform.smsc_control_port}/throttle"
        async with http.post(url, json={"every": 1, "seconds": 15}) as response:
            assert response.status == 200, await response.text()
    await asyncio.sleep(15)


async def submit_responses_lost(ctx: Context) -> None:
    """For 15 s the SMSC takes every 10th submit_sm and never answers it: each times out at
    carrier-adapter (10 s), in doubt; the carrier's policy (retry) sends it again, reported. Each
    holds the later messages to its recipient (submitted in order), not the others'."""
    url = f"http://127.0.0.1:{ctx.platform.smsc_control_port}/mute"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"every": 10, "seconds": 15}) as response:
            assert response.status == 200, await response.text()
        await asyncio.sleep(15)
        async with http.get(url) as response:
            muted = (await response.json())["muted"]
    assert muted > 0, "the SMSC answered every submit: the fault missed"
    print(f"    the SMSC took {muted} submits and never answered them", flush=True)


async def receipts_disordered(ctx: Context) -> None:
    """For 20 s the SMSC sends each receipt twice and a stale ENROUTE after it, every 4th before the
    submit_sm_resp that tells its id, every 10th beside one for an id it never issued. Fails unless
    the SMSC sent each kind and receipt saw the early and the unknown ones."""
    url = f"http://127.0.0.1:{ctx.platform.smsc_control_port}/disorder-receipts"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"seconds": 20}) as response:
            assert response.status == 200, await response.text()
        await asyncio.sleep(21)
        async with http.get(url) as response:
            sent = await response.json()
    assert all(sent[kind] > 0 for kind in ("early", "copies", "stale", "unknown_ids")), sent
    seen: dict[str, float] = {}
    for _ in range(60):  # orphans are declared after the carrier's wait for a late submit
        metrics = await scraped_metrics(ctx.platform.metrics_port_of("receipt"))
        seen = {
            kind: sum(v for (name, _labels), v in metrics.items() if name == f"smsgw_receipts_{kind}_total")
            for kind in ("held_early", "orphaned")
        }
        if seen["held_early"] > 0 and seen["orphaned"] >= sent["unknown_ids"]:
            break
        await asyncio.sleep(1.0)
    assert seen["held_early"] > 0 and seen["orphaned"] >= sent["unknown_ids"], (sent, seen)
    print(f"    the SMSC sent {sent}; receipt counted {seen}", flush=True)


def disk_full(seconds: float) -> Fault:
    """The disk under the services' state (intake's message store, receipt's webhook store) filled
    to the last byte for `seconds`, then the filler removed."""

    async def fault(ctx: Context) -> None:
        assert ctx.state_disk is not None
        filler = ctx.state_disk / "filler"
        filled = await asyncio.to_thread(_fill, filler)
        print(f"    disk full: {filled / 2**20:.1f} MiB of filler", flush=True)
        await asyncio.sleep(seconds)
        filler.unlink()
        metrics = await scraped_metrics(ctx.platform.metrics_port_of("intake"))
        failures = metrics.get(("smsgw_projection_write_failures_total", frozenset()), 0)
        assert failures > 0, "the full disk did not stop intake's projector: the fault missed"
        print(f"    intake's projector failed {failures:.0f} batches while the disk was full", flush=True)
        receipt = await scraped_metrics(ctx.platform.metrics_port_of("receipt"))
        refused = receipt.get(("smsgw_webhook_store_failures_total", frozenset()), 0)
        print(f"    receipt's webhook store refused {refused:.0f} pending rows meanwhile (its feed held)", flush=True)

    return fault


def webhook_store_full(seconds: float) -> Fault:
    """receipt's state directory alone (its webhook store) on a full disk for `seconds` while the
    account's webhook endpoint is down, so that the store has to grow (webhooks waiting for their
    retry, letters that found the endpoint's queue full); then room again and the endpoint back.
    Fails unless the store refused writes meanwhile (the fault reached it)."""

    async def fault(ctx: Context) -> None:
        assert ctx.state_disk is not None and ctx.hooks is not None
        await ctx.hooks.stop()
        filler = ctx.state_disk / "filler"
        filled = await asyncio.to_thread(_fill, filler)
        print(f"    endpoint down, receipt's disk full: {filled / 2**20:.1f} MiB of filler", flush=True)
        try:
            await asyncio.sleep(seconds)
        finally:
            filler.unlink()
            await ctx.hooks.start()
        receipt = await scraped_metrics(ctx.platform.metrics_port_of("receipt"))
        refused = receipt.get(("smsgw_webhook_store_failures_total", frozenset()), 0)
        dead = sum(v for (name, _), v in receipt.items() if name == "smsgw_webhooks_dead_lettered_total")
        print(
            f"    the webhook store refused {refused:.0f} writes; {dead:.0f} webhooks dead-lettered so far", flush=True
        )
        assert refused > 0, "the webhook store never needed the full disk: the fault missed"

    return fault


BROKER_ON_TMPFS = 3  # the node whose disk fills (Scenario.broker_tmpfs_mib)


def broker_disk_full(seconds: float) -> Fault:
    """The disk under one node's log directories filled to the last byte. The node cannot append
    to its replicas (RF 3, two in sync suffice: the cluster goes on without it) and stops itself;
    after `seconds` the filler is removed and the node started again, as Kubernetes restarts a pod
    once its volume has room, and it catches up."""

    async def fault(ctx: Context) -> None:
        assert ctx.broker_disk is not None and ctx.cluster is not None
        filler = ctx.broker_disk / "filler"
        filled = await asyncio.to_thread(_fill, filler)
        print(f"    broker {BROKER_ON_TMPFS}'s disk full: {filled / 2**20:.1f} MiB of filler", flush=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline and ctx.cluster.alive(BROKER_ON_TMPFS):
            await asyncio.sleep(0.2)
        stopped_after = seconds - max(0.0, deadline - loop.time())
        alive = ctx.cluster.alive(BROKER_ON_TMPFS)
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        filler.unlink()
        log = ctx.cluster.log_tail(BROKER_ON_TMPFS, 400)
        failed = [line for line in log.splitlines() if "No space left on device" in line or "offline" in line.lower()]
        assert not alive or failed, "the full disk did not stop the node's writes: the fault missed"
        print(
            f"    broker {BROKER_ON_TMPFS}: {'still running' if alive else f'stopped itself after {stopped_after:.1f} s'}; "
            f"{len(failed)} log lines of the failed disk, e.g. {failed[0][:160] if failed else ''!r}",
            flush=True,
        )
        if alive:
            # Up with a failed log directory: restarted, as an operator (or its liveness probe) would.
            await asyncio.to_thread(ctx.cluster.stop, BROKER_ON_TMPFS)
        await asyncio.to_thread(ctx.cluster.start, BROKER_ON_TMPFS)

    return fault


def _fill(path: Path) -> int:
    written = 0
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as out:
        while True:
            try:
                written += out.write(chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return written
                chunk = chunk[: len(chunk) // 2]


def mount_tmpfs(where: Path, mib: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(where)], check=True, capture_output=True)


def unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def can_mount() -> str | None:
    """None when this process can mount a tmpfs (root in its mount namespace), else why not."""
    with tempfile.TemporaryDirectory(prefix="smsgw-chaos-mount-") as probe:
        try:
            mount_tmpfs(Path(probe), 1)
        except (subprocess.CalledProcessError, FileNotFoundError) as error:
            return f"cannot mount a tmpfs here ({error})"
        unmount(Path(probe))
    return None


FLOOD_ACCOUNT = (("x-smsgw-account", "acct-flood"),)


async def malformed_flood(ctx: Context) -> None:
    """For 20 s, beside the good load: 4 callers of invalid SendMessage requests (each as fast as
    intake answers), 2 writers of random bytes on new TCP connections to intake's port, and the
    SMSC sending 25 deliver_sm of broken content a second. Fails unless every bad call was refused
    INVALID_ARGUMENT and the SMSC's broken PDUs went out; the good calls' latency is judged by the
    scenario's bound (Scenario.max_p99_during_ms)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + 20
    counts: Counter[str] = Counter()
    bad = [
        send_request(to="not-a-number", body="x"),
        send_request(body=""),
        send_request(body="x" * 5000),
        send_request(to="+1", body="x"),
        send_request(body="x", validity_period=duration_pb2.Duration(seconds=-5)),
    ]

    async def bad_calls() -> None:
        async with grpc.aio.insecure_channel(ctx.platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            n = 0
            while loop.time() < until:
                n += 1
                try:
                    await stub.SendMessage(bad[n % len(bad)], metadata=FLOOD_ACCOUNT, timeout=5)
                    counts["accepted"] += 1
                except grpc.aio.AioRpcError as error:
                    counts[error.code().name] += 1

    async def junk_bytes() -> None:
        host, port = ctx.platform.intake_address.rsplit(":", 1)
        while loop.time() < until:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(os.urandom(4096))
                await writer.drain()
                await asyncio.wait_for(reader.read(1024), 1.0)
                writer.close()
                counts["junk connections"] += 1
            except (OSError, TimeoutError):
                counts["junk connections cut"] += 1

    async def smsc_garbage() -> None:
        url = f"http://127.0.0.1:{ctx.platform.smsc_control_port}/malformed"
        async with aiohttp.ClientSession() as http:
            while loop.time() < until:
                async with http.post(url, json={"count": 25}) as response:
                    assert response.status == 200, await response.text()
                    counts["malformed deliver_sm"] = (await response.json())["answered"]
                await asyncio.sleep(1.0)

    await asyncio.gather(*(bad_calls() for _ in range(4)), junk_bytes(), junk_bytes(), smsc_garbage())
    print(f"    flood: {dict(counts)}", flush=True)
    assert counts["accepted"] == 0 and counts["INVALID_ARGUMENT"] > 0, counts
    assert counts["malformed deliver_sm"] > 0 and counts["junk connections"] + counts["junk connections cut"] > 0, (
        counts
    )


async def adapters_scaled_out_and_in(ctx: Context) -> None:
    """A third carrier-adapter replica added under load, then stopped (SIGTERM) 5 s after it
    serves: the dispatch group rebalances twice while submits are on the wire."""
    name = await ctx.platform.add_replica("carrier-adapter", 120)
    await asyncio.sleep(5)
    await asyncio.to_thread(ctx.platform.remove_replica, name)


async def scaled_out_and_in(ctx: Context) -> None:
    """A third replica of routing and of receipt added under load, then the second of each stopped
    (SIGTERM, as a scale-in does): two rebalances of each group while messages flow."""
    await asyncio.gather(ctx.platform.add_replica("routing", 120), ctx.platform.add_replica("receipt", 120))
    await asyncio.sleep(5)
    for name in ("routing-2", "receipt-2"):
        await asyncio.to_thread(ctx.platform.remove_replica, name)


SCENARIOS = (
    Scenario("kill -9 routing", kill9("routing"), short=True),
    Scenario("kill -9 carrier-adapter", kill9("carrier-adapter")),
    Scenario("kill -9 receipt", kill9("receipt")),
    Scenario("kill -9 intake", kill9("intake")),
    Scenario("kill -9 2 of 3 routing replicas", kill9_two_of_three("routing"), replicas={"routing": 3}),
    Scenario("routing replica frozen 15 s (SIGSTOP)", frozen("routing", 15), replicas={"routing": 2}),
    Scenario("kill -9 2 of 3 carrier-adapter replicas", kill9_two_of_three("carrier-adapter"), adapter_replicas=3),
    Scenario("carrier-adapter replica frozen 15 s (SIGSTOP)", frozen("carrier-adapter-2", 15), adapter_replicas=2),
    Scenario("SMSC link cut 10 s", smsc_link_cut(10), smsc_link=True),
    Scenario("SMSC link half-open 20 s", smsc_link_half_open(20), smsc_link=True, min_seconds=45),
    Scenario("SMSC link 500 ms slower for 20 s", smsc_link_slow(20, 500), smsc_link=True, min_seconds=45),
    Scenario("SMSC unreachable 60 s", smsc_link_cut(60), smsc_link=True, min_seconds=90),
    Scenario("Kafka link cut 10 s", kafka_link_cut(10), kafka_link=True, min_seconds=45),
    Scenario("Kafka link half-open 10 s", kafka_link_half_open(10), kafka_link=True, min_seconds=45),
    Scenario("Kafka link 200 ms slower each way for 20 s", kafka_link_slow(20, 200), kafka_link=True, min_seconds=45),
    Scenario("SMSC throttling storm 15 s", smsc_throttling_storm, min_seconds=45),
    Scenario(
        "every 10th submit response lost for 15 s (100 recipients)",
        submit_responses_lost,
        min_seconds=45,
        every_delivered=True,
        recipients=100,
    ),
    Scenario(
        "receipts duplicated, stale, early and unknown 20 s", receipts_disordered, min_seconds=45, every_delivered=True
    ),
    Scenario(
        "disk full under the stores 15 s", disk_full(15), state_tmpfs_mib=64, min_seconds=45, every_delivered=True
    ),
    Scenario(
        "receipt's webhook store on a full disk, the endpoint down, 15 s",
        webhook_store_full(15),
        state_tmpfs_mib=16,
        state_tmpfs_of="receipt",
        min_seconds=45,
        every_delivered=True,
    ),
    Scenario("malformed requests and PDUs flood 20 s", malformed_flood, min_seconds=45, max_p99_during_ms=1000),
    Scenario(
        "a carrier-adapter replica added and removed",
        adapters_scaled_out_and_in,
        adapter_replicas=2,
        recipients=100,
    ),
    Scenario("replicas added and removed (routing, receipt)", scaled_out_and_in, replicas={"routing": 2, "receipt": 2}),
    Scenario("Kafka: partition leader killed", leader_killed, cluster=True, short=True, min_seconds=60),
    Scenario("Kafka: a node stopped and restarted", node_restarted, cluster=True, min_seconds=60),
    Scenario("Kafka: every node restarted", all_nodes_restarted, cluster=True, min_seconds=60),
    Scenario(
        "Kafka: the leader cut off from the other nodes 20 s",
        leader_cut_off(20, "nodes"),
        cluster=True,
        node_network=True,
        min_seconds=60,
    ),
    Scenario(
        "Kafka: the leader cut off from the services 20 s",
        leader_cut_off(20, "services"),
        cluster=True,
        node_network=True,
        min_seconds=60,
    ),
    Scenario(
        "Kafka: one node's disk full 15 s",
        broker_disk_full(15),
        cluster=True,
        broker_tmpfs_mib=256,
        min_seconds=60,
        every_delivered=True,
    ),
)


async def supervise(platform: Platform, stop: asyncio.Event, restarts: Counter[str]) -> None:
    """Starts a service process again when it exits, as Kubernetes does (restartPolicy Always): a
    service ends itself on an error it cannot recover from in place (a broker error in its loop,
    a producer the brokers no longer know) and relies on that."""
    while not stop.is_set():
        for name in platform.service_processes:
            process = platform.processes.get(name)
            if process is not None and not process.running:
                restarts[name] += 1
                platform.start_service(name)
        await asyncio.sleep(1.0)


@asynccontextmanager
async def platform_for(scenario: Scenario, run_dir: Path, prefix: str) -> AsyncIterator[Context]:
    """The broker (one node, or the cluster), Toxiproxy's links and the platform the scenario asks
    for, started; all stopped on the way out."""
    cluster = toxiproxy = link_port = kafka_link = None
    if scenario.smsc_link or scenario.kafka_link:
        run_dir.mkdir(parents=True, exist_ok=True)
        toxiproxy = Toxiproxy(run_dir / "toxiproxy.log")
        await toxiproxy.start()
    if scenario.smsc_link:
        link_port = free_port()
    broker_disk = None
    if scenario.cluster and scenario.broker_tmpfs_mib:
        broker_disk = run_dir / "kafka" / f"node-{BROKER_ON_TMPFS}" / "kraft-logs"
        mount_tmpfs(broker_disk, scenario.broker_tmpfs_mib)
    network = None
    if scenario.node_network:
        network = await asyncio.to_thread(NodeNetwork((1, 2, 3)).create)
    if scenario.cluster:
        try:
            cluster = await asyncio.to_thread(start_kafka_cluster, 3, root=run_dir / "kafka", network=network)
        except BaseException:
            if network is not None:
                network.destroy()
            raise
        bootstrap, stop_broker = cluster.bootstrap, cluster.stop_all
        # As production makes them (k8s/base/kafka-topics.yaml): three replicas, two in sync.
        await ensure_topics(bootstrap, prefix, replication_factor=3)
    elif toxiproxy is not None and scenario.kafka_link:
        kafka_port, proxy_port = free_port(), free_port()
        kafka_link = await toxiproxy.link("kafka", kafka_port, proxy_port)
        broker = await asyncio.to_thread(
            start_apache_kafka,
            port=kafka_port,
            extra_config={"advertised.listeners": f"PLAINTEXT://127.0.0.1:{proxy_port}"},
        )
        bootstrap, stop_broker = f"127.0.0.1:{proxy_port}", broker.stop
    else:
        broker = await asyncio.to_thread(start_apache_kafka)
        bootstrap, stop_broker = broker.bootstrap, broker.stop
    platform = Platform(
        bootstrap=bootstrap,
        idempotence=True,
        run_dir=run_dir,
        topic_prefix=prefix,
        broker_env=broker_env("kafka"),
        auth="trusted-header",
        tls=False,
        android_phone=False,
        replicas=scenario.replicas,
        carrier_adapter_replicas=scenario.adapter_replicas,
        smsc_connect_port=link_port,
        extra_env=dict(scenario.extra_env),
        service_env={name: dict(env) for name, env in scenario.service_env.items()},
    )
    state_disk = platform.state_dir / scenario.state_tmpfs_of if scenario.state_tmpfs_of else platform.state_dir
    if scenario.state_tmpfs_mib:
        mount_tmpfs(state_disk, scenario.state_tmpfs_mib)
    try:
        link = None
        if toxiproxy is not None and link_port is not None:
            assert platform.smsc_port is not None
            link = await toxiproxy.link("smsc", platform.smsc_port, link_port)
        await platform.start(timeout=180)
        yield Context(
            platform,
            cluster,
            link,
            state_disk if scenario.state_tmpfs_mib else None,
            kafka_link,
            broker_disk=broker_disk,
            network=network,
        )
    finally:
        platform.stop()
        if scenario.state_tmpfs_mib:
            unmount(state_disk)
        if toxiproxy is not None:
            toxiproxy.stop()
        await asyncio.to_thread(stop_broker)
        if network is not None:
            network.destroy()
        if broker_disk is not None:
            unmount(broker_disk)


async def run(scenario: Scenario, root: Path, rate: float, seconds: float) -> Verdict:
    prefix = f"chaos{uuid.uuid4().hex[:6]}."
    run_dir = root / scenario.name.replace(" ", "-").replace("/", "-")
    async with platform_for(scenario, run_dir, prefix) as ctx:
        platform = ctx.platform
        seconds = max(seconds, scenario.min_seconds)
        load = Load(
            tag=f"chaos-{prefix}",
            rate=rate,
            count=int(rate * seconds),
            seconds=seconds,
            recipients=scenario.recipients,
        )
        watcher, counter = Watcher(), SubmitCounter(platform.smsc_control_port or 0)
        hooks = ctx.hooks = WebhookReceiver(platform.account_webhook_port)
        await hooks.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            restarts: Counter[str] = Counter()
            background = [
                asyncio.create_task(watcher.run(channel, stop)),
                asyncio.create_task(counter.run(stop)),
                asyncio.create_task(supervise(platform, stop, restarts)),
            ]
            await asyncio.sleep(1.0)  # the watcher is listening before the first message
            sending = asyncio.create_task(load.run(api_grpc.MessagingServiceStub(channel)))
            await asyncio.sleep(min(8.0, seconds / 3))
            fault_start = loop.time()
            await scenario.fault(ctx)
            fault_end = loop.time()
            await sending
            verdict = await judge(
                scenario.name,
                platform,
                load,
                watcher,
                hooks,
                counter,
                (fault_start, fault_end),
                drain_seconds=120,
                every_delivered=scenario.every_delivered,
                max_p99_during_ms=scenario.max_p99_during_ms,
            )
            if restarts:
                verdict.details.append(f"exited and started again (as Kubernetes would): {dict(restarts)}")
            stop.set()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await hooks.stop()
        return verdict


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("short", "full"), default="full")
    parser.add_argument("--only", action="append", default=[], help="scenarios whose name contains this")
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second offered")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the load lasts")
    parser.add_argument("--keep", type=Path, help="run under this directory and keep it (the services' logs)")
    args = parser.parse_args(argv)
    chosen = [
        s
        for s in SCENARIOS
        if (args.profile == "full" or s.short) and (not args.only or any(o in s.name for o in args.only))
    ]
    if any(s.smsc_link or s.kafka_link for s in chosen):
        try:
            await asyncio.to_thread(toxiproxy_build)
        except ToxiproxyUnavailable as error:
            print(f"skipping the network scenarios: {error}", flush=True)
            chosen = [s for s in chosen if not (s.smsc_link or s.kafka_link)]
    if any(s.state_tmpfs_mib or s.broker_tmpfs_mib for s in chosen) and (why := can_mount()):
        print(f"skipping the disk-full scenario: {why}", flush=True)
        chosen = [s for s in chosen if not (s.state_tmpfs_mib or s.broker_tmpfs_mib)]
    if any(s.node_network for s in chosen) and (why := await asyncio.to_thread(node_network_unavailable)):
        print(f"skipping the scenarios that cut links inside the cluster: {why}", flush=True)
        chosen = [s for s in chosen if not s.node_network]
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="smsgw-chaos-") as temporary:
        root = args.keep or temporary
        for scenario in chosen:
            started = time.monotonic()
            print(f"--- {scenario.name} ...", flush=True)
            verdict = await run(scenario, Path(root), args.rate, args.seconds)
            verdicts.append(verdict)
            print(verdict.row(), flush=True)
            for line in verdict.details:
                print(f"    {line}", flush=True)
            print(f"    ({time.monotonic() - started:.0f} s)", flush=True)
    print(
        f"\noffered {args.rate:g} messages/s for {args.seconds:g} s per scenario (longer where a "
        "scenario needs it: 45 s for the half-open and slow SMSC links and the throttling storm, 60 s for the "
        "broker faults, 90 s for the SMSC unreachable 60 s)\n"
    )
    print(HEADER)
    for verdict in verdicts:
        print(verdict.row())
    return 0 if all(v.ok for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
