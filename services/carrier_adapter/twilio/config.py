"""The configuration of a Twilio-compatible HTTP provider account (carrier kind "twilio")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from smsgw.secret_files import value_from_file

API_VERSION = "2010-04-01"
#: Where the adapter's web server takes each carrier's callbacks (see callbacks.py).
STATUS_CALLBACK_PATH = "/callbacks/{carrier}/status"
INBOUND_PATH = "/callbacks/{carrier}/inbound"
#: Twilio keeps an undelivered message at most this long (its ValidityPeriod limit, seconds).
MAX_VALIDITY_PERIOD = 36000


class TwilioCarrier(BaseModel):
    """An HTTP SMS provider account (Twilio's API, or anything that speaks it)."""

    model_config = {"extra": "forbid"}

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,31}$")
    kind: Literal["twilio"] = "twilio"
    base_url: str = "https://api.twilio.com"
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr = Field(min_length=1)
    #: A file holding the auth token instead (a mounted Secret): only the path is in the configuration.
    auth_token_file: str | None = None
    #: The account's sender: a number (or alphanumeric id) of the account, a Messaging Service, or both.
    from_number: str | None = Field(None, min_length=1, max_length=32)
    messaging_service_sid: str | None = Field(None, pattern=r"^MG[0-9a-fA-F]{32}$")
    #: "configured": always send from the account's sender above (intake gives every message a default
    #: sender, which the provider would refuse with 21606 unless the account owns it). "message": the
    #: message's own `from` (when set) is sent as From; the account must own it.
    sender_source: Literal["configured", "message"] = "configured"
    #: The public base URL at which the provider reaches this adapter's callback server.
    status_callback_base_url: str
    supports_mms: bool = True
    request_timeout: float = Field(10.0, gt=0)
    max_concurrency: int = Field(10, ge=1, le=1000)
    #: The longest Retry-After honoured before CarrierUnavailable is raised (longer ones are cut to this).
    retry_after_max: float = Field(30.0, gt=0)
    #: Wait after a 429 that has no Retry-After.
    retry_after_default: float = Field(1.0, ge=0)
    #: A request that went out without an answer (timeout, connection cut): "retry" sends it again (at
    #: least once; the provider may then have two), "fail" fails it with SUBMIT_IN_DOUBT (at most once).
    in_doubt: Literal["retry", "fail"] = "retry"

    @model_validator(mode="before")
    @classmethod
    def _auth_token_from_file(cls, data: Any) -> Any:
        return value_from_file(data, "auth_token")

    @field_validator("base_url", "status_callback_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _a_sender(self) -> TwilioCarrier:
        if not self.from_number and not self.messaging_service_sid:
            raise ValueError("set from_number or messaging_service_sid (or both)")
        return self

    @property
    def status_callback_url(self) -> str:
        return self.status_callback_base_url + STATUS_CALLBACK_PATH.format(carrier=self.name)

    @property
    def inbound_url(self) -> str:
        """Configure this as the phone number's (or Messaging Service's) incoming-message webhook."""
        return self.status_callback_base_url + INBOUND_PATH.format(carrier=self.name)

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"
