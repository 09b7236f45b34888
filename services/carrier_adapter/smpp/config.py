"""The configuration of an SMSC reached over SMPP 3.4 (carrier kind "smpp")."""

from __future__ import annotations

import ssl
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from smsgw.secret_files import value_from_file
from smsgw.smpp.tls import client_context


class SmppCarrier(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,31}$")
    kind: Literal["smpp"] = "smpp"
    host: str = "127.0.0.1"
    port: int = Field(2775, ge=1, le=65535)
    # SMPP 3.4 sizes these C-octet strings with their terminating NUL (16, 9 and 13 octets).
    system_id: str = Field(max_length=15)
    password: str = Field(max_length=8)
    # A file holding the password instead (a mounted Secret): only the path is in the configuration.
    password_file: str | None = None
    system_type: str = Field("", max_length=12)
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
    # A submit_sm that went out without an answer (connection lost, response timeout) may or may
    # not be with the SMSC. "retry": send it again (at least once; a copy is possible). "fail":
    # fail the message with SUBMIT_IN_DOUBT (at most once; it may still arrive, unconfirmed).
    in_doubt: Literal["retry", "fail"] = "retry"
    # SMPP over TLS (the SMSC's TLS port, 3550 by convention and the default port then, or stunnel).
    tls: bool = False
    # PEM file of the CAs that sign the SMSC's certificate; None: the system's CAs.
    tls_ca_file: str | None = None
    # Check the SMSC's certificate and that it holds `host`. false: encrypted but not
    # authenticated, for a test SMSC only.
    tls_verify: bool = True
    # Client certificate (and its key, unless in the same PEM) for SMSCs that require mutual TLS.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _password_from_file(cls, data: Any) -> Any:
        return value_from_file(data, "password")

    @model_validator(mode="after")
    def _tls_settings_hold_together(self) -> SmppCarrier:
        set_without_tls = [
            name for name in ("tls_ca_file", "tls_cert_file", "tls_key_file") if getattr(self, name) is not None
        ] + ([] if self.tls_verify else ["tls_verify"])
        if not self.tls:
            if set_without_tls:
                raise ValueError(
                    f"{', '.join(set_without_tls)}: only for SMPP over TLS; set tls: true, or leave them out"
                )
            return self
        if "port" not in self.model_fields_set:
            self.port = 3550
        self.tls_context()  # missing or unreadable files fail here, at start, naming the setting
        return self

    def tls_context(self) -> ssl.SSLContext | None:
        """The context the SMPP client connects with; None without TLS."""
        if not self.tls:
            return None
        return client_context(
            ca_file=self.tls_ca_file, verify=self.tls_verify, cert_file=self.tls_cert_file, key_file=self.tls_key_file
        )
