"""The adapter's table of carrier kinds (carrier_adapter.kinds): every configured carrier gets the
client of its kind, in configuration order, and a kind the table lacks is refused by name."""

from __future__ import annotations

import json

import pytest

from smsgw_carrier_adapter.android.client import AndroidCarrierClient
from smsgw_carrier_adapter.android.kind import android_kind
from smsgw_carrier_adapter.android.registry import DeviceRegistry
from smsgw_carrier_adapter.carriers import load_carriers
from smsgw_carrier_adapter.kinds import UnknownKind, build_clients, table
from smsgw_carrier_adapter.smpp import kind as smpp_kind
from smsgw_carrier_adapter.smpp.client import SmppCarrierClient
from smsgw_carrier_adapter.twilio import kind as twilio_kind
from smsgw_carrier_adapter.twilio.client import TwilioCarrierClient

CARRIERS = {
    "carriers": [
        {
            "name": "phones",
            "kind": "android",
            "account_id": "acct",
            "device_tokens": [{"token": "a" * 24, "device_id": "p1"}],
        },
        {"name": "smsc", "kind": "smpp", "system_id": "a", "password": "b"},
        {
            "name": "tw",
            "kind": "twilio",
            "account_sid": "AC" + "0" * 32,
            "auth_token": "token",
            "from_number": "+14155550199",
            "status_callback_base_url": "https://cb.example",
        },
    ]
}


class Reports:
    async def on_receipt(self, *args, **kwargs) -> None: ...

    async def on_inbound(self, *args, **kwargs) -> None: ...


def test_each_carrier_gets_its_kinds_client_in_configuration_order():
    registry = DeviceRegistry()
    kinds = table([smpp_kind.KIND, twilio_kind.KIND, android_kind(registry)])
    reports = Reports()
    clients = build_clients(load_carriers(json.dumps(CARRIERS)).carriers, kinds, reports)
    assert [(type(c), c.name) for c in clients] == [
        (AndroidCarrierClient, "phones"),
        (SmppCarrierClient, "smsc"),
        (TwilioCarrierClient, "tw"),
    ]
    android = clients[0]
    assert isinstance(android, AndroidCarrierClient)
    assert android.registry is registry and android.reports is reports  # what the process shares


def test_a_kind_missing_from_the_table_is_refused_by_name():
    carriers = load_carriers(json.dumps(CARRIERS)).carriers
    with pytest.raises(UnknownKind, match=r"carrier 'phones': kind 'android' is not one of \['smpp', 'twilio'\]"):
        build_clients(carriers, table([smpp_kind.KIND, twilio_kind.KIND]), Reports())


def test_a_kind_registered_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        table([smpp_kind.KIND, smpp_kind.KIND])
