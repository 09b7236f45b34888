"""The declared carrier list: validated at start, with an error that says what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator

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


def load_carrier_section(value: object) -> CarrierList:
    """The configuration file's `carriers` section (a list); pydantic's errors locate problems
    in the file (smsgw.config_file prints them without the values: passwords)."""
    carriers = _CARRIER_LIST.validate_python(value)  # errors located in the list: [0].port
    try:
        return CarrierList(carriers=carriers)
    except ValidationError as exc:  # of the list as a whole (names repeated, none at all)
        raise ValueError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None


_CARRIER_LIST = TypeAdapter(list[Carrier])


def load_carriers(source: str) -> CarrierList:
    """`source` is a JSON document or the path of a JSON file holding {"carriers": [...]}."""
    inline = not source or source.lstrip().startswith("{")
    text = source if inline else Path(source).read_text()
    # The error goes to the log, and the document holds passwords and tokens: it names where a
    # problem is and what, never the value (pydantic's own message quotes each input).
    where = "SMSGW_CARRIERS" if inline else source
    try:
        return CarrierList.model_validate(json.loads(text))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        # from None: a chained ValidationError would be printed under this one, inputs and all.
        raise CarrierConfigError(f"invalid carrier configuration ({where}): {problems}") from None
    except ValueError as exc:  # not JSON: the decoder names a line and column, not the text
        raise CarrierConfigError(f"invalid carrier configuration ({where}): {exc}") from exc
