"""`smsgw routes explain --live`: the route a message would get now, and why.

Now means the route table routing uses now (the applied version, else the configuration's) and
the carriers' health as the event log shows it: intake's projector reads every message event,
and this feeds the same health tracker routing keeps (smsgw.domain.carrier_health) with each
submit outcome and receipt, timed by the event's own clock, so the events replayed at start
count only if they are recent. It is the platform-wide view; each routing replica judges from
its own partitions' messages, a sample of the same traffic.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from smsgw.domain.carrier_health import CarrierHealth, HealthSettings
from smsgw.domain.route_explanation import CarrierHealthState, Explanation, explain
from smsgw.domain.routes import MessageFacts, RouteTable
from smsgw.events.envelope import payload_kind
from smsgw.projections.store import LoggedEvent


class RouteExplainer:
    def __init__(
        self,
        configured: RouteTable,
        applied: Callable[[], tuple[int, RouteTable] | None],
        health: HealthSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.configured = configured
        self.applied = applied  # (version, table) of the route table applied last, if any
        self.health = CarrierHealth(health, wall_clock=clock)  # its clock is the wall clock
        self.clock = clock

    def on_committed(self, notice: LoggedEvent) -> None:
        """A projector listener: every message event, once stored."""
        envelope = notice.envelope
        at = envelope.occurred_at.seconds + envelope.occurred_at.nanos / 1e9
        self.health.observe(envelope, payload_kind(envelope), at)

    def healthy(self, carrier: str) -> bool:
        return self.health.healthy(carrier, self.clock())

    def state(self, carrier: str) -> CarrierHealthState:
        now = self.clock()
        failure_ratio, outcomes = self.health.failure_ratio(carrier, now)
        undelivered_ratio, receipts = self.health.undelivered_ratio(carrier, now)
        connection = self.health.connections.state(carrier, self.health.wall_clock())
        return CarrierHealthState(
            carrier=carrier,
            healthy=self.health.healthy(carrier, now),
            failure_ratio=failure_ratio,
            outcomes=outcomes,
            undelivered_ratio=undelivered_ratio,
            receipts=receipts,
            replicas_reporting=connection.reporting,
            replicas_connected=connection.connected,
        )

    def explain(self, facts: MessageFacts) -> tuple[int, str, Explanation]:
        """(table version, 0 for the configuration's; where the table came from; the explanation)."""
        applied = self.applied()
        if applied is None:
            version, table, source = 0, self.configured, "the configuration (no table applied)"
        else:
            version, table = applied
            source = f"route table version {version} (smsgw routes apply)"
        return version, source, explain(table, facts, self.healthy, self.state)
