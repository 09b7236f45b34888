"""What the adapter knows of each phone: its open stream, the messages handed to it, the
outcome each hand-over ends with. What a phone accepted outlives its streams."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import grpc

from smsgw.v1 import device_gateway_pb2 as dg


@dataclass(frozen=True)
class AttemptOutcome:
    # moved: the phone reconnected to another replica; what it accepted went with it.
    kind: Literal["sent", "failed", "rejected", "lost", "moved"]
    detail: str
    result: int = 0  # SmsManagerResult when failed
    error_code: int = 0
    reason: int = 0  # SendRejectReason when rejected
    note: str = ""  # the phone's own words (SendRejected.detail)
    part_count: int = 0  # when sent


class Attempt:
    """One hand-over of one message to one phone."""

    def __init__(self, device: DeviceState, message_id: str, attempt_id: str, *, adopted: bool = False):
        self.device = device
        self.message_id = message_id
        self.attempt_id = attempt_id
        self.adopted = adopted  # learnt from a hello's pending ids: the phone holds it, we never sent it
        self.accepted = adopted
        self.connection: DeviceConnection | None = device.connection
        self.parts: dict[int, dg.SendResult] = {}
        self.progress = asyncio.Event()  # set once accepted or resolved
        self.outcome: asyncio.Future[AttemptOutcome] = asyncio.get_running_loop().create_future()

    @property
    def resolved(self) -> bool:
        return self.outcome.done()

    def answers(self, attempt_id: str) -> bool:
        return self.adopted or attempt_id == self.attempt_id


class DeviceConnection:
    """One open stream of one phone: an outgoing queue and the reason it was closed, if it was."""

    def __init__(self, device_id: str, peer: str):
        self.device_id = device_id
        self.peer = peer
        self.session_id = str(uuid.uuid4())
        self.connected_at = time.time()  # wall clock: presence records compare sessions across replicas
        self.queue: asyncio.Queue[dg.ConnectResponse] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_code: grpc.StatusCode | None = None
        self.close_details = ""
        self.last_heard = time.monotonic()

    def write(self, frame: dg.ConnectResponse) -> None:
        if not self.closed.is_set():
            self.queue.put_nowait(frame)

    def close(self, code: grpc.StatusCode, details: str) -> None:
        if not self.closed.is_set():
            self.close_code, self.close_details = code, details
            self.closed.set()


class DeviceState:
    """A phone of an Android carrier, connected or not. What it accepted outlives its streams."""

    def __init__(self, account_id: str, device_id: str, sim_slot: int | None = None):
        self.account_id = account_id
        self.device_id = device_id
        self.sim_slot = sim_slot
        self.connection: DeviceConnection | None = None
        self.hello: dg.DeviceHello | None = None
        self.attempts: dict[str, Attempt] = {}  # message id -> unresolved attempt on this phone
        self.radio_down_until = 0.0
        self.last_dispatch = 0.0
        self.last_connected_at = 0.0  # wall clock of the latest session here
        self.relaying = 0  # relay calls in flight to it (when it is held by another replica)

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.closed.is_set()

    @property
    def outstanding(self) -> int:
        return len(self.attempts)

    @property
    def accepted_ids(self) -> set[str]:
        return {mid for mid, a in self.attempts.items() if a.accepted}

    def number_of_slot(self, slot: int) -> str:
        for sim in self.hello.sim_slots if self.hello else ():
            if sim.slot_index == slot and sim.phone_number:
                return sim.phone_number
        return ""
