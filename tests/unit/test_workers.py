"""routing's and receipt's shells without a broker: records in, a Batch out (what the partitioned
loop writes, in its order), state per partition, deadlines, state reloaded from its changelog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiokafka.structs import ConsumerRecord

from smsgw.domain.routes import Route, RouteTable
from smsgw.events.envelope import decode_event, encode, new_event
from smsgw.kafka.partitioned_loop import Batch
from smsgw.settings import ServiceSettings
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev
from smsgw_receipt.app import ReceiptWorker
from smsgw_routing.app import RoutingWorker
from smsgw_routing.decisions import DISPATCHED, HELD

SETTINGS = ServiceSettings(topic_prefix="t.")
NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


def record(key: bytes, value: bytes, partition: int = 0, offset: int = 0) -> ConsumerRecord:
    return ConsumerRecord(
        topic="in",
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=(),
    )


def queued(message_id: str, send_at: datetime | None = None) -> bytes:
    payload = ev.MessageQueued(to="+14155550100", content=ev.MessageContent(text="hi"), segments=1)
    payload.expires_at.FromDatetime(NOW + timedelta(days=2))
    if send_at is not None:
        payload.send_at.FromDatetime(send_at)
    return encode(new_event(payload, service="intake", producer="t", message_id=message_id, account_id="a", sequence=1))


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def routing(clock: Clock) -> RoutingWorker:
    worker = RoutingWorker(SETTINGS, RouteTable((Route("", "smsc"),)), clock=clock, record_retention=60)
    worker.loaded(0, {worker.changelog_topic: {}})
    return worker


def test_routing_publishes_event_and_command_and_records_the_message_once():
    worker = routing(Clock(NOW))
    batch = Batch()
    worker.on_record(0, record(b"m1", queued("m1")), batch)
    worker.on_record(0, record(b"m1", queued("m1"), offset=1), batch)  # a copy: decided already
    topics = [topic for topic, _key, _value, _headers in batch.records]
    assert topics == ["t.smsgw.message-events.v1", "t.smsgw.carrier-dispatch.v1"]
    routed = decode_event(batch.records[0][2])
    command = cp.DispatchCommand.FromString(batch.records[1][2])
    assert routed.WhichOneof("payload") == "message_routed" and command.command_id == routed.event_id
    assert list(batch.changes) == [(worker.changelog_topic, 0, b"m1")]
    assert worker.record("m1").state == DISPATCHED


def test_routing_holds_a_scheduled_message_and_releases_it_on_a_tick_when_due():
    clock = Clock(NOW)
    worker = routing(clock)
    batch = Batch()
    worker.on_record(0, record(b"m2", queued("m2", send_at=NOW + timedelta(seconds=30))), batch)
    assert batch.records == [] and worker.record("m2").state == HELD
    early = Batch()
    worker.on_tick(early)
    assert early.records == []
    clock.now = NOW + timedelta(seconds=31)
    due = Batch()
    worker.on_tick(due)
    assert [
        decode_event(value).WhichOneof("payload")
        for topic, _k, value, _h in due.records
        if topic.endswith("message-events.v1")
    ] == ["message_routed"]
    assert worker.record("m2").state == DISPATCHED


def test_routing_forgets_a_settled_record_after_its_retention_with_a_tombstone():
    clock = Clock(NOW)
    worker = routing(clock)
    worker.on_record(0, record(b"m3", queued("m3")), Batch())
    clock.now = NOW + timedelta(seconds=61)
    batch = Batch()
    worker.on_tick(batch)
    assert batch.changes == {(worker.changelog_topic, 0, b"m3"): None} and worker.record("m3") is None


def test_routing_reloads_its_records_from_the_changelog_and_drops_a_revoked_partition():
    clock = Clock(NOW)
    first = routing(clock)
    batch = Batch()
    first.on_record(0, record(b"m4", queued("m4", send_at=NOW + timedelta(seconds=5))), batch)
    changelog = {key: value for (_topic, _p, key), value in batch.changes.items()}
    second = RoutingWorker(SETTINGS, RouteTable((Route("", "smsc"),)), clock=clock)
    second.loaded(0, {second.changelog_topic: changelog})
    assert second.record("m4").state == HELD
    clock.now = NOW + timedelta(seconds=6)
    released = Batch()
    second.on_tick(released)
    assert len(released.records) == 2  # the held message, routed by the member that loaded it
    second.revoked(0)
    assert second.record("m4") is None and len(second.held) == 0


def report(carrier_id: str, **kind) -> bytes:
    return cp.CarrierReport(
        carrier="smsc", carrier_message_id=carrier_id, report_id=f"r-{carrier_id}-{next(iter(kind))}", **kind
    ).SerializeToString()


def test_receipt_matches_a_receipt_that_came_before_its_submit():
    worker = ReceiptWorker(SETTINGS, clock=NOW.timestamp)
    worker.loaded(3, {changelog: {} for changelog in worker.changelogs})
    key = b"smsc/42"
    early = Batch()
    worker.on_record(
        3,
        record(
            key,
            report("42", receipt_received=cp.ReceiptReceived(state=ev.DeliveryState.DELIVERY_STATE_DELIVERED)),
            partition=3,
        ),
        early,
    )
    assert early.records == [] and worker.correlation(key).pending  # held until its submit comes
    matched = Batch()
    worker.on_record(
        3,
        record(
            key,
            report(
                "42",
                submit_correlated=cp.SubmitCorrelated(
                    message_id="m5", account_id="a", part_index=0, total_parts=1, sequence=3
                ),
            ),
            partition=3,
            offset=1,
        ),
        matched,
    )
    ((topic, message_key, value, _headers),) = matched.records
    assert topic == "t.smsgw.message-events.v1" and message_key == b"m5"
    assert decode_event(value).delivery_reported.state == ev.DeliveryState.DELIVERY_STATE_DELIVERED
    assert [key for (_changelog, partition, key) in matched.changes] == [b"smsc/42"]
    assert all(partition == 3 for (_c, partition, _k) in matched.changes)


def test_receipt_reloads_correlations_and_forgets_them_on_revoke():
    worker = ReceiptWorker(SETTINGS, clock=NOW.timestamp)
    worker.loaded(1, {changelog: {} for changelog in worker.changelogs})
    batch = Batch()
    worker.on_record(
        1,
        record(
            b"smsc/7",
            report(
                "7",
                submit_correlated=cp.SubmitCorrelated(
                    message_id="m6", account_id="a", part_index=0, total_parts=1, sequence=3
                ),
            ),
            partition=1,
        ),
        batch,
    )
    stored = {
        changelog: {key: value for (c, _p, key), value in batch.changes.items() if c == changelog}
        for changelog in worker.changelogs
    }
    other = ReceiptWorker(SETTINGS, clock=NOW.timestamp)
    other.loaded(1, stored)
    assert other.correlation(b"smsc/7").correlation.message_id == "m6"
    other.revoked(1)
    assert other.correlation(b"smsc/7") is None and len(other.correlation_deadlines) == 0
