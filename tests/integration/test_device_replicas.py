"""Android phones with two carrier-adapter replicas: the whole platform as processes, a real
broker, the public API, and simulated phones (in this process, so every command they got
and every SMS their radio sent can be counted) connected to the replica the test chooses.

Replica A is "carrier-adapter", B is "carrier-adapter-2"; they share the dispatch
partitions, so some commands for a phone on B are handled by A and go through B's
DeviceRelayService. Presence is refreshed every second here (stale after 3 s).

Then replicas' Android side in this process against the broker: a replica's phones go stale
when it dies without a tombstone; a replica taking over a dead one's partition keeps what
its phone accepted with that phone; and the relay alone, for its authentication and for
what a lost answer means.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter

import grpc
import pytest

from smsgw.brokers._base import free_port
from smsgw.domain import status as st
from smsgw.events.topics import DEVICE_PRESENCE
from smsgw.grpcx.server import ServiceServer
from smsgw.grpcx.tls import ClientCertificate, TlsFiles
from smsgw.kafka.clients import ensure_topics, make_producer, make_reader
from smsgw.settings import ServiceSettings
from smsgw.v1 import device_relay_pb2 as dr
from smsgw.v1 import device_relay_pb2_grpc as dr_grpc
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_carrier_adapter.android.client import AndroidCarrierClient
from smsgw_carrier_adapter.android.config import AndroidCarrier
from smsgw_carrier_adapter.android.directory import DeviceDirectory
from smsgw_carrier_adapter.android.links import ReplicaLinks
from smsgw_carrier_adapter.android.presence import PresencePublisher, PresenceReader
from smsgw_carrier_adapter.android.registry import DeviceRegistry
from smsgw_carrier_adapter.android.relay import RelayCaller, RelayTls, add_device_relay
from smsgw_carrier_adapter.android.replicas import AndroidReplicas
from smsgw_carrier_adapter.android.servicer import add_device_gateway
from smsgw_carrier_adapter.carrier import CarrierUnavailable
from smsgw_dev.devpki import make_pki
from smsgw_dev.platform import PHONE_DEVICE_ID, PHONE_NUMBER, PHONE_TOKEN, Platform
from smsgw_dev.platform import RELAY_SECRET as PLATFORM_RELAY_SECRET
from smsgw_dev.simulators.android_device import AndroidDeviceSimulator
from tests.conftest import unique_prefix
from tests.integration.helpers import send_request, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ACCOUNT = (("x-smsgw-account", "default"),)
A, B = "carrier-adapter", "carrier-adapter-2"
REPLICAS_ENV = {"SMSGW_PRESENCE_REFRESH_INTERVAL": "1"}


# A second phone of the same account, for these tests only: it must never get what the first accepted.
OTHER_PHONE, OTHER_TOKEN = "sim-phone-2", "dev-phone-token-2-0123456789"


async def start_two_replicas(
    broker, run_dir, tag, env: dict[str, str] | None = None, service_env: dict[str, dict[str, str]] | None = None
) -> Platform:
    platform = Platform.for_broker(
        broker,
        run_dir,
        topic_prefix=unique_prefix(tag),
        carrier_adapter_replicas=2,
        android_phone=False,
        extra_env={**REPLICAS_ENV, **(env or {})},
        service_env=service_env or {},
        auth="trusted-header",
        tls=False,
    )
    # When a replica dies, its phone reports (to the new holder) before the dead replica's dispatch commands
    # are redelivered, which takes a group session timeout: longer than the 5 s orphan window of the tests'
    # default (production: 600 s), so receipts wait longer for their submit here.
    platform.receipt_policies["default"]["orphan_after"] = 120
    carriers = platform.carriers()
    [phones] = [c for c in carriers if c["name"] == "phones"]
    phones["device_tokens"].append({"token": OTHER_TOKEN, "device_id": OTHER_PHONE})
    platform.extra_env["SMSGW_CARRIERS"] = json.dumps({"carriers": carriers})
    try:
        await platform.start()
    except Exception:
        platform.stop()
        raise
    return platform


def phone_on(
    platform, replica: str, device_id: str = PHONE_DEVICE_ID, tls_ca: bytes | None = None
) -> AndroidDeviceSimulator:
    token = PHONE_TOKEN if device_id == PHONE_DEVICE_ID else OTHER_TOKEN
    return AndroidDeviceSimulator(
        platform.address(replica), token, device_id, phone_number=PHONE_NUMBER, delivery_delay=0.05, tls_ca=tls_ca
    )


async def connect(phone: AndroidDeviceSimulator, timeout: float = 20.0) -> None:
    """Connects, retrying while the replica is still starting (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await phone.connect()
            return
        except (grpc.aio.AioRpcError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def send_to_phone(stub, count: int, tag: str) -> list[str]:
    """At once, so that the dispatchers tend to get them in one batch each."""
    replies = await asyncio.gather(
        *(
            stub.SendMessage(send_request(to=f"+1650555{i:04d}", body=f"{tag} {i}"), metadata=ACCOUNT)
            for i in range(count)
        )
    )
    return [reply.message.id for reply in replies]


async def dispatched_by(stub, message_id: str) -> str:
    """The carrier-adapter instance that wrote the message's CarrierAccepted (its dispatch command's owner)."""
    history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=message_id), metadata=ACCOUNT)
    [accepted] = [e.event for e in history.entries if e.event.WhichOneof("payload") == "carrier_accepted"]
    return accepted.producer.removeprefix("carrier-adapter/")


async def bounded(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


def assert_each_sent_once(ids: list[str], *phones: AndroidDeviceSimulator) -> None:
    radio = Counter(m for phone in phones for m in phone.sent)
    assert sorted(radio) == sorted(ids), "every message went out through the phone's radio"
    assert set(radio.values()) == {1}, f"sent twice: {[m for m, n in radio.items() if n > 1]}"


@pytest.fixture
async def two_replicas(broker, tmp_path):
    platform = await start_two_replicas(broker, tmp_path, "replicas")
    yield platform
    platform.stop()


async def test_a_phone_on_one_replica_sends_what_the_other_replica_dispatches(two_replicas):
    await _relayed_through_b(two_replicas, phone_on(two_replicas, B))


async def test_with_tls_on_the_port_phones_and_relay_calls_speak_tls(broker, tmp_path):
    """SMSGW_GRPC_TLS_*: phones connect over TLS (a plaintext phone gets nowhere), and a replica
    relays to the other over TLS, checking its certificate against the CA. With mutual TLS on top
    (each replica an mTLS port and a client certificate): relay calls go to the mTLS port with the
    replica's certificate, phones without one stay on the main port, and a relay call there is
    refused even with the right secret."""
    pki = make_pki(tmp_path / "pki")
    mutual = {
        replica: {
            "SMSGW_GRPC_TLS_CLIENT_CA_FILE": str(pki.ca),
            "SMSGW_GRPC_MTLS_PORT": str(free_port()),
            "SMSGW_GRPC_CLIENT_CERT_FILE": str(pki.client_cert),
            "SMSGW_GRPC_CLIENT_KEY_FILE": str(pki.client_key),
        }
        for replica in (A, B)
    }
    platform = await start_two_replicas(
        broker,
        tmp_path,
        "replicas-tls",
        env={
            "SMSGW_GRPC_TLS_CERT_FILE": str(pki.server_cert),
            "SMSGW_GRPC_TLS_KEY_FILE": str(pki.server_key),
            "SMSGW_GRPC_TLS_CA_FILE": str(pki.ca),
            "SMSGW_GRPC_TLS_SERVER_NAME": "localhost",
        },
        service_env=mutual,
    )
    try:
        plaintext = phone_on(platform, B)
        with pytest.raises((grpc.aio.AioRpcError, ConnectionError, TimeoutError)):
            await plaintext.connect(timeout=3)
        await plaintext.close()
        untrusting = phone_on(platform, B, tls_ca=pki.other_ca.read_bytes())
        with pytest.raises((grpc.aio.AioRpcError, ConnectionError, TimeoutError)):
            await untrusting.connect(timeout=3)
        await untrusting.close()
        await _relayed_through_b(platform, phone_on(platform, B, tls_ca=pki.ca.read_bytes()))
        uncertified = RelayCaller("intruder", PLATFORM_RELAY_SECRET, tls=RelayTls(pki.ca.read_bytes(), "localhost"))
        try:
            answer = await uncertified.submit(platform.address(B), _command("m-intruder"), PHONE_DEVICE_ID, "", 5)
            assert answer.unreachable and "client certificate" in answer.reason, answer
        finally:
            await uncertified.close()
    finally:
        platform.stop()


async def _relayed_through_b(platform, phone: AndroidDeviceSimulator) -> None:
    try:
        await connect(phone)
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            ids: list[str] = []
            # Message ids decide the partition, hence the replica: send until A has handled some (bounded).
            for batch in range(4):
                new = await send_to_phone(stub, 8, f"batch{batch}")
                ids += new
                for message_id in new:
                    message = await wait_for_status(stub, message_id, {st.DELIVERED}, metadata=ACCOUNT)
                    assert message.carrier == "phones"
                    assert message.carrier_message_id == f"{PHONE_DEVICE_ID}:{message_id}:0"
                owners = Counter([await dispatched_by(stub, m) for m in ids])
                if owners[A]:
                    break
        # The phone was only ever on B: what A dispatched went through B's DeviceRelayService.
        assert owners[A] >= 1, f"replica A dispatched none of {len(ids)} messages: {owners}"
        assert set(owners) <= {A, B}
        assert_each_sent_once(ids, phone)
        assert Counter(phone.received_ids()) == Counter(ids), "each command reached the phone once"
    finally:
        await phone.close()


async def test_a_phone_that_moves_between_replicas_with_messages_in_flight_loses_and_repeats_none(two_replicas):
    platform = two_replicas
    phone = phone_on(platform, B)
    other = phone_on(platform, B, OTHER_PHONE)  # takes whatever it is given, at once
    try:
        await connect(phone)
        phone.send_gate.clear()  # accepts, holds the radio
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            before = await send_to_phone(stub, 6, "before")
            # A dispatcher batch waits for every command in it, so the held ones keep later ones queued:
            # some are accepted by the phone, the others still wait in Kafka when the phone moves.
            await bounded(phone.pending_message_ids, 30, "the phone accepted some")
            await asyncio.sleep(1.0)
            accepted_on_b = set(phone.pending_message_ids())
            await connect(other)

            await phone.disconnect()  # the phone moves from B to A
            phone.server = platform.address(A)
            await connect(phone)
            assert set(phone.pending_message_ids()) == accepted_on_b  # ...and tells A what it holds
            after = await send_to_phone(stub, 2, "after")
            await asyncio.sleep(1.0)  # retries of the held ones happen meanwhile
            released = time.monotonic()
            phone.send_gate.set()

            everything = before + after
            for message_id in everything:
                await wait_for_status(stub, message_id, {st.DELIVERED}, timeout=90, metadata=ACCOUNT)
            # B hands its waiting submits over as soon as it sees the phone on A, not after sent_timeout (30 s).
            assert time.monotonic() - released < 25
        assert_each_sent_once(everything, phone, other)
        assert accepted_on_b <= set(phone.sent), "what the phone accepted, it sent"
        assert not accepted_on_b & set(other.received_ids()), "an accepted message never went to another phone"
        assert phone.connections == 2 and phone.connected
    finally:
        await phone.close()
        await other.close()


async def test_a_killed_replicas_phone_reconnects_elsewhere_and_its_pending_messages_are_adopted(broker, tmp_path):
    platform = await start_two_replicas(broker, tmp_path, "replica-dies")
    phone = phone_on(platform, B)
    other = phone_on(platform, A, OTHER_PHONE)
    try:
        await connect(phone)
        phone.send_gate.clear()
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            ids = await send_to_phone(stub, 6, "held")
            await bounded(phone.pending_message_ids, 30, "the phone accepted some")
            await asyncio.sleep(1.0)  # its presence record lists them
            accepted_on_b = set(phone.pending_message_ids())
            await connect(other)  # a phone on A, free to take anything else

            platform.kill(B)  # no tombstone, no commit, no goodbye
            await bounded(lambda: not phone.connected, 10, "the phone noticed its stream broke")
            # A sees B's records go stale and keeps the accepted messages for the phone: it waits for it.
            # (Those B had dispatched reach A after a group session timeout, and only once A's own
            # blocked batch is done; test_a_replica_taking_over_... covers them without that wait.)
            await platform.wait_log(A, "connected to no replica", 30)
            assert set(Counter(phone.received_ids()).values()) == {1}, "nothing was handed to the phone twice"
            assert not accepted_on_b & set(other.received_ids())

            phone.server = platform.address(A)
            await connect(phone)  # hello lists what it holds: A adopts them
            assert set(phone.pending_message_ids()) == accepted_on_b
            phone.send_gate.set()
            for message_id in ids:
                await wait_for_status(stub, message_id, {st.DELIVERED}, timeout=90, metadata=ACCOUNT)
            for message_id in accepted_on_b:
                message = await stub.GetMessage(api.GetMessageRequest(id=message_id), metadata=ACCOUNT)
                assert message.carrier_message_id == f"{PHONE_DEVICE_ID}:{message_id}:0"
        assert_each_sent_once(ids, phone, other)
        assert not accepted_on_b & set(other.received_ids()), "an accepted message never went to another phone"
    finally:
        await phone.close()
        await other.close()
        platform.stop()


# --- presence, in this process --------------------------------------------------------------

TOKEN = "presence-token-0123456789"


async def test_presence_of_a_replica_that_dies_without_a_tombstone_goes_stale(broker):
    """Replica "b" (a registry, a client, a gRPC server and a publisher in this process) holds a phone;
    replica "a" only reads. b stops refreshing without a tombstone, as when killed: after three refresh
    intervals a no longer reaches the phone through b, but still knows which messages it holds."""
    prefix = unique_prefix("presence")
    await ensure_topics(broker.bootstrap, prefix, specs=(DEVICE_PRESENCE,))
    settings = _presence_settings(broker, prefix)
    topic = settings.topic(DEVICE_PRESENCE)
    interval = 0.5

    directory_b, directory_a = DeviceDirectory(), DeviceDirectory()
    producer = make_producer(settings)
    await producer.start()
    publisher = PresencePublisher(
        producer, topic, directory_b, replica_id="b#1", address="127.0.0.1:1", refresh_interval=interval
    )
    registry = DeviceRegistry(ping_interval=0.2, keepalive_timeout=3.0, hello_timeout=1.0)
    config = AndroidCarrier(
        name="phones", account_id="acct-presence", device_tokens=[{"token": TOKEN, "device_id": "pixel"}]
    )
    client = AndroidCarrierClient(
        config,
        _NoReports(),
        registry,
        links=ReplicaLinks(replica_id="b#1", directory=directory_b, relay=RelayCaller("b#1"), presence=publisher),
    )
    publisher.register(client)
    server = grpc.aio.server()
    add_device_gateway(server, registry)
    port = server.add_insecure_port("127.0.0.1:0")
    reader = PresenceReader(make_reader(settings), topic, directory_a, broker.bootstrap)
    phone = AndroidDeviceSimulator(f"127.0.0.1:{port}", TOKEN, "pixel", keepalive_interval=0.5)
    try:
        await server.start()
        await client.start()
        await publisher.start()
        await reader.start()
        await phone.connect()
        phone.send_gate.clear()
        submit = asyncio.create_task(client.submit(_command("m-held")))  # accepted, never reported
        await bounded(lambda: client.devices["pixel"].accepted_ids == {"m-held"}, 10, "the phone accepted it")

        def entry():
            return directory_a.get("acct-presence", "pixel")

        await bounded(lambda: entry() is not None and entry().pending == {"m-held"}, 15, "a read b's record")
        assert entry().replica_id == "b#1" and entry().reachable(time.time())
        first_seen = entry().seen_at
        await bounded(lambda: entry().seen_at > first_seen, 10, "b refreshed it")

        publisher._task.cancel()  # b dies (its refresh loop stops): no more records, no tombstone
        died = time.time()
        await asyncio.sleep(3 * interval + 0.5)
        assert entry() is not None and not entry().reachable(time.time()), "stale once not refreshed"
        assert entry().expires_at <= died + 3 * interval + 0.1
        assert directory_a.reachable("acct-presence", time.time()) == []
        assert directory_a.holder_of("acct-presence", "m-held").device_id == "pixel"
        submit.cancel()
    finally:
        await phone.close()
        await client.close()
        await reader.stop()
        await server.stop(0)
        await producer.stop()


def _presence_settings(broker, prefix: str) -> ServiceSettings:
    return ServiceSettings(
        kafka_bootstrap=broker.bootstrap,
        kafka_idempotence=broker.supports_idempotence,
        topic_prefix=prefix,
        instance_id="presence-test",
        kafka_fetch_max_wait_ms=20,
        kafka_max_batch_size=1 if broker.kind == "tansu" else 16_384,
    )


class _Replica:
    """A carrier-adapter replica's Android side in this process: the real AndroidReplicas wiring (presence
    on the broker, relay over gRPC), one carrier with two phones, and its gRPC server."""

    def __init__(self, name: str, broker, settings: ServiceSettings, refresh_interval: float):
        self.registry = DeviceRegistry(ping_interval=0.2, keepalive_timeout=3.0, hello_timeout=1.0)
        self.server = grpc.aio.server()
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.producer = make_producer(settings)
        self.replicas = AndroidReplicas(
            producer=self.producer,
            reader_consumer=make_reader(settings),
            topic=settings.topic(DEVICE_PRESENCE),
            kafka=broker.bootstrap,
            instance_id=name,
            address=self.address,
            relay_secret=RELAY_SECRET,
            refresh_interval=refresh_interval,
        )
        config = AndroidCarrier(
            name="phones",
            account_id="acct-presence",
            ack_timeout=2.0,
            sent_timeout=1.0,
            device_tokens=[{"token": TOKEN, "device_id": "pixel"}, {"token": TOKEN_2, "device_id": "galaxy"}],
        )
        self.client = AndroidCarrierClient(config, _NoReports(), self.registry, links=self.replicas.links)
        add_device_gateway(self.server, self.registry)
        add_device_relay(self.server, {"phones": self.client}, RELAY_SECRET)

    async def start(self) -> None:
        await self.producer.start()
        await self.server.start()
        await self.client.start()
        await self.replicas.start([self.client])

    async def crash(self) -> None:
        """Gone at once: streams cut, no tombstone, no more refreshes."""
        task = self.replicas.publisher._task
        assert task is not None, "the publisher runs"
        task.cancel()
        await self.server.stop(0)

    async def stop(self) -> None:
        await self.client.close()
        await self.replicas.stop()
        await self.server.stop(0)
        await self.producer.stop()


TOKEN_2 = "presence-token-2-0123456789"


async def test_a_replica_taking_over_a_partition_keeps_accepted_messages_with_their_phone(broker):
    """B's phone accepted M; B dies before answering; A gets M's command again (the partition moved) while
    another phone waits on A: A learns from B's presence record that M is the phone's, never gives it to the
    other phone, and sends it through the phone once it reconnects to A."""
    prefix = unique_prefix("takeover")
    await ensure_topics(broker.bootstrap, prefix, specs=(DEVICE_PRESENCE,))
    settings = _presence_settings(broker, prefix)
    a, b = _Replica("a", broker, settings, 0.5), _Replica("b", broker, settings, 0.5)
    pixel = AndroidDeviceSimulator(b.address, TOKEN, "pixel")
    galaxy = AndroidDeviceSimulator(a.address, TOKEN_2, "galaxy")
    try:
        # Every step bounded: a step that hangs fails here, at its line, not at pytest's timeout.
        await asyncio.wait_for(a.start(), 30)
        await asyncio.wait_for(b.start(), 30)
        await asyncio.wait_for(pixel.connect(), 30)
        pixel.send_gate.clear()
        held = _command("m-held")
        on_b = asyncio.create_task(b.client.submit(held))
        await bounded(lambda: pixel.pending_message_ids() == ["m-held"], 10, "pixel accepted it on b")
        await bounded(
            lambda: (
                (h := a.replicas.directory.holder_of("acct-presence", "m-held")) is not None and h.device_id == "pixel"
            ),
            10,
            "a read that pixel holds it",
        )
        await asyncio.wait_for(galaxy.connect(), 30)

        on_b.cancel()
        await asyncio.wait_for(b.crash(), 30)
        await bounded(lambda: not pixel.connected, 10, "pixel's stream broke")
        with pytest.raises(CarrierUnavailable, match="phone pixel holds m-held"):
            await asyncio.wait_for(a.client.submit(held), 30)  # the redelivered command, on a
        await asyncio.sleep(3 * 0.5 + 0.2)  # b's records are stale now
        with pytest.raises(CarrierUnavailable, match="phone pixel holds m-held .*connected to no replica"):
            await asyncio.wait_for(a.client.submit(held), 30)
        other = _command("m-other")
        assert (await asyncio.wait_for(a.client.submit(other), 30)).carrier_ids == (
            "galaxy:m-other:0",
        )  # galaxy works meanwhile

        pixel.server = a.address
        await asyncio.wait_for(pixel.connect(), 30)  # hello: m-held pending; a adopts it
        pixel.send_gate.set()
        assert (await asyncio.wait_for(a.client.submit(held), 10)).carrier_ids == ("pixel:m-held:0",)
        assert pixel.sent == ["m-held"] and pixel.received_ids() == ["m-held"]
        assert galaxy.received_ids() == ["m-other"], "the held message never went to the other phone"
    finally:
        for closing in (
            pixel.close(),
            galaxy.close(),
            a.stop(),
            b.client.close(),
            b.replicas.reader.stop(),
            b.replicas.relay.close(),
            b.producer.stop(),
        ):
            await asyncio.wait_for(closing, 30)


class _NoReports:
    async def on_receipt(self, *args, **kwargs):
        pass

    async def on_inbound(self, *args, **kwargs):
        pass


def _command(message_id: str):
    from smsgw.v1 import carrier_pb2 as cp
    from smsgw.v1 import events_pb2 as ev

    return cp.DispatchCommand(
        command_id=str(uuid.uuid4()),
        message_id=message_id,
        account_id="acct-presence",
        carrier="phones",
        to="+15550001234",
        content=ev.MessageContent(text="hi"),
        segments=1,
    )


# --- the relay, in this process (real gRPC on 127.0.0.1) --------------------------------------

RELAY_SECRET = "relay-secret-0123456789"


class _Holder:
    """A replica's gRPC side: one Android carrier, DeviceGatewayService and DeviceRelayService;
    with `tls` that has a client CA, also on an mTLS port (mtls_address) as carrier-adapter serves them."""

    def __init__(self, tls: TlsFiles | None = None):
        self.registry = DeviceRegistry(ping_interval=0.2, keepalive_timeout=3.0, hello_timeout=1.0)
        config = AndroidCarrier(
            name="phones",
            account_id="acct-presence",
            device_tokens=[{"token": TOKEN, "device_id": "pixel"}],
            ack_timeout=2.0,
            sent_timeout=20.0,
        )
        self.client = AndroidCarrierClient(config, _NoReports(), self.registry)
        verifying = tls is not None and tls.client_ca is not None
        self.service_server = ServiceServer(
            host="127.0.0.1", port=0, service_names=[], tls=tls, mtls_port=0 if verifying else None
        )
        self.server = self.service_server.server
        self.service_server.add(lambda s: add_device_gateway(s, self.registry))
        self.service_server.add(
            lambda s: add_device_relay(s, {"phones": self.client}, RELAY_SECRET, require_client_certificate=verifying)
        )
        self.address = self.service_server.address
        self.mtls_address = f"127.0.0.1:{self.service_server.mtls_port}"

    async def __aenter__(self):
        await self.server.start()
        await self.client.start()
        return self

    async def __aexit__(self, *exc):
        await self.client.close()
        await self.server.stop(0)


async def test_the_relay_refuses_callers_without_the_shared_secret_and_sends_for_those_with_it():
    async with _Holder() as holder:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async with grpc.aio.insecure_channel(holder.address) as channel:
                await dr_grpc.DeviceRelayServiceStub(channel).Submit(
                    dr.SubmitRequest(command=_command("m0"), device_id="pixel"), timeout=5
                )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "SMSGW_RELAY_SECRET" in refused.value.details()

        wrong = RelayCaller("a#1", "not-the-secret-0123456789")
        answer = await wrong.submit(holder.address, _command("m1"), "pixel", "", timeout=5)
        assert answer.unreachable and answer.result is None and "refused" in answer.reason
        await wrong.close()

        caller = RelayCaller("a#1", RELAY_SECRET)
        try:
            answer = await caller.submit(holder.address, _command("m1"), "pixel", "", timeout=5)
            assert answer.not_connected and not answer.held, "no phone there yet: nothing was sent"
            phone = AndroidDeviceSimulator(holder.address, TOKEN, "pixel")
            try:
                await phone.connect()
                answer = await caller.submit(holder.address, _command("m1"), "pixel", "", timeout=5)
                assert answer.result.carrier_ids == ("pixel:m1:0",)
                assert phone.sent == ["m1"]
            finally:
                await phone.close()
        finally:
            await caller.close()


async def test_with_client_certificates_a_relay_call_needs_one_from_the_ca_as_well_as_the_secret(tmp_path):
    """The port verifies client certificates on its mTLS port: phones (no certificate) stay on the
    main port, and a relay call needs the secret and a certificate from the client CA."""
    pki = make_pki(tmp_path / "pki")
    ca = pki.ca.read_bytes()

    def caller(secret: str, client: ClientCertificate | None) -> RelayCaller:
        return RelayCaller("a#1", secret, connect_timeout=2.0, tls=RelayTls(ca, "localhost", client))

    ours = ClientCertificate(pki.client_cert, pki.client_key)
    outsider = ClientCertificate(pki.other_client_cert, pki.other_client_key)
    async with _Holder(TlsFiles(pki.server_cert, pki.server_key, client_ca=pki.ca)) as holder:
        callers = []
        try:
            # The right secret without a certificate: refused on the main port, no connection on the mTLS one.
            bare = caller(RELAY_SECRET, None)
            callers.append(bare)
            answer = await bare.submit(holder.address, _command("m1"), "pixel", "", timeout=5)
            assert answer.unreachable and "client certificate" in answer.reason, answer
            answer = await bare.submit(holder.mtls_address, _command("m1"), "pixel", "", timeout=5)
            assert answer.unreachable and "unreachable" in answer.reason, answer
            # Even with ours, a call through the main port is not verified there.
            main_port = caller(RELAY_SECRET, ours)
            callers.append(main_port)
            answer = await main_port.submit(holder.address, _command("m1"), "pixel", "", timeout=5)
            assert answer.unreachable and "client certificate" in answer.reason, answer
            stranger = caller(RELAY_SECRET, outsider)
            callers.append(stranger)
            answer = await stranger.submit(holder.mtls_address, _command("m1"), "pixel", "", timeout=5)
            assert answer.unreachable and "unreachable" in answer.reason, answer
            wrong_secret = caller("not-the-secret-0123456789", ours)
            callers.append(wrong_secret)
            answer = await wrong_secret.submit(holder.mtls_address, _command("m1"), "pixel", "", timeout=5)
            assert answer.unreachable and "SMSGW_RELAY_SECRET" in answer.reason, answer

            member = caller(RELAY_SECRET, ours)
            callers.append(member)
            phone = AndroidDeviceSimulator(holder.address, TOKEN, "pixel", tls_ca=ca)  # no certificate
            try:
                await phone.connect()
                answer = await member.submit(holder.mtls_address, _command("m1"), "pixel", "", timeout=5)
                assert answer.result is not None and answer.result.carrier_ids == ("pixel:m1:0",), answer
                assert phone.sent == ["m1"]
            finally:
                await phone.close()
        finally:
            for each in callers:
                await each.close()


async def test_a_relay_whose_answer_is_lost_pins_the_message_and_an_unreachable_replica_does_not():
    caller = RelayCaller("a#1", RELAY_SECRET, connect_timeout=0.5)
    try:
        nobody = f"127.0.0.1:{_closed_port()}"
        answer = await caller.submit(nobody, _command("m2"), "pixel", "", timeout=5)
        assert answer.unreachable and not answer.held  # nothing left: another phone may take it

        async with _Holder() as holder:
            phone = AndroidDeviceSimulator(holder.address, TOKEN, "pixel")
            try:
                await phone.connect()
                phone.send_gate.clear()  # accepts, never reports
                call = asyncio.create_task(caller.submit(holder.address, _command("m3"), "pixel", "", timeout=20))
                await bounded(lambda: holder.client.devices["pixel"].accepted_ids == {"m3"}, 10, "accepted")
                await holder.server.stop(0)  # the holder dies mid-call
                answer = await asyncio.wait_for(call, 10)
                assert answer.held and answer.result is None, answer  # the phone has it: it stays there
            finally:
                await phone.close()
    finally:
        await caller.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
