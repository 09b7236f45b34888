"""TLS on intake's public port, as make run serves it: a client must trust the platform's CA,
plaintext and other CAs are refused, health stays plaintext on its own port (for Kubernetes'
probes), and intake will not start plaintext unless a setting says so. With mutual TLS between
services on top (smsgw.grpcx.tls): intake's mTLS port serves clients with a certificate from the
platform's CA only, receipt's HELP replies reach intake there with its client certificate, the
public port goes on serving clients without one (every test above that uses it), and a service
told to verify client certificates stops at start when it cannot. Real processes, real TLS
over loopback, on each broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smsgw.domain import status as st
from smsgw.grpcx.tls import ClientCertificate, channel_credentials
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.conftest import start_platform
from tests.integration.helpers import messages_to, send_request, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
async def secure(broker, tmp_path_factory):
    platform = await start_platform(
        broker, tmp_path_factory.mktemp(f"tls-{broker.kind}"), "tls", auth="api-keys", tls=True, mutual_tls=True
    )
    yield platform
    platform.stop()


async def test_a_client_trusting_the_ca_sends_and_the_message_is_delivered(secure):
    key = await secure.api_key("tls-user")
    metadata = (("authorization", f"Bearer {key}"),)
    async with secure.intake_channel() as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        reply = await stub.SendMessage(send_request(body="over TLS"), metadata=metadata)
        await wait_for_status(stub, reply.message.id, {st.DELIVERED}, metadata=metadata)


async def test_plaintext_and_untrusted_clients_never_get_an_answer(secure):
    untrusted = grpc.ssl_channel_credentials(secure.pki.other_ca.read_bytes())
    for channel in (
        grpc.aio.insecure_channel(secure.intake_address),
        grpc.aio.secure_channel(secure.intake_address, untrusted),
    ):
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await api_grpc.MessagingServiceStub(channel).GetMessage(api.GetMessageRequest(id="x"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_health_is_plaintext_on_its_own_port_and_nothing_else_is_there(secure):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secure.intake_health_port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await api_grpc.MessagingServiceStub(channel).GetMessage(api.GetMessageRequest(id="x"), timeout=5)
        assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_the_cli_trusts_the_given_ca_and_refuses_plaintext(secure):
    key = await secure.api_key("tls-cli")
    base = [sys.executable, "-m", "smsgw.cli", "--server", secure.intake_address, "--api-key", key]
    env = dict(os.environ, SMSGW_CA_FILE=str(secure.pki.ca))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *args], env=env, capture_output=True, text=True, timeout=60)

    sent = await asyncio.to_thread(cli, "send", "--to", "+14155550100", "--body", "cli over TLS", "--no-wait")
    assert sent.returncode == 0, sent.stderr
    assert "QUEUED" in sent.stdout
    plain = await asyncio.to_thread(cli, "--plaintext", "list")
    assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr


async def test_receipt_reaches_intake_on_its_mtls_port_with_its_client_certificate_for_help_replies(secure):
    """receipt calls intake's mTLS port (SMSGW_INTAKE_ADDRESS), which takes no client without a
    certificate from the platform's CA: the reply going out means receipt presented its own."""
    from tests.integration.test_pipeline import _handset_sends, _next_inbound

    metadata = (("authorization", f"Bearer {await secure.api_key('default')}"),)
    subscriber = "+14155550176"
    async with secure.intake_channel() as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        inbound = stub.WatchInbound(api.WatchInboundRequest(), metadata=metadata)
        await inbound.read()
        await _handset_sends(secure, subscriber, "+14155550000", "HELP")
        assert (await _next_inbound(inbound)).keyword == "HELP"
        inbound.cancel()
        listed = await messages_to(stub, subscriber, metadata)
        assert len(listed) == 1 and "STOP" in listed[0].body
        await wait_for_status(stub, listed[0].id, {st.DELIVERED}, metadata=metadata)


async def test_the_mtls_port_serves_only_clients_with_a_certificate_from_the_platforms_ca(secure):
    key = await secure.api_key("mtls-user")
    metadata = (("authorization", f"Bearer {key}"),)
    address = f"127.0.0.1:{secure.intake_mtls_port}"
    ca = secure.pki.ca.read_bytes()
    ours = ClientCertificate(secure.pki.client_cert, secure.pki.client_key)
    outsider = ClientCertificate(secure.pki.other_client_cert, secure.pki.other_client_key)
    for client in (None, outsider):
        async with grpc.aio.secure_channel(address, channel_credentials(ca, client)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await api_grpc.MessagingServiceStub(channel).GetMessage(
                    api.GetMessageRequest(id="x"), metadata=metadata, timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, client
    async with grpc.aio.secure_channel(address, channel_credentials(ca, ours)) as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        reply = await stub.SendMessage(send_request(body="over mutual TLS"), metadata=metadata)
        # The certificate opens the port, not the API: the key still says whose message it is.
        await wait_for_status(stub, reply.message.id, {st.DELIVERED}, metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await stub.GetMessage(api.GetMessageRequest(id=reply.message.id), timeout=5)
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_intake_refuses_to_start_without_tls_unless_told_to(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    env.update(SMSGW_KAFKA_BOOTSTRAP="127.0.0.1:9", SMSGW_STATE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "smsgw_intake"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "SMSGW_GRPC_TLS_CERT_FILE" in done.stderr and "SMSGW_GRPC_PLAINTEXT=true" in done.stderr
    env["SMSGW_GRPC_TLS_CERT_FILE"], env["SMSGW_GRPC_TLS_KEY_FILE"] = str(tmp_path / "no.crt"), str(tmp_path / "no.key")
    done = subprocess.run([sys.executable, "-m", "smsgw_intake"], env=env, capture_output=True, text=True, timeout=60)
    assert (
        done.returncode != 0 and f"SMSGW_GRPC_TLS_CERT_FILE={tmp_path / 'no.crt'} is not a readable file" in done.stderr
    )


def test_in_production_intake_refuses_development_defaults_naming_each(tmp_path):
    from smsgw_dev.devpki import make_pki

    pki = make_pki(tmp_path / "pki")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    env.update(
        SMSGW_KAFKA_BOOTSTRAP="127.0.0.1:9",
        SMSGW_STATE_DIR=str(tmp_path),
        SMSGW_GRPC_TLS_CERT_FILE=str(pki.server_cert),
        SMSGW_GRPC_TLS_KEY_FILE=str(pki.server_key),
        SMSGW_AUTH="trusted-header",
    )
    done = subprocess.run([sys.executable, "-m", "smsgw_intake"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    for named in (
        "refusing to start in production",
        "SMSGW_AUTH=trusted-header",
        "SMSGW_BOOTSTRAP_KEYS_FILE",
        "SMSGW_CURSOR_SECRET_FILE",
        "SMSGW_ROUTES",
        "SMSGW_DEFAULT_SENDER",
        "SMSGW_ENVIRONMENT=development",
    ):
        assert named in done.stderr, named


def test_in_production_receipt_refuses_development_defaults_naming_each(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    env.update(SMSGW_KAFKA_BOOTSTRAP="127.0.0.1:9", SMSGW_STATE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "smsgw_receipt"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    for named in (
        "refusing to start in production",
        "SMSGW_WEBHOOK_SECRET",
        "SMSGW_INTAKE_ADDRESS is the development address 127.0.0.1:16051",
        "SMSGW_INTAKE_API_KEY_FILE",
    ):
        assert named in done.stderr, named


def _refusal(module: str, tmp_path, **settings: str) -> str:
    """The stderr of `module` started with `settings`, which must stop it before it reaches Kafka."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    env.update(SMSGW_KAFKA_BOOTSTRAP="127.0.0.1:9", SMSGW_STATE_DIR=str(tmp_path), SMSGW_ENVIRONMENT="development")
    env.update(settings)
    done = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stderr
    return done.stderr


def test_services_told_to_verify_or_present_client_certificates_stop_at_start_when_they_cannot(tmp_path):
    from smsgw_dev.devpki import make_pki

    pki = make_pki(tmp_path / "pki")
    missing = str(tmp_path / "no-client-ca.crt")
    port = {"SMSGW_GRPC_TLS_CERT_FILE": str(pki.server_cert), "SMSGW_GRPC_TLS_KEY_FILE": str(pki.server_key)}
    stderr = _refusal("smsgw_intake", tmp_path, **port, SMSGW_GRPC_TLS_CLIENT_CA_FILE=missing, SMSGW_GRPC_MTLS_PORT="1")
    assert f"intake: SMSGW_GRPC_TLS_CLIENT_CA_FILE={missing} is not a readable file" in stderr
    # A CA no port verifies with would protect nothing (gRPC asks for no certificate then).
    stderr = _refusal("smsgw_intake", tmp_path, **port, SMSGW_GRPC_TLS_CLIENT_CA_FILE=str(pki.ca))
    assert "no port requires client certificates" in stderr and "SMSGW_GRPC_MTLS_PORT" in stderr
    stderr = _refusal("smsgw_intake", tmp_path, **port, SMSGW_GRPC_TLS_REQUIRE_CLIENT_CERT="true")
    assert "SMSGW_GRPC_TLS_REQUIRE_CLIENT_CERT needs SMSGW_GRPC_TLS_CLIENT_CA_FILE" in stderr
    stderr = _refusal(
        "smsgw_receipt",
        tmp_path,
        SMSGW_GRPC_CLIENT_CERT_FILE=str(pki.client_cert),
        SMSGW_GRPC_CLIENT_KEY_FILE=str(tmp_path / "no.key"),
        SMSGW_INTAKE_CA_FILE=str(pki.ca),
    )
    assert f"receipt: SMSGW_GRPC_CLIENT_KEY_FILE={tmp_path / 'no.key'} is not a readable file" in stderr
    # Relay calls would need a certificate this replica does not have.
    stderr = _refusal(
        "smsgw_carrier_adapter",
        tmp_path,
        **port,
        SMSGW_GRPC_TLS_CA_FILE=str(pki.ca),
        SMSGW_GRPC_TLS_CLIENT_CA_FILE=str(pki.ca),
        SMSGW_GRPC_MTLS_PORT="1",
    )
    assert "relay calls need a client certificate" in stderr and "SMSGW_GRPC_CLIENT_CERT_FILE" in stderr
