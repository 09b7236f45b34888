"""Device tokens issued through the admin API: the fold and the decisions (smsgw.domain.device_tokens)
and how carrier-adapter's registry admits and withdraws them (no network)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import grpc
import pytest

from smsgw.domain import credentials as cr
from smsgw.domain import errors as de
from smsgw.domain.device_tokens import token_sha256
from smsgw_carrier_adapter.android.registry import DeviceAuthError, DeviceRegistry
from smsgw_carrier_adapter.android.state import DeviceConnection, DeviceState

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def directory_with(*accounts: str) -> cr.Directory:
    directory = cr.Directory()
    for account in accounts:
        directory.apply(directory.create_account(account, "", actor="admin", now=NOW))
    return directory


def test_issuing_records_only_the_hash_and_binds_account_carrier_and_device():
    directory = directory_with("acme")
    event, token = directory.issue_device_token("acme", "acme-phones", "pixel-1", 1, actor="admin-key", now=NOW)
    assert token.startswith(f"sgd_{event.device_token_issued.token_id}_") and len(token) > 40
    assert token not in event.SerializeToString().decode(errors="replace")
    directory.apply(event)
    (record,) = directory.device_tokens.of_account("acme")
    assert (record.account_id, record.carrier, record.device_id, record.sim_slot) == (
        "acme",
        "acme-phones",
        "pixel-1",
        1,
    )
    assert record.secret_sha256 == token_sha256(token) and record.live and record.created_by == "admin-key"
    assert directory.apply(event) is False  # a copy changes nothing


def test_one_live_token_per_phone_and_the_request_checked_field_by_field():
    directory = directory_with("acme")
    directory.apply(directory.issue_device_token("acme", "acme-phones", "pixel-1", None, actor="a", now=NOW)[0])
    with pytest.raises(de.DeviceTokenExists, match="revoke it first"):
        directory.issue_device_token("acme", "acme-phones", "pixel-1", None, actor="a", now=NOW)
    with pytest.raises(de.AccountNotFound):
        directory.issue_device_token("nobody", "acme-phones", "pixel-1", None, actor="a", now=NOW)
    for carrier, device_id, slot, field in (
        ("Bad Name", "pixel-2", None, "carrier"),
        ("acme-phones", "-starts-with-dash", None, "device_id"),
        ("acme-phones", "pixel-2", 8, "sim_slot"),
    ):
        with pytest.raises(de.InvalidArgument) as bad:
            directory.issue_device_token("acme", carrier, device_id, slot, actor="a", now=NOW)
        assert bad.value.field == field


def test_revoking_ends_the_token_and_frees_the_phone_for_a_new_one():
    directory = directory_with("acme")
    issued, _ = directory.issue_device_token("acme", "acme-phones", "pixel-1", None, actor="a", now=NOW)
    directory.apply(issued)
    token_id = issued.device_token_issued.token_id
    directory.apply(directory.revoke_device_token(token_id, "lost", actor="a", now=NOW))
    assert not directory.device_tokens.records[token_id].live
    with pytest.raises(de.DeviceTokenNotFound):
        directory.revoke_device_token(token_id, "again", actor="a", now=NOW)
    directory.issue_device_token("acme", "acme-phones", "pixel-1", None, actor="a", now=NOW)  # allowed again


class Carrier:
    """The registry's view of an Android carrier (registry.RegisteredCarrier)."""

    def __init__(self, name: str, account_id: str):
        self.name, self.account_id, self.closed = name, account_id, False
        self.devices: dict[str, DeviceState] = {}
        self.config = SimpleNamespace(device_tokens=[])  # no configured phones: every token is issued

    def add_device(self, device_id: str, sim_slot: int | None) -> DeviceState:
        return self.devices.setdefault(device_id, DeviceState(self.account_id, device_id, sim_slot))


def test_the_registry_admits_a_token_only_to_a_carrier_of_its_account_and_withdraws_it_at_once():
    directory = directory_with("acme", "mallory")
    registry = DeviceRegistry()
    acme = Carrier("acme-phones", "acme")
    registry.register(acme)
    event, token = directory.issue_device_token("acme", "acme-phones", "pixel-1", None, actor="a", now=NOW)
    directory.apply(event)
    record = directory.device_tokens.records[event.device_token_issued.token_id]
    assert registry.admit(record) == ""
    carrier, device = registry.authenticate(token, "pixel-1")
    assert carrier is acme and device is acme.devices["pixel-1"]

    foreign_event, foreign_token = directory.issue_device_token(
        "mallory", "acme-phones", "pixel-9", None, actor="a", now=NOW
    )
    directory.apply(foreign_event)
    problem = registry.admit(directory.device_tokens.records[foreign_event.device_token_issued.token_id])
    assert "of account 'mallory' names carrier 'acme-phones' of account 'acme'" in problem
    with pytest.raises(DeviceAuthError):
        registry.authenticate(foreign_token, "pixel-9")
    assert "pixel-9" not in acme.devices

    device.connection = DeviceConnection("pixel-1", "peer")
    directory.apply(directory.revoke_device_token(record.token_id, "lost", actor="a", now=NOW))
    registry.withdraw(directory.device_tokens.records[record.token_id])
    assert device.connection.close_code == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(DeviceAuthError):
        registry.authenticate(token, "pixel-1")
