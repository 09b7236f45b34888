"""The declared carrier list: validated at start, with an error that says what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator

from .device_gateway import AndroidCarrier
from .http_carrier import HttpProviderCarrier


class SmppCarrier(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,31}$")
    kind: Literal["smpp"] = "smpp"
    host: str = "127.0.0.1"
    port: int = Field(2775, ge=1, le=65535)
    system_id: str = Field(max_length=16)
    password: str = Field(max_length=9)
    system_type: str = Field("", max_length=13)
    window: int = Field(10, ge=1, le=1000)
    enquire_link_interval: float = Field(30.0, gt=0)
    response_timeout: float = Field(10.0, gt=0)
    # "pair": a bind_transmitter for submits and a bind_receiver for receipts/MO.
    bind_mode: Literal["transceiver", "pair"] = "transceiver"
    # submit_sm per second on the bind (parts and retries count); None: only the window limits.
    max_tps: float | None = Field(None, gt=0)
    # How a long message is sent: concatenation UDH, sar_* TLVs, or one submit_sm with message_payload.
    long_message: Literal["udh", "sar", "payload"] = "udh"
    # Base of the message ids in this carrier's receipts (and, unless submit_id_radix says
    # otherwise, in its submit_sm_resp); None: auto-detect (docs/smpp.md, message ids).
    receipt_id_radix: Literal[10, 16] | None = None
    # Base of the submit_sm_resp ids when it differs from the receipts' (hex there, decimal
    # in the receipt text: Kannel's msg-id-type 0x02). None: the same as receipt_id_radix.
    submit_id_radix: Literal[10, 16] | None = None


# Each carrier kind's module owns its config model.
Carrier = Annotated[Union[SmppCarrier, AndroidCarrier, HttpProviderCarrier], Field(discriminator="kind")]


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
