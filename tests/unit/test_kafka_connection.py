"""smsgw.kafka.connection: the settings every Kafka client is built from, checked before anything
connects (tests/integration/test_kafka_security.py runs them against a SCRAM listener)."""

from __future__ import annotations

import ssl

import pytest

from smsgw.kafka.connection import KafkaConnection
from smsgw.settings import ServiceSettings
from smsgw_dev.devpki import make_pki


def test_a_connection_names_each_unusable_setting(tmp_path):
    # The pure checks, each case once (the unit of what the previous test sees through a process).
    problems = KafkaConnection(bootstrap="b:1", security_protocol="SASL_SSL", ssl_key_file=str(tmp_path)).problems()
    assert problems == [
        "SMSGW_KAFKA_SASL_USERNAME: required with SASL_SSL",
        "SMSGW_KAFKA_SASL_PASSWORD_FILE: required with SASL_SSL (a file holding the password)",
        f"SMSGW_KAFKA_SSL_KEY_FILE: no file at {tmp_path}",
        "SMSGW_KAFKA_SSL_CERT_FILE and SMSGW_KAFKA_SSL_KEY_FILE: give both or neither",
    ]
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    assert KafkaConnection(bootstrap="b:1", ssl_ca_file=str(ca)).problems() == [
        "SMSGW_KAFKA_SSL_CA_FILE: set, but SMSGW_KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no TLS"
    ]
    assert KafkaConnection(bootstrap="b:1").client_kwargs() == {
        "bootstrap_servers": "b:1",
        "security_protocol": "PLAINTEXT",
    }


def test_settings_read_the_password_from_its_file_without_the_trailing_newline(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("pa55word\n")
    connection = ServiceSettings(
        kafka_bootstrap="k:9093",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="svc",
        kafka_sasl_password_file=str(secret),
    ).kafka_connection()
    assert connection.client_kwargs() == {
        "bootstrap_servers": "k:9093",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pa55word",
    }
    assert "pa55word" not in repr(connection)


def test_settings_refuse_what_cannot_work_naming_the_settings(tmp_path):
    with pytest.raises(SystemExit, match="SMSGW_KAFKA_SASL_PASSWORD_FILE: no file at"):
        ServiceSettings(kafka_sasl_password_file=str(tmp_path / "absent")).kafka_connection()
    with pytest.raises(SystemExit, match="SMSGW_KAFKA_SASL_USERNAME: required with SASL_SSL"):
        ServiceSettings(kafka_security_protocol="SASL_SSL").kafka_connection()


def test_tls_verifies_the_broker_against_the_given_ca_and_can_present_a_client_certificate(tmp_path):
    pki = make_pki(tmp_path)
    context = KafkaConnection(
        bootstrap="k:9093",
        security_protocol="SSL",
        ssl_ca_file=str(pki.ca),
        ssl_cert_file=str(pki.client_cert),
        ssl_key_file=str(pki.client_key),
    ).client_kwargs()["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "smsgw development ca"),),)]
