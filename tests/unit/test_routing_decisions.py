from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from smsgw.domain.route_schema import load_routes
from smsgw.domain.routes import Route, RouteTable, SenderRewrite
from smsgw.events.envelope import new_event
from smsgw.v1 import events_pb2 as ev
from smsgw_routing.decisions import CANCELED, DISPATCHED, HELD, due, on_cancellation_requested, on_queued

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
TABLE = RouteTable((Route("", "default-smsc"), Route("+44", "uk-smsc"), Route("+4477", "uk-mobile")))


def queued_event(to="+14155550100", send_at=None, expires_at=None):
    q = ev.MessageQueued(to=to, content=ev.MessageContent(text="x"), segments=1)
    if send_at:
        q.send_at.FromDatetime(send_at)
    q.expires_at.FromDatetime(expires_at or NOW + timedelta(hours=1))
    return new_event(q, service="intake", producer="t", message_id="m1", account_id="a", sequence=1, event_id="e1")


def test_longest_prefix_wins():
    assert TABLE.pick("+447700900123").carrier == "uk-mobile"
    assert TABLE.pick("+442071838750").carrier == "uk-smsc"
    assert TABLE.pick("+14155550100").carrier == "default-smsc"
    assert RouteTable((Route("+44", "uk"),)).pick("+1415") is None


def test_immediate_message_is_routed_with_deterministic_event_id():
    first = on_queued(queued_event(), None, TABLE, NOW)
    again = on_queued(queued_event(), None, TABLE, NOW)
    assert first.dispatch_carrier == "default-smsc" and first.record.state == DISPATCHED
    ((payload, event_id, seq),) = first.events
    assert isinstance(payload, ev.MessageRouted) and seq == 2
    assert event_id == again.events[0][1]


def test_duplicate_queued_is_ignored():
    record = on_queued(queued_event(), None, TABLE, NOW).record
    assert on_queued(queued_event(), record, TABLE, NOW).events == []


def test_scheduled_message_is_held_until_due_then_can_be_canceled():
    decision = on_queued(queued_event(send_at=NOW + timedelta(minutes=5)), None, TABLE, NOW)
    assert decision.record.state == HELD and not decision.events
    assert not due(decision.record, NOW) and due(decision.record, NOW + timedelta(minutes=5))
    cancel = new_event(
        ev.CancellationRequested(reason="r"),
        service="intake",
        producer="t",
        message_id="m1",
        account_id="a",
        sequence=2,
    )
    outcome = on_cancellation_requested(cancel, decision.record, NOW)
    assert outcome.record.state == CANCELED and isinstance(outcome.events[0][0], ev.MessageCanceled)


def test_cancel_after_dispatch_is_rejected():
    record = on_queued(queued_event(), None, TABLE, NOW).record
    cancel = new_event(
        ev.CancellationRequested(), service="intake", producer="t", message_id="m1", account_id="a", sequence=3
    )
    outcome = on_cancellation_requested(cancel, record, NOW)
    assert isinstance(outcome.events[0][0], ev.CancellationRejected)
    assert "already handed" in outcome.events[0][0].reason


def test_expired_and_unroutable():
    expired = on_queued(queued_event(expires_at=NOW - timedelta(seconds=1)), None, TABLE, NOW)
    assert isinstance(expired.events[0][0], ev.MessageExpired) and not expired.dispatch_carrier
    unroutable = on_queued(queued_event(), None, RouteTable((Route("+44", "uk"),)), NOW)
    assert isinstance(unroutable.events[0][0], ev.RoutingFailed)


def test_route_table_parse_rejects_bad_prefix():
    assert load_routes('{"routes": [{"prefix": "+1", "carrier": "a"}]}').pick("+1415").carrier == "a"
    with pytest.raises(ValueError):
        load_routes('{"routes": [{"prefix": "44", "carrier": "a"}]}')


def test_a_held_message_is_not_due_a_moment_early():
    send_at = NOW + timedelta(seconds=2, milliseconds=800)
    record = on_queued(queued_event(send_at=send_at), None, TABLE, NOW).record
    assert not due(record, NOW + timedelta(seconds=2, milliseconds=100))
    assert due(record, send_at)


def test_changelog_names_are_the_ones_faust_gave_the_tables():
    from smsgw.events.topics import (
        RECEIPT_CORRELATIONS_CHANGELOG,
        RECEIPT_MO_PARTS_CHANGELOG,
        ROUTING_RECORDS_CHANGELOG,
    )
    from smsgw.settings import ServiceSettings
    from smsgw_receipt.app import ReceiptWorker
    from smsgw_routing.app import RoutingWorker

    settings = ServiceSettings(topic_prefix="p.")
    # A deployment that ran the faust versions keeps its records: same names, same JSON values.
    assert (
        RoutingWorker(settings, TABLE).changelog_topic
        == settings.topic(ROUTING_RECORDS_CHANGELOG)
        == "p.smsgw-routing-routing-records-changelog"
    )
    # receipt's too: the names faust gave its tables.
    assert (
        ReceiptWorker(settings).changelogs
        == (settings.topic(RECEIPT_CORRELATIONS_CHANGELOG), settings.topic(RECEIPT_MO_PARTS_CHANGELOG))
        == ("p.smsgw-receipt-receipt-correlations-changelog", "p.smsgw-receipt-receipt-mo-parts-changelog")
    )


def test_a_settled_record_may_go_after_its_retention_and_a_held_one_never():
    from smsgw_routing.decisions import forget_at, forgettable

    dispatched = on_queued(queued_event(), None, TABLE, NOW).record
    assert forget_at(dispatched, 3600) == NOW.timestamp() + 3600
    assert not forgettable(dispatched, 3600, NOW + timedelta(minutes=59))
    assert forgettable(dispatched, 3600, NOW + timedelta(minutes=60))
    held = on_queued(queued_event(send_at=NOW + timedelta(days=3)), None, TABLE, NOW).record
    assert held.state == HELD and forget_at(held, 1) is None
    assert not forgettable(held, 1, NOW + timedelta(days=30))
    cancel = new_event(
        ev.CancellationRequested(reason="r"),
        service="intake",
        producer="t",
        message_id="m1",
        account_id="a",
        sequence=2,
    )
    canceled = on_cancellation_requested(cancel, held, NOW).record
    assert canceled.state == CANCELED and forgettable(canceled, 60, NOW + timedelta(seconds=60))
    assert forget_at(None, 60) is None


def test_a_route_that_rewrites_senders_says_so_on_message_routed_and_the_command_carries_it():
    from smsgw_routing.app import _dispatch_command

    table = RouteTable(
        (Route("", "default-smsc"), Route("+1", "us-smsc", rewrite_sender=SenderRewrite("+14155550123"))),
    )
    queued = queued_event()
    setattr(queued.message_queued, "from", "ACME")
    decision = on_queued(queued, None, table, NOW)
    ((routed, event_id, sequence),) = decision.events
    assert routed.sender == "+14155550123"
    envelope = new_event(
        routed, service="routing", producer="t", message_id="m1", account_id="a", sequence=sequence, event_id=event_id
    )
    assert getattr(_dispatch_command(envelope, queued, decision.dispatch_carrier), "from") == "+14155550123"
    plain = on_queued(queued_event(to="+447911123456"), None, table, NOW)
    ((kept, kept_id, kept_sequence),) = plain.events
    assert kept.sender == ""
    kept_envelope = new_event(
        kept, service="routing", producer="t", message_id="m1", account_id="a", sequence=kept_sequence, event_id=kept_id
    )
    uk = queued_event(to="+447911123456")
    setattr(uk.message_queued, "from", "ACME")
    assert getattr(_dispatch_command(kept_envelope, uk, plain.dispatch_carrier), "from") == "ACME"
