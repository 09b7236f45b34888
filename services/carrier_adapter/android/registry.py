"""Which phones may connect (the device tokens of every Android carrier), and which are connected."""

from __future__ import annotations

import hashlib
from typing import Protocol

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


class DeviceAuthError(Exception):
    """The token is unknown, or does not belong to the device id the phone claims."""


def _token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class DeviceRegistry:
    """Which phones may connect (the tokens of every Android carrier) and which are connected."""

    def __init__(self, *, ping_interval: float = 20.0, keepalive_timeout: float = 60.0, hello_timeout: float = 10.0):
        self.ping_interval = ping_interval
        self.keepalive_timeout = keepalive_timeout
        self.hello_timeout = hello_timeout
        self._tokens: dict[str, tuple[RegisteredCarrier, DeviceState]] = {}

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

    def unregister(self, client: RegisteredCarrier) -> None:
        for key in [k for k, (c, _) in self._tokens.items() if c is client]:
            del self._tokens[key]

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
