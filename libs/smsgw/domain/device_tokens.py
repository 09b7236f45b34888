"""Android gateway phones' credentials issued through the admin API (pure, no I/O).

A device token is ``sgd_<id>_<secret>``, made like an API key (smsgw.domain.credentials): a
public id of 16 hex characters, 256 random bits, shown once, only its SHA-256 kept. It is bound
to one account, one of that account's Android carriers and one device id, and it opens
DeviceGatewayService only: intake knows no ``sgd_`` credential, so it can never call the API.

Issued and revoked tokens are AccountEvents, folded here by intake (for the admin API) and by
every carrier-adapter replica (to let phones in). Tokens in the carrier list
(``device_tokens`` of an Android carrier) stay: they are configuration, like bootstrap keys.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime

from smsgw.domain import errors as de
from smsgw.events.envelope import timestamp, to_datetime
from smsgw.v1 import accounts_pb2 as ac

TOKEN_PREFIX = "sgd"
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")  # as config.DeviceToken.device_id
CARRIER_NAME = re.compile(r"^[a-z0-9][a-z0-9\-]{0,31}$")  # as the carrier list's names
_TOKEN_ID = re.compile(r"^[0-9a-f]{16}$")


def new_device_token() -> tuple[str, str]:
    """A fresh (token id, whole token)."""
    token_id = secrets.token_hex(8)
    return token_id, f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class DeviceTokenRecord:
    token_id: str
    account_id: str
    carrier: str
    device_id: str
    sim_slot: int | None
    secret_sha256: str
    created_at: datetime | None
    created_by: str
    revoked_at: datetime | None = None

    @property
    def live(self) -> bool:
        return self.revoked_at is None

    def to_proto(self) -> ac.DeviceToken:
        token = ac.DeviceToken(
            id=self.token_id,
            account_id=self.account_id,
            carrier=self.carrier,
            device_id=self.device_id,
            created_by=self.created_by,
        )
        if self.sim_slot is not None:
            token.sim_slot = self.sim_slot
        if self.created_at is not None:
            token.created_at.CopyFrom(timestamp(self.created_at))
        if self.revoked_at is not None:
            token.revoked_at.CopyFrom(timestamp(self.revoked_at))
        return token


class DeviceTokens:
    """The issued device tokens, folded from AccountEvents; decides new issues and revocations."""

    def __init__(self) -> None:
        self.records: dict[str, DeviceTokenRecord] = {}

    def apply(self, event: ac.AccountEvent) -> DeviceTokenRecord | None:
        """Folds one event in; the token it issued or revoked, None for any other event (or a copy)."""
        kind = event.WhichOneof("payload")
        if kind == "device_token_issued":
            issued = event.device_token_issued
            if issued.token_id in self.records:
                return None
            record = DeviceTokenRecord(
                issued.token_id,
                event.account_id,
                issued.carrier,
                issued.device_id,
                issued.sim_slot if issued.HasField("sim_slot") else None,
                issued.secret_sha256,
                to_datetime(event.occurred_at),
                event.actor,
            )
        elif kind == "device_token_revoked":
            old = self.records.get(event.device_token_revoked.token_id)
            if old is None or not old.live:
                return None
            record = replace(old, revoked_at=to_datetime(event.occurred_at))
        else:
            return None
        self.records[record.token_id] = record
        return record

    def issue(
        self,
        account_id: str,
        carrier: str,
        device_id: str,
        sim_slot: int | None,
    ) -> tuple[ac.DeviceTokenIssued, str]:
        """What a new token's event says, and the token (the account is checked by the caller)."""
        if not CARRIER_NAME.match(carrier):
            raise de.InvalidArgument(
                f"carrier: {carrier[:64]!r} is not a carrier name (1-32 lowercase letters, digits or '-'); "
                "give the name of the account's Android carrier in carrier-adapter's carrier list",
                field="carrier",
            )
        if not DEVICE_ID.match(device_id):
            raise de.InvalidArgument(
                f"device_id: {device_id[:64]!r} is not a device id (1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit)",
                field="device_id",
            )
        if sim_slot is not None and not 0 <= sim_slot <= 7:
            raise de.InvalidArgument(f"sim_slot: {sim_slot} is not a SIM slot (0-7)", field="sim_slot")
        live = [
            r
            for r in self.records.values()
            if r.live and (r.account_id, r.carrier, r.device_id) == (account_id, carrier, device_id)
        ]
        if live:
            raise de.DeviceTokenExists(
                f"device_id: device {device_id!r} of carrier {carrier!r} has a live token ({live[0].token_id}); "
                "revoke it first (smsgw admin revoke-device-token), one token per phone",
                field="device_id",
            )
        token_id, token = new_device_token()
        issued = ac.DeviceTokenIssued(
            token_id=token_id, carrier=carrier, device_id=device_id, secret_sha256=token_sha256(token)
        )
        if sim_slot is not None:
            issued.sim_slot = sim_slot
        return issued, token

    def live(self, token_id: str) -> DeviceTokenRecord:
        record = self.records.get(token_id)
        if record is None or not record.live:
            raise de.DeviceTokenNotFound(f"token_id: no live device token {token_id[:64]!r}", field="token_id")
        return record

    def of_account(self, account_id: str) -> list[DeviceTokenRecord]:
        return sorted(
            (r for r in self.records.values() if r.account_id == account_id),
            key=lambda r: (r.created_at or datetime.min, r.token_id),
        )


def token_sha256(token: str) -> str:
    """What the log keeps of a token; the registry looks a presented token up by it."""
    return hashlib.sha256(token.encode()).hexdigest()
