"""The "twilio" carrier kind, for the adapter's table (carrier_adapter.kinds)."""

from __future__ import annotations

from ..kinds import CarrierKind
from .client import TwilioCarrierClient
from .config import TwilioCarrier

KIND = CarrierKind(name="twilio", config=TwilioCarrier, build=TwilioCarrierClient)
