"""The services on a Kafka cluster that asks for TLS and SCRAM, as a Strimzi cluster's `tls` listener
with `scram-sha-512` users does: every producer, consumer and admin client of every service
reaches it through smsgw.kafka.connection, a message goes through the whole pipeline, and a
wrong password or an untrusted broker certificate stops a service with the reason in its log.

Apache Kafka from the Maven jars, with a SASL_SSL listener beside the plaintext one the harness
uses to make topics; the services are only ever given the SASL_SSL address. Real processes,
real TLS over loopback.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from smsgw.brokers import ScramListener, free_port, start_apache_kafka
from smsgw.domain import status as st
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_dev.devpki import make_pki
from tests.conftest import start_platform
from tests.integration.helpers import send_request, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

USER = "smsgw-services"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """An Apache Kafka with a SASL_SSL (SCRAM-SHA-512) listener, its CA, and the services' password file."""
    root = tmp_path_factory.mktemp("kafka-security")
    pki = make_pki(root / "pki")
    password = secrets.token_urlsafe(18)
    listener = ScramListener(
        port=free_port(), cert_file=pki.server_cert, key_file=pki.server_key, users={USER: password}
    )
    broker = start_apache_kafka(scram_listener=listener, log_path=root / "kafka.log")
    password_file = root / "kafka-password"
    password_file.write_text(password + "\n")  # as a mounted Secret often ends: the newline is not the password
    yield broker, listener, pki, password, password_file
    broker.stop()


def service_env(listener: ScramListener, ca: Path, password_file: Path) -> dict[str, str]:
    return {
        "SMSGW_KAFKA_BOOTSTRAP": listener.bootstrap,
        "SMSGW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SMSGW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SMSGW_KAFKA_SASL_USERNAME": USER,
        "SMSGW_KAFKA_SASL_PASSWORD_FILE": str(password_file),
        "SMSGW_KAFKA_SSL_CA_FILE": str(ca),
    }


async def test_the_listener_refuses_a_client_without_tls_and_credentials(secured):
    # What makes the next test mean something: nothing reaches this address in plaintext.
    _, listener, *_ = secured
    producer = AIOKafkaProducer(bootstrap_servers=listener.bootstrap, request_timeout_ms=3000)
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()


async def test_every_service_works_over_sasl_ssl_and_the_password_is_never_logged(secured, tmp_path):
    broker, listener, pki, password, password_file = secured
    platform = await start_platform(
        broker, tmp_path, "kafka-sasl", extra_env=service_env(listener, pki.ca, password_file)
    )
    try:
        async with platform.intake_channel() as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            metadata = (("x-smsgw-account", "default"),)
            reply = await stub.SendMessage(send_request(body="through SCRAM"), metadata=metadata)
            delivered = await wait_for_status(stub, reply.message.id, {st.DELIVERED}, metadata=metadata)
            assert delivered.status == st.DELIVERED
    finally:
        platform.stop()
    logs = {path.name: path.read_text(errors="replace") for path in tmp_path.glob("*.log")}
    assert {"intake.log", "routing.log", "carrier-adapter.log", "receipt.log"} <= logs.keys()
    for name, text in logs.items():
        assert password not in text, f"{name} logged the Kafka password"


def run_routing(env_overrides: dict[str, str], state_dir: Path) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        SMSGW_ENVIRONMENT="development",
        SMSGW_STATE_DIR=str(state_dir),
        SMSGW_TOPIC_PREFIX=f"sec{secrets.token_hex(4)}.",
        SMSGW_GRPC_PORT="0",
        SMSGW_KAFKA_REQUEST_TIMEOUT_MS="5000",
        **env_overrides,
    )
    return subprocess.run([sys.executable, "-m", "smsgw_routing"], env=env, capture_output=True, text=True, timeout=120)


async def test_a_wrong_password_stops_the_service_saying_authentication_failed(secured, tmp_path):
    _, listener, pki, _, _ = secured
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password")
    done = await asyncio.to_thread(run_routing, service_env(listener, pki.ca, wrong), tmp_path / "state")
    assert done.returncode != 0
    assert "Authentication failed" in done.stderr + done.stdout
    assert "not-the-password" not in done.stderr + done.stdout


async def test_a_broker_certificate_from_another_ca_stops_the_service(secured, tmp_path):
    _, listener, pki, _, password_file = secured
    done = await asyncio.to_thread(run_routing, service_env(listener, pki.other_ca, password_file), tmp_path / "state")
    assert done.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr + done.stdout


async def test_settings_that_cannot_work_stop_the_service_naming_them(tmp_path):
    # No broker needed: the settings are checked before anything connects.
    done = await asyncio.to_thread(
        run_routing,
        {
            "SMSGW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "SMSGW_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "absent"),
        },
        tmp_path / "state",
    )
    assert done.returncode != 0
    assert f"SMSGW_KAFKA_SASL_PASSWORD_FILE: no file at {tmp_path / 'absent'}" in done.stderr
