"""The Android carrier's configuration and the device registry's token rules (no I/O)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from smsgw_carrier_adapter.android.client import AndroidCarrierClient
from smsgw_carrier_adapter.android.config import AndroidCarrier
from smsgw_carrier_adapter.android.registry import DeviceAuthError, DeviceRegistry

TOKEN_A = "a" * 24
TOKEN_B = "b" * 24


def carrier(name: str = "phones", **overrides) -> AndroidCarrier:
    return AndroidCarrier.model_validate(
        {
            "name": name,
            "kind": "android",
            "account_id": "acct-1",
            "device_tokens": [
                {"token": TOKEN_A, "device_id": "pixel-1", "sim_slot": 1},
                {"token": TOKEN_B, "device_id": "pixel-2"},
            ],
            **overrides,
        }
    )


def test_defaults_and_secret_token() -> None:
    config = carrier()
    assert (config.ack_timeout, config.sent_timeout) == (10.0, 30.0)
    assert config.device_tokens[0].sim_slot == 1 and config.device_tokens[1].sim_slot is None
    assert TOKEN_A not in repr(config) and TOKEN_A not in str(config.model_dump())


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"device_tokens": [{"token": "short", "device_id": "p"}]}, "at least 16"),
        ({"device_tokens": [{"token": TOKEN_A, "device_id": "p"}, {"token": TOKEN_B, "device_id": "p"}]}, "repeated"),
        ({"device_tokens": [{"token": TOKEN_A, "device_id": "p"}, {"token": TOKEN_A, "device_id": "q"}]}, "own token"),
        ({"device_tokens": [{"token": TOKEN_A, "device_id": "has:colon"}]}, "pattern"),
        ({"ack_timeout": 0}, "greater than 0"),
        ({"kind": "smpp"}, "android"),
        ({"device_tokens": [{"token": TOKEN_A, "device_id": "p", "secret": "x"}]}, "Extra inputs"),
    ],
)
def test_invalid_configuration_says_what_is_wrong(overrides: dict, complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        carrier(**overrides)


def test_a_carrier_may_list_no_tokens_and_get_them_through_the_admin_api() -> None:
    assert carrier(device_tokens=[]).device_tokens == []


class _NoReports:
    async def on_receipt(self, *args, **kwargs): ...
    async def on_inbound(self, *args, **kwargs): ...


async def test_registry_authenticates_token_and_device() -> None:
    registry = DeviceRegistry()
    client = AndroidCarrierClient(carrier(), _NoReports(), registry)
    await client.start()
    found, device = registry.authenticate(TOKEN_B, "pixel-2")
    assert found is client and device.device_id == "pixel-2" and device.account_id == "acct-1"
    with pytest.raises(DeviceAuthError, match="unknown device token"):
        registry.authenticate("c" * 24, "pixel-2")
    with pytest.raises(DeviceAuthError, match="issued for device 'pixel-1', not 'pixel-2'"):
        registry.authenticate(TOKEN_A, "pixel-2")
    assert registry.connected("acct-1") == []


async def test_a_token_belongs_to_one_carrier() -> None:
    registry = DeviceRegistry()
    await AndroidCarrierClient(carrier("phones"), _NoReports(), registry).start()
    other = AndroidCarrierClient(carrier("other"), _NoReports(), registry)
    with pytest.raises(ValueError, match="already used by device pixel-1 of carrier phones"):
        await other.start()


async def test_a_device_id_names_one_phone_of_an_account_across_its_carriers() -> None:
    # Presence records (several replicas) are keyed <account>/<device>: two carriers of one account
    # cannot both have a "pixel-1"; another account can.
    registry = DeviceRegistry()
    await AndroidCarrierClient(carrier("phones"), _NoReports(), registry).start()
    tokens = [{"token": "c" * 24, "device_id": "pixel-1"}, {"token": "d" * 24, "device_id": "pixel-9"}]
    same_account = AndroidCarrierClient(carrier("more-phones", device_tokens=tokens), _NoReports(), registry)
    with pytest.raises(
        ValueError,
        match=r"device ids \['pixel-1'\] are in carriers phones and more-phones "
        r"of account acct-1",
    ):
        await same_account.start()
    other_account = AndroidCarrierClient(
        carrier("their-phones", account_id="acct-2", device_tokens=tokens), _NoReports(), registry
    )
    await other_account.start()
    assert registry.authenticate("c" * 24, "pixel-1")[0] is other_account
