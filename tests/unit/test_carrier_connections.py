"""Carrier connections as health: the fold of the replicas' reports, staleness, tombstones, what
routing's health and metrics make of them, and what carrier-adapter's reporter writes when."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from smsgw.domain.carrier_connections import STALE_AFTER_REFRESHES, CarrierConnections, ConnectionReport
from smsgw.domain.carrier_health import CarrierHealth, HealthSettings
from smsgw.kafka.carrier_connection_reader import CarrierConnectionReader
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev
from smsgw_carrier_adapter.connection_reports import ConnectionReporter
from smsgw_routing.health_metrics import CarrierHealthMetrics

T = 1_800_000_000.0  # wall-clock seconds


def report(carrier="smsc", replica="a#1", connected=False, at=T, refresh=5.0) -> ConnectionReport:
    return ConnectionReport(carrier, replica, connected=connected, reported_at=at, refresh_seconds=refresh)


def test_a_carrier_is_disconnected_only_when_reported_and_connected_on_no_replica():
    connections = CarrierConnections()
    assert not connections.disconnected("smsc", T), "not reported: no sign either way"
    connections.apply(report(replica="a#1", connected=False))
    assert connections.disconnected("smsc", T)
    connections.apply(report(replica="b#2", connected=True))
    assert not connections.disconnected("smsc", T)
    assert connections.state("smsc", T).reporting == 2 and connections.state("smsc", T).connected == 1
    connections.forget("smsc", "b#2")  # the connected replica stopped
    assert connections.disconnected("smsc", T)
    connections.forget("smsc", "a#1")
    assert not connections.disconnected("smsc", T) and connections.carriers() == []


def test_a_report_goes_stale_after_three_missed_refreshes():
    connections = CarrierConnections()
    connections.apply(report(connected=False, at=T, refresh=5.0))
    limit = T + STALE_AFTER_REFRESHES * 5.0
    assert connections.disconnected("smsc", limit)
    assert not connections.disconnected("smsc", limit + 0.01), "a replica killed without a tombstone stops counting"
    # A connected replica that went stale no longer vouches for the carrier either.
    connections.apply(report(replica="b#2", connected=True, at=T + 100))
    connections.apply(report(replica="c#3", connected=False, at=T + 116))
    assert connections.disconnected("smsc", T + 116)


def test_an_older_record_read_after_a_newer_one_does_not_undo_it():
    connections = CarrierConnections()
    connections.apply(report(connected=True, at=T + 10))
    connections.apply(report(connected=False, at=T + 5))
    assert not connections.disconnected("smsc", T + 10)


def test_health_skips_a_disconnected_carrier_without_any_outcome_and_takes_it_back_when_connected():
    wall = [T]
    health = CarrierHealth(HealthSettings(min_attempts=1), wall_clock=lambda: wall[0])
    assert health.healthy("smsc", now=0.0)
    health.connections.apply(report(connected=False, at=T))
    assert not health.healthy("smsc", now=0.0), "the bind is down: skipped before any submit fails"
    assert "smsc" in health.carriers()
    wall[0] = T + 1
    health.connections.apply(report(connected=True, at=T + 1))
    assert health.healthy("smsc", now=0.0)
    # Connected, but its submits fail: the other signs still count.
    for n in range(3):
        health.record("smsc", failed=True, at=float(n))
    assert not health.healthy("smsc", now=3.0)


def test_the_reader_folds_reports_and_tombstones_as_written():
    connections = CarrierConnections()
    reader = CarrierConnectionReader(None, "t", "127.0.0.1:1", connections)
    written = cp.CarrierConnectionReported(
        carrier="smsc-sim", replica_id="adapter-0#ab12", kind="smpp", connected=False, refresh_seconds=5
    )
    written.reported_at.FromNanoseconds(int(T * 1e9))
    reader.apply(b"smsc-sim/adapter-0#ab12", written.SerializeToString())
    assert connections.disconnected("smsc-sim", T + 1)
    reader.apply(b"smsc-sim/adapter-0#ab12", None)
    assert connections.carriers() == [] and not connections.disconnected("smsc-sim", T + 1)


def test_routing_shows_connected_1_or_0_per_reported_carrier_and_nothing_for_the_others():
    wall = [T]
    health = CarrierHealth(wall_clock=lambda: wall[0])
    health.connections.apply(report(carrier="smsc", connected=False))
    health.connections.apply(report(carrier="phones", connected=True))
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    CarrierHealthMetrics(health, lambda: frozenset({"smsc", "phones", "twilio"})).instrument(meter)

    def connected() -> dict[str, float]:
        for scope in reader.get_metrics_data().resource_metrics[0].scope_metrics:
            for metric in scope.metrics:
                if metric.name == "smsgw_carrier_connected":
                    return {p.attributes["carrier"]: p.value for p in metric.data.data_points}
        return {}

    assert connected() == {"smsc": 0.0, "phones": 1.0}
    wall[0] = T + 60  # both reports stale: nobody says anything
    assert connected() == {}


class _Client:
    def __init__(self, name: str, connected: bool | None) -> None:
        self.name = name
        self.connected = connected


class _Producer:
    """Records what would be written (the reporter's timing is under test here; the topic round trip is
    in tests/integration/test_carrier_connection_health.py)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, cp.CarrierConnectionReported | None]] = []

    def last(self) -> cp.CarrierConnectionReported:
        value = self.sent[-1][1]
        assert value is not None
        return value

    async def send_and_wait(self, topic: str, key: bytes, value: bytes | None) -> None:
        self.sent.append((key, cp.CarrierConnectionReported.FromString(value) if value is not None else None))


def test_the_reporter_writes_on_change_and_every_refresh_and_tombstones_at_stop():
    async def scenario() -> None:
        now = [T]
        producer = _Producer()
        smpp, http = _Client("smsc", False), _Client("twilio", None)
        reporter = ConnectionReporter(
            producer,
            "t",
            [smpp, http],  # type: ignore[list-item]  # a name and a connection state is all it reads
            replica_id="a#1",
            kinds={"smsc": "smpp", "twilio": "twilio"},
            refresh_seconds=5.0,
            clock=lambda: now[0],
        )
        assert reporter.carriers == ["smsc"], "an HTTP provider has no connection to report"
        await reporter.report_due()
        key, first = producer.sent[-1]
        assert key == b"smsc/a#1" and first is not None and not first.connected and first.kind == "smpp"
        assert first.refresh_seconds == 5.0 and first.reported_at.ToNanoseconds() == int(T * 1e9)
        now[0] = T + 1
        await reporter.report_due()
        assert len(producer.sent) == 1, "nothing changed, no refresh due"
        smpp.connected = True
        now[0] = T + 1.25
        await reporter.report_due()
        assert len(producer.sent) == 2 and producer.last().connected
        assert producer.last().changed_at.ToNanoseconds() == int((T + 1.25) * 1e9)
        now[0] = T + 6.3
        await reporter.report_due()
        assert len(producer.sent) == 3, "refreshed after refresh_seconds"
        assert producer.last().changed_at.ToNanoseconds() == int((T + 1.25) * 1e9), "still since the change"
        await reporter.stop()
        assert producer.sent[-1] == (b"smsc/a#1", None)

    asyncio.run(scenario())


def test_a_failure_event_counts_the_attempts_summed_up_on_it_too():
    health = CarrierHealth(HealthSettings(window_seconds=10, min_attempts=5, max_failure_ratio=0.5))
    failed = ev.EventEnvelope(
        submit_attempt_failed=ev.SubmitAttemptFailed(carrier="smsc", attempt=8, unrecorded_attempts=2)
    )
    assert health.observe(failed, "submit_attempt_failed", at=100.0)
    assert health.failure_ratio("smsc", 100.0) == (1.0, 3)
    assert health.healthy("smsc", 100.0), "3 outcomes: too few to judge"
    accepted = ev.EventEnvelope(carrier_accepted=ev.CarrierAccepted(carrier="smsc"))
    assert health.observe(accepted, "carrier_accepted", at=100.0)
    assert health.failure_ratio("smsc", 100.0) == (0.75, 4)
