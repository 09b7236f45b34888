"""Default ports lie below Linux's ephemeral range (32768-60999): a port inside it can be held by one
of the machine's own outgoing connections, and `make run` started again within a minute of a stop
once failed on exactly that (50052, routing)."""

from __future__ import annotations

import pytest

from smsgw_carrier_adapter.__main__ import CarrierAdapterSettings
from smsgw_dev.devrun import DEFAULT_PORTS
from smsgw_intake.__main__ import IntakeSettings
from smsgw_receipt.__main__ import ReceiptSettings
from smsgw_routing.__main__ import RoutingSettings

EPHEMERAL = range(32768, 61000)


@pytest.mark.parametrize("settings", [IntakeSettings, RoutingSettings, CarrierAdapterSettings, ReceiptSettings])
def test_every_default_port_of_a_service_is_outside_the_ephemeral_range(settings):
    ports = {
        name: field.default
        for name, field in settings.model_fields.items()
        if name.endswith("_port") and isinstance(field.default, int) and field.default
    }
    assert ports, f"{settings.__name__} has no default port?"
    assert not {name: port for name, port in ports.items() if port in EPHEMERAL}


def test_make_runs_ports_are_outside_the_ephemeral_range():
    assert not {name: port for name, port in DEFAULT_PORTS.items() if port in EPHEMERAL}


def test_a_reserved_port_is_never_picked_at_random(monkeypatch):
    """make run's given ports (its gRPC ports from the environment) are reserved before the ports
    of the other processes are picked: a pick of the same port raced the service meant for it."""
    from smsgw.brokers import _base

    low = _base.free_port()  # a port free now, inside the range free_port picks from
    monkeypatch.setattr(_base, "_handed_out", set())
    monkeypatch.setattr(_base, "_PORT_RANGE", (low, low + 1))
    _base.reserve_ports(low, None)
    picked = {_base.free_port() for _ in range(3)}
    assert low not in picked
