"""The "smpp" carrier kind, for the adapter's table (carrier_adapter.kinds)."""

from __future__ import annotations

from ..kinds import CarrierKind
from .client import SmppCarrierClient
from .config import SmppCarrier

KIND = CarrierKind(name="smpp", config=SmppCarrier, build=SmppCarrierClient)
