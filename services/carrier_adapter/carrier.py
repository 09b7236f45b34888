"""What the dispatcher and every carrier kind agree on: the client a carrier kind provides,
its answers, and the sink it reports what its peer tells it to (reports.ReportWriter implements it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev


class CarrierUnavailable(Exception):
    """The carrier cannot take the message right now; retry later, nothing is lost.

    `reason` is a stable code recorded on SubmitAttemptFailed. `in_doubt` says the request
    went out and no answer came back (connection lost, response timeout): the carrier may
    have taken the message, so a retry may deliver it twice. A carrier whose policy is
    `in_doubt: "fail"` has such a message failed instead (at most once).
    """

    def __init__(
        self,
        detail: str,
        *,
        reason: str = "CARRIER_UNAVAILABLE",
        in_doubt: bool = False,
        retry_after: float | None = None,
    ):
        super().__init__(detail)
        self.reason = reason
        self.in_doubt = in_doubt
        self.retry_after = retry_after  # the carrier's own hint (e.g. Retry-After), seconds


@dataclass(frozen=True)
class SubmitResult:
    """A carrier's final answer to one message: accepted with ids, or refused for good."""

    carrier_ids: tuple[str, ...] = ()  # normalised, one per part, when accepted
    failure: ev.MessageFailed | None = None  # set when refused; built by the carrier (its own codes)
    #: Set by the dispatcher, not a carrier: the message goes to another carrier (failover).
    rerouted: ev.MessageRerouted | None = None
    #: Set by the dispatcher, not a carrier: the validity ended before a carrier took it.
    expired: ev.DispatchExpired | None = None
    #: Set by the dispatcher, not a carrier: the message waits on the delay topic (deferral.py),
    #: for `laps` laps, its carrier failing it since `unavailable_since` (seconds since the epoch).
    deferred: ev.DispatchDeferred | None = None
    laps: int = 0
    unavailable_since: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.failure is None and self.rerouted is None and self.expired is None and self.deferred is None


class SubmitProgress(Protocol):
    """What a submit may resume from, and where it records progress (the dispatcher's submit
    ledger, submit_ledger.py): a carrier kind that sends a message in several requests (SMPP's
    long messages) resumes after the parts an earlier process recorded, and records each part
    the carrier takes before it sends the next. A kind that sends one request ignores both."""

    @property
    def resume(self) -> tuple[int, tuple[str, ...]] | None:
        """(concatenation reference, the carrier's ids of the parts already taken), or None."""

    async def parts_accepted(self, reference: int, carrier_ids: Sequence[str]) -> None:
        """The parts taken so far; returns once that is durable."""


class CarrierClient(Protocol):
    """What the dispatcher needs of a carrier, whatever its kind (SMPP, HTTP provider, Android phones)."""

    @property
    def name(self) -> str: ...

    @property
    def in_doubt_policy(self) -> str:
        """What to do when a submit's outcome is unknown (sent, no answer): "retry" submits again
        (a duplicate is possible), "fail" ends the message FAILED (never a duplicate)."""

    async def submit(self, command: cp.DispatchCommand, progress: SubmitProgress | None = None) -> SubmitResult:
        """Hands the message to the carrier. Raises CarrierUnavailable when it cannot answer now
        (the dispatcher retries with backoff; the message is never dropped). Called again for the
        same message after CarrierUnavailable: a carrier that remembers what already went out
        (e.g. parts of a long message) sends only the rest."""

    @property
    def concurrency(self) -> int | None:
        """Submits the carrier takes at once (an SMPP bind's window, an HTTP provider's
        max_concurrency); None: no bound of its own. The dispatcher lets a carrier run at least
        twice that many commands (parking.carrier_shares)."""

    @property
    def connected(self) -> bool | None:
        """Whether it can take a submit now by its own connection (an SMPP carrier's binds up, a
        phone attached); None: it has no connection of its own to tell (an HTTP provider is asked
        per request). Reported to routing (connection_reports.py), which skips a carrier no
        replica is connected to. It must recover without traffic (a rebind, a phone reattaching):
        routing sends none to it meanwhile."""

    def holds_part_of(self, message_id: str) -> bool:
        """Whether some part of the message already reached the carrier (a long message whose
        submit ended midway): it must then finish there, never move to another carrier."""

    def share_rate(self, share: float) -> None:
        """This replica's share (0-1] of the carrier's rate limit, which holds for all replicas
        together (Dispatcher._share_carrier_rates); a kind without a rate limit ignores it."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class CarrierReports(Protocol):
    """Where a carrier hands what its peer tells it (implemented by Dispatcher)."""

    async def on_receipt(
        self, carrier: str, carrier_message_id: str, state: int, carrier_state: str = "", error: str = ""
    ) -> None: ...

    async def on_inbound(
        self,
        carrier: str,
        source: str,
        destination: str,
        text: str,
        parts: int = 1,
        *,
        concat_reference: int = 0,
        part_number: int = 0,
        total_parts: int = 0,
        media_urls: Sequence[str] = (),
    ) -> None: ...
