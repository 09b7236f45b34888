"""Carrier health from the message events (pure): is a carrier failing right now?

routing reads every event of the messages it owns; the submit outcomes among them tell how each
carrier is doing: CarrierAccepted is a success, SubmitAttemptFailed a failure (nothing durable
came back: not connected, timed out, throttled, provider error). A carrier is unhealthy while,
over the last `window_seconds`, it had at least `min_attempts` outcomes and at least
`max_failure_ratio` of them failed. Nothing else is needed to recover: failures age out of the
window, the carrier is healthy again and gets traffic, and stays healthy if that traffic goes
through (failures come back within seconds if it does not).

A replica sees the outcomes of its own partitions' messages: a sample of every carrier's
traffic (messages are spread over partitions by id). A permanent refusal (MessageFailed: an
invalid number, blocked content) says nothing about the carrier and is not counted.

Receipts are the second sign: a carrier that takes every message and then reports nearly all of
them undelivered (a grey route, a broken interconnect) is as useless as one that is down. Over
the same window, with at least `min_receipts` final receipts (one per part) of which at least
`max_undelivered_ratio` failed, the carrier is unhealthy too. A campaign to bad numbers fails
on every carrier alike, so the threshold is high (0.9) and needs many receipts (50).

The connection is the third sign, and the only one that needs no traffic: a carrier the
carrier-adapter replicas report and none reports connected (its SMPP bind is down, no phone is
attached) is unhealthy at once (carrier_connections.py). The reports are timed by the wall
clock of the replica that wrote them, so they are judged by `wall_clock`, whatever clock the
window's `now` is.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from smsgw.domain.carrier_connections import CarrierConnections
from smsgw.v1 import events_pb2 as ev

#: Receipts that say the message is still on its way: neither a delivery nor a failure yet.
_INTERMEDIATE_RECEIPTS = frozenset(
    {
        ev.DeliveryState.DELIVERY_STATE_UNSPECIFIED,
        ev.DeliveryState.DELIVERY_STATE_ACCEPTED,
        ev.DeliveryState.DELIVERY_STATE_ENROUTE,
    }
)


class HealthSettings(BaseModel):
    """The `carrier_health` section of the configuration file (and its defaults)."""

    model_config = ConfigDict(extra="forbid")

    window_seconds: float = Field(30.0, gt=0, le=3600, description="outcomes older than this are forgotten")
    min_attempts: int = Field(10, ge=1, le=100_000, description="fewer outcomes in the window: healthy")
    max_failure_ratio: float = Field(
        0.5, gt=0, le=1, description="this share of failed outcomes or more in the window: unhealthy"
    )
    min_receipts: int = Field(50, ge=1, le=100_000, description="fewer final receipts in the window: healthy")
    max_undelivered_ratio: float = Field(
        0.9, gt=0, le=1, description="this share of failed final receipts or more in the window: unhealthy"
    )


def load_health_section(value: object) -> HealthSettings:
    return HealthSettings.model_validate(value or {})


@dataclass
class _Outcomes:
    # (time, failed) in arrival order; the window trims from the left.
    entries: deque[tuple[float, bool]] = field(default_factory=deque)
    failures: int = 0


class CarrierHealth:
    def __init__(
        self,
        settings: HealthSettings | None = None,
        connections: CarrierConnections | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or HealthSettings()
        self._carriers: dict[str, _Outcomes] = {}
        self._receipts: dict[str, _Outcomes] = {}
        #: What the carrier-adapter replicas report of each carrier's connection (a reader fills it).
        self.connections = connections or CarrierConnections()
        self.wall_clock = wall_clock

    def record(self, carrier: str, *, failed: bool, at: float) -> None:
        """A submit outcome: accepted, or no final answer (SubmitAttemptFailed)."""
        self._add(self._carriers, carrier, failed, at)

    def observe(self, envelope: ev.EventEnvelope, kind: str | None, at: float) -> bool:
        """Records what a message event says about its carrier (`kind`: its payload's name);
        False for the events that say nothing about one (most of them)."""
        if kind == "carrier_accepted":
            self.record(envelope.carrier_accepted.carrier, failed=False, at=at)
            return True
        if kind == "submit_attempt_failed":
            attempt = envelope.submit_attempt_failed
            # With the attempts before it that have no event of their own (summed up on this one).
            for _ in range(1 + attempt.unrecorded_attempts):
                self.record(attempt.carrier, failed=True, at=at)
            return True
        if kind == "delivery_reported":
            receipt = envelope.delivery_reported
            if receipt.state not in _INTERMEDIATE_RECEIPTS:
                failed = receipt.state != ev.DeliveryState.DELIVERY_STATE_DELIVERED
                self.record_receipt(receipt.carrier, failed=failed, at=at)
            return True
        return False

    def record_receipt(self, carrier: str, *, failed: bool, at: float) -> None:
        """A final receipt of one part: delivered, or not (undeliverable, expired, rejected, ...)."""
        self._add(self._receipts, carrier, failed, at)

    def _add(self, table: dict[str, _Outcomes], carrier: str, failed: bool, at: float) -> None:
        outcomes = table.get(carrier)
        if outcomes is None:
            outcomes = table[carrier] = _Outcomes()
        outcomes.entries.append((at, failed))
        outcomes.failures += failed
        self._trim(outcomes, at)

    def _trim(self, outcomes: _Outcomes, now: float) -> None:
        horizon = now - self.settings.window_seconds
        entries = outcomes.entries
        while entries and entries[0][0] < horizon:
            _, failed = entries.popleft()
            outcomes.failures -= failed

    def failure_ratio(self, carrier: str, now: float) -> tuple[float, int]:
        """The share of failed submit outcomes in the window and how many outcomes there were."""
        return self._ratio(self._carriers, carrier, now)

    def undelivered_ratio(self, carrier: str, now: float) -> tuple[float, int]:
        """The share of failed final receipts in the window and how many receipts there were."""
        return self._ratio(self._receipts, carrier, now)

    def _ratio(self, table: dict[str, _Outcomes], carrier: str, now: float) -> tuple[float, int]:
        outcomes = table.get(carrier)
        if outcomes is None:
            return 0.0, 0
        self._trim(outcomes, now)
        total = len(outcomes.entries)
        return (outcomes.failures / total if total else 0.0), total

    def healthy(self, carrier: str, now: float) -> bool:
        if self.connections.disconnected(carrier, self.wall_clock()):
            return False
        settings = self.settings
        ratio, total = self.failure_ratio(carrier, now)
        if total >= settings.min_attempts and ratio >= settings.max_failure_ratio:
            return False
        ratio, total = self.undelivered_ratio(carrier, now)
        return total < settings.min_receipts or ratio < settings.max_undelivered_ratio

    def carriers(self) -> list[str]:
        return sorted(set(self._carriers) | set(self._receipts) | set(self.connections.carriers()))
