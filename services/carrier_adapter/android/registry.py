"""Which phones may connect (the device tokens of every Android carrier), and which are connected.

A token comes from the carrier list (configuration) or from the account log (issued through the
admin API, smsgw.domain.device_tokens); either way only its SHA-256 is kept here."""

from __future__ import annotations

from typing import Protocol

import grpc

from smsgw.domain.device_tokens import DeviceTokenRecord, token_sha256

from .config import AndroidCarrier
from .state import DeviceState


class RegisteredCarrier(Protocol):
    """An Android carrier's client as the registry sees it (client.AndroidCarrierClient)."""

    name: str
    account_id: str
    config: AndroidCarrier
    devices: dict[str, DeviceState]

    @property
    def closed(self) -> bool: ...

    def add_device(self, device_id: str, sim_slot: int | None) -> DeviceState: ...


class DeviceAuthError(Exception):
    """The token is unknown, or does not belong to the device id the phone claims."""


_token_key = token_sha256


class DeviceRegistry:
    """Which phones may connect (the tokens of every Android carrier) and which are connected."""

    def __init__(self, *, ping_interval: float = 20.0, keepalive_timeout: float = 60.0, hello_timeout: float = 10.0):
        self.ping_interval = ping_interval
        self.keepalive_timeout = keepalive_timeout
        self.hello_timeout = hello_timeout
        self._tokens: dict[str, tuple[RegisteredCarrier, DeviceState]] = {}
        self._carriers: dict[str, RegisteredCarrier] = {}

    def register(self, client: RegisteredCarrier) -> None:
        keys = {}
        for token in client.config.device_tokens:
            key = _token_key(token.token.get_secret_value())
            owner = self._tokens.get(key)
            if owner is not None and owner[0] is not client and not owner[0].closed:
                raise ValueError(
                    f"the token of device {token.device_id} (carrier {client.name}) is already used by "
                    f"device {owner[1].device_id} of carrier {owner[0].name}; give each phone its own"
                )
            keys[key] = (client, client.devices[token.device_id])
        # Presence records name a phone by account and device id: one account cannot have two phones of one id.
        for other in {c for c, _ in self._tokens.values() if c is not client and not c.closed}:
            shared = sorted(set(other.devices) & set(client.devices)) if other.account_id == client.account_id else []
            if shared:
                raise ValueError(
                    f"device ids {shared} are in carriers {other.name} and {client.name} of account "
                    f"{client.account_id}; a device id names one phone of an account"
                )
        self._tokens.update(keys)
        self._carriers[client.name] = client

    def unregister(self, client: RegisteredCarrier) -> None:
        for key in [k for k, (c, _) in self._tokens.items() if c is client]:
            del self._tokens[key]
        if self._carriers.get(client.name) is client:
            del self._carriers[client.name]

    def admit(self, token: DeviceTokenRecord) -> str:
        """Lets the phone of an issued token in; what stops it ("" when admitted), for the log."""
        client = self._carriers.get(token.carrier)
        if client is None or client.closed:
            return (
                f"device token {token.token_id} names carrier {token.carrier!r}, which is not an Android carrier "
                f"here ({', '.join(sorted(self._carriers)) or 'none'}); its phone cannot connect"
            )
        if client.account_id != token.account_id:
            # Tokens are issued per account: one account's admin never opens another's carrier.
            return (
                f"device token {token.token_id} of account {token.account_id!r} names carrier {token.carrier!r} "
                f"of account {client.account_id!r}; its phone cannot connect"
            )
        owner = self._tokens.get(token.secret_sha256)
        if owner is not None and owner[0] is not client:
            return f"device token {token.token_id} is already a token of carrier {owner[0].name}"
        self._tokens[token.secret_sha256] = (client, client.add_device(token.device_id, token.sim_slot))
        return ""

    def withdraw(self, token: DeviceTokenRecord) -> None:
        """A revoked token: it opens nothing from now on, and its phone's open stream is ended."""
        found = self._tokens.pop(token.secret_sha256, None)
        if found is not None and found[1].connection is not None:
            found[1].connection.close(
                grpc.StatusCode.UNAUTHENTICATED, f"device token {token.token_id} was revoked; ask for a new one"
            )

    def knows(self, token: str) -> bool:
        return _token_key(token) in self._tokens

    def authenticate(self, token: str, device_id: str) -> tuple[RegisteredCarrier, DeviceState]:
        found = self._tokens.get(_token_key(token))
        if found is None:
            raise DeviceAuthError(
                f"unknown device token (hello.device_id {device_id!r}); check the token configured "
                f"in the app against the device_tokens of the account's Android carrier"
            )
        client, device = found
        if device_id != device.device_id:
            raise DeviceAuthError(
                f"this device token was issued for device {device.device_id!r}, "
                f"not {device_id!r}; send the device id the token belongs to"
            )
        return client, device

    def connected(self, account_id: str | None = None) -> list[DeviceState]:
        """Connected phones, of one account or of all."""
        return [
            d for _, d in self._tokens.values() if d.connected and (account_id is None or d.account_id == account_id)
        ]
