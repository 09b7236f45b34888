"""Carrier connections as the carrier-adapter replicas report them (pure): is a carrier reachable now?

Each replica reports, per carrier with a connection of its own (an SMPP bind, Android phones),
whether it can submit to it (`CarrierConnectionReported` on smsgw.carrier-connections.v1), when
that changes and every `refresh_seconds` while it lasts, and a tombstone when it stops. A report
older than `STALE_AFTER_REFRESHES` refreshes is stale: its replica is taken for gone (killed, cut
off from the brokers), and what it said no longer counts.

A carrier is **disconnected** when at least one replica reports it and none of them is connected:
no submit to it can succeed, so routing skips it from the first message, before any submit has
failed. A carrier nobody reports (an HTTP provider, or every reporter gone) is judged by its submits
and receipts alone (carrier_health.py): the absence of reports is not a sign of anything.

Times are the reporting replica's wall clock against the reader's; the margin of three refreshes
absorbs the clock differences of hosts kept by NTP.
"""

from __future__ import annotations

from dataclasses import dataclass

from smsgw.v1 import carrier_pb2 as cp

#: Refreshes a report may miss before it is stale.
STALE_AFTER_REFRESHES = 3


@dataclass(frozen=True)
class ConnectionReport:
    carrier: str
    replica_id: str
    connected: bool
    reported_at: float  # wall-clock seconds
    refresh_seconds: float

    def fresh(self, now: float) -> bool:
        return now - self.reported_at <= STALE_AFTER_REFRESHES * self.refresh_seconds


@dataclass(frozen=True)
class ConnectionState:
    """What the fresh reports on one carrier say."""

    reporting: int
    connected: int

    @property
    def disconnected(self) -> bool:
        return self.reporting > 0 and self.connected == 0


def report_key(carrier: str, replica_id: str) -> str:
    """The record key on smsgw.carrier-connections.v1 (compaction keeps the last per key)."""
    return f"{carrier}/{replica_id}"


def from_proto(report: cp.CarrierConnectionReported) -> ConnectionReport:
    return ConnectionReport(
        carrier=report.carrier,
        replica_id=report.replica_id,
        connected=report.connected,
        reported_at=report.reported_at.ToNanoseconds() / 1e9,
        refresh_seconds=report.refresh_seconds,
    )


class CarrierConnections:
    def __init__(self) -> None:
        self._reports: dict[str, dict[str, ConnectionReport]] = {}  # carrier -> replica -> latest

    def apply(self, report: ConnectionReport) -> None:
        replicas = self._reports.setdefault(report.carrier, {})
        previous = replicas.get(report.replica_id)
        # Compaction and retries can bring an older record after a newer one: the newest stands.
        if previous is None or report.reported_at >= previous.reported_at:
            replicas[report.replica_id] = report

    def forget(self, carrier: str, replica_id: str) -> None:
        """A tombstone: the replica stopped and holds no connection to the carrier any more."""
        replicas = self._reports.get(carrier)
        if replicas is not None:
            replicas.pop(replica_id, None)
            if not replicas:
                del self._reports[carrier]

    def state(self, carrier: str, now: float) -> ConnectionState:
        fresh = [r for r in self._reports.get(carrier, {}).values() if r.fresh(now)]
        return ConnectionState(reporting=len(fresh), connected=sum(r.connected for r in fresh))

    def disconnected(self, carrier: str, now: float) -> bool:
        return self.state(carrier, now).disconnected

    def carriers(self) -> list[str]:
        return sorted(self._reports)
