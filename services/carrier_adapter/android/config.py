"""The configuration of one account's Android gateway phones (carrier kind "android")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator


class DeviceToken(BaseModel):
    model_config = {"extra": "forbid"}

    token: SecretStr = Field(min_length=16, description="the phone's secret, e.g. secrets.token_urlsafe(24)")
    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
    sim_slot: int | None = Field(None, ge=0, le=7, description="preferred SIM slot; unset: the phone's default")


class AndroidCarrier(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,31}$")
    kind: Literal["android"] = "android"
    account_id: str = Field(min_length=1)
    # Empty: every phone gets its token through the admin API (smsgw admin issue-device-token).
    device_tokens: list[DeviceToken] = Field(default_factory=list)
    ack_timeout: float = Field(10.0, gt=0, description="seconds a phone has to accept a send command")
    # A submit that times out raises CarrierUnavailable; the dispatcher's retry waits on the same phone again.
    sent_timeout: float = Field(30.0, gt=0, description="seconds a submit waits for an accepted message's sent report")

    @field_validator("device_tokens")
    @classmethod
    def _unique(cls, tokens: list[DeviceToken]) -> list[DeviceToken]:
        ids = [t.device_id for t in tokens]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"device ids must be unique within a carrier; repeated: {repeated}")
        secrets = [t.token.get_secret_value() for t in tokens]
        if len(set(secrets)) != len(secrets):
            raise ValueError("each device needs its own token; two devices share one")
        return tokens
