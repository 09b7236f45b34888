"""What a client needs to use phones connected to other carrier-adapter replicas: the directory
of every replica's phones, the relay call to the replica holding one, and what such a call
answers. Protocols only here; presence.py and relay.py implement them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from smsgw.v1 import carrier_pb2 as cp

from ..carrier import SubmitResult
from .directory import DeviceDirectory
from .registry import RegisteredCarrier
from .state import DeviceState


@dataclass(frozen=True)
class RelayAnswer:
    """What trying one phone gave: a final result, or why not now."""

    result: SubmitResult | None = None
    reason: str = ""
    held: bool = False  # the phone accepted it (or may have): never hand it to another phone
    radio_down: bool = False  # the phone's radio just failed: pass it over for a while
    not_connected: bool = False  # the called replica does not hold the phone (a directory behind)
    unreachable: bool = False  # the call never reached the replica: nothing was sent
    moved: bool = False  # (this replica only) the phone moved to another replica: follow it


class PresenceSink(Protocol):
    """Told each time a phone's presence may have changed (presence.PresencePublisher)."""

    def changed(self, client: RegisteredCarrier, device: DeviceState) -> None: ...


class RelayCalls(Protocol):
    """Sends through a phone held by another replica (relay.RelayCaller)."""

    async def submit(
        self, address: str, command: cp.DispatchCommand, device_id: str, session_id: str, timeout: float
    ) -> RelayAnswer: ...


@dataclass
class ReplicaLinks:
    """What a client needs to use phones connected to other carrier-adapter replicas. Without it
    (one replica, or the in-process tests) a client sees only the phones connected to it."""

    replica_id: str  # unique per process: presence tells this replica's records apart
    directory: DeviceDirectory
    relay: RelayCalls
    presence: PresenceSink | None = None
