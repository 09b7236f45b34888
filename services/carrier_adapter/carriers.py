"""The declared carrier list: validated at start, with an error that says what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, ValidationError, field_validator

from .android.config import AndroidCarrier
from .smpp.config import SmppCarrier
from .twilio.config import TwilioCarrier

# The carrier kinds' configuration models, `kind` picking one: each kind's package (smpp/, twilio/,
# android/) owns its model, its client and its `kind.py` entry for the adapter's table (kinds.py).
Carrier = Annotated[SmppCarrier | AndroidCarrier | TwilioCarrier, Field(discriminator="kind")]


class CarrierConfigError(ValueError):
    pass


class CarrierList(BaseModel):
    carriers: list[Carrier]

    @field_validator("carriers")
    @classmethod
    def _unique_names(cls, carriers):
        names = [c.name for c in carriers]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"carrier names must be unique; repeated: {sorted(duplicates)}")
        if not carriers:
            raise ValueError("at least one carrier is required")
        return carriers


def load_carriers(source: str) -> CarrierList:
    """`source` is a JSON document or the path of a JSON file holding {"carriers": [...]}."""
    text = Path(source).read_text() if source and not source.lstrip().startswith("{") else source
    try:
        return CarrierList.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise CarrierConfigError(f"invalid carrier configuration ({source[:80]}): {exc}") from exc
