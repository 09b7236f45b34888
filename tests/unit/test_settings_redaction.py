"""What a service logs of its configuration at start holds no secret: the effective configuration
(not under a secret's name, not inside a JSON-valued setting, not as the password of a URL, a
DSN), nor the error naming what is wrong in the carrier list.

The last test starts intake itself with a DSN holding a password, to a port nobody listens on:
its whole output (the configuration line, then the failure to reach the database) is read.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from smsgw.settings import redacted, url_password_masked
from smsgw_carrier_adapter.__main__ import CarrierAdapterSettings
from smsgw_carrier_adapter.carriers import CarrierConfigError, load_carriers
from smsgw_intake.__main__ import IntakeSettings

DSN_PASSWORD = "pw9Zq4Lr7"
DSN = f"postgresql://smsgw:{DSN_PASSWORD}@127.0.0.1:9/smsgw?schema=proj"


def test_a_url_keeps_its_user_and_loses_its_password():
    assert url_password_masked(DSN) == "postgresql://smsgw:***@127.0.0.1:9/smsgw?schema=proj"
    # An unescaped '@' in the password: the userinfo ends at the host's last '@'.
    assert url_password_masked("postgresql://u:p@ss@db/x") == "postgresql://u:***@db/x"
    assert url_password_masked("see https://hook:tok3n@example.com/cb and sqlite:///x.db") == (
        "see https://hook:***@example.com/cb and sqlite:///x.db"
    )
    for unchanged in ("postgresql://smsgw@db:5432/smsgw", "sqlite:///x.db", "127.0.0.1:9092", "a:b@c"):
        assert url_password_masked(unchanged) == unchanged


def test_redacted_masks_a_dsn_under_any_name_and_secrets_inside_json():
    carriers = json.dumps(
        {"carriers": [{"name": "a", "password": 'q"uote', "base_url": "https://sid:tok@api.example.com"}]}
    )
    config = {
        "projection_store": DSN,
        "store": "postgres://u:pw2@db/x",
        "auth_token": "plain",
        "carriers": carriers,
        "grpc_port": 7,
    }
    shown = redacted(config)
    assert shown["projection_store"] == "postgresql://smsgw:***@127.0.0.1:9/smsgw?schema=proj"
    assert shown["store"] == "postgres://u:***@db/x"
    assert shown["auth_token"] == "***"
    assert shown["grpc_port"] == 7
    assert json.loads(shown["carriers"])["carriers"][0] == {
        "name": "a",
        "password": "***",
        "base_url": "https://sid:***@api.example.com",
    }


def test_the_effective_configuration_line_holds_neither_a_dsn_password_nor_smpp_passwords(caplog):
    smpp = [
        {"name": "one", "kind": "smpp", "system_id": "a", "password": "sm1Pw7xQ"},
        {"name": "two", "kind": "smpp", "system_id": "b", "password": "sm2Pw7xQ"},
    ]
    with caplog.at_level(logging.INFO):
        IntakeSettings(projection_store=DSN).log_effective("intake")
        CarrierAdapterSettings(carriers=json.dumps({"carriers": smpp})).log_effective("carrier-adapter")
    lines = [r.getMessage() for r in caplog.records if "effective configuration" in r.getMessage()]
    assert len(lines) == 2
    assert "postgresql://smsgw:***@127.0.0.1:9" in lines[0]
    for secret in (DSN_PASSWORD, "sm1Pw7xQ", "sm2Pw7xQ"):
        assert all(secret not in line for line in lines), secret


def test_a_wrong_carrier_list_is_explained_without_its_passwords_and_tokens():
    document = {
        "carriers": [
            # SMPP 3.4 has 8 octets for a password (9 with the NUL): 9 characters cannot be sent.
            {"name": "smpp-a", "kind": "smpp", "system_id": "a", "password": "sm9Pw7xQz"},
            {"name": "smpp-b", "kind": "smpp", "system_id": "b", "password": "sm2Pw7xQ", "in_doubt": "maybe"},
        ]
    }
    with pytest.raises(CarrierConfigError) as refused:
        load_carriers(json.dumps(document))
    shown = str(refused.value)
    assert "carriers.0.smpp.password" in shown and "at most 8 characters" in shown
    assert "carriers.1.smpp.in_doubt" in shown and "SMSGW_CARRIERS" in shown
    assert "sm9Pw7xQz" not in shown and "sm2Pw7xQ" not in shown and "maybe" not in shown
    # Nor in what a traceback prints under it.
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


def test_intake_failing_to_reach_its_store_never_prints_the_dsn_password(tmp_path):
    env = dict(
        os.environ,
        SMSGW_PROJECTION_STORE=DSN,
        SMSGW_GRPC_PLAINTEXT="true",
        SMSGW_ENVIRONMENT="development",
        SMSGW_STATE_DIR=str(tmp_path),
        SMSGW_KAFKA_BOOTSTRAP="127.0.0.1:9",  # never reached: the store is opened first
    )
    run = subprocess.run(
        [sys.executable, "-m", "smsgw_intake"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0
    # It did get as far as the configuration and the database: the check reads both.
    assert "effective configuration" in output and "postgresql://smsgw:***@127.0.0.1:9" in output
    assert "ConnectionRefusedError" in output
    assert DSN_PASSWORD not in output
