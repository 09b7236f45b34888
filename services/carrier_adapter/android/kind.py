"""The "android" carrier kind, for the adapter's table (carrier_adapter.kinds).

Its clients share what the adapter process holds for every Android carrier: the registry of
device tokens (DeviceGatewayService authenticates against it) and, with several replicas, the
links to the others; hence a kind made for one process, not a constant.
"""

from __future__ import annotations

from ..carrier import CarrierReports
from ..kinds import CarrierKind
from .client import AndroidCarrierClient
from .config import AndroidCarrier
from .links import ReplicaLinks
from .registry import DeviceRegistry


def android_kind(registry: DeviceRegistry, links: ReplicaLinks | None = None) -> CarrierKind:
    def build(config: AndroidCarrier, reports: CarrierReports) -> AndroidCarrierClient:
        return AndroidCarrierClient(config, reports, registry, links=links)

    return CarrierKind(name="android", config=AndroidCarrier, build=build)
