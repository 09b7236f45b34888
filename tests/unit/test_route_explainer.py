"""intake's live route explanation: the table in use now, and carrier health fed by the
projector's events, timed by each event's own clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from smsgw.domain.carrier_connections import ConnectionReport
from smsgw.domain.carrier_health import HealthSettings
from smsgw.domain.route_explanation import render
from smsgw.domain.route_schema import load_route_section
from smsgw.domain.routes import MessageFacts
from smsgw.events.envelope import new_event
from smsgw.projections.store import LoggedEvent
from smsgw.v1 import events_pb2 as ev
from smsgw_intake.route_explainer import RouteExplainer

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
TABLE = load_route_section([{"name": "pair", "carriers": ["twilio", "smsc"]}])
APPLIED = load_route_section([{"name": "applied", "carrier": "smsc", "rewrite_sender": {"to": "+14155550123"}}])


def failed_submit(carrier: str, at: datetime, n: int) -> LoggedEvent:
    envelope = new_event(
        ev.SubmitAttemptFailed(carrier=carrier, attempt=1, reason="NOT_CONNECTED"),
        service="carrier-adapter",
        producer="t",
        message_id=f"m{n}",
        account_id="a",
        sequence=3,
        occurred_at=at,
    )
    return LoggedEvent(0, n, envelope, None)  # type: ignore[arg-type]  # the listener reads the envelope only


def explainer(applied=None) -> RouteExplainer:
    return RouteExplainer(
        TABLE,
        applied=lambda: applied,
        health=HealthSettings(window_seconds=30, min_attempts=3, max_failure_ratio=0.5),
        clock=NOW.timestamp,
    )


def test_recent_failures_make_the_route_skip_its_carrier_and_old_ones_do_not():
    routes = explainer()
    facts = MessageFacts(to="+14155550100", message_id="x")
    for n in range(3):  # replayed at start: a day old, outside the window
        routes.on_committed(failed_submit("twilio", NOW - timedelta(days=1), n))
    version, source, healthy = routes.explain(facts)
    assert (version, healthy.chosen_carrier) == (0, "twilio") and "configuration" in source
    for n in range(3, 6):
        routes.on_committed(failed_submit("twilio", NOW - timedelta(seconds=5), n))
    _, _, skipping = routes.explain(facts)
    assert skipping.chosen_carrier == "smsc" and "skipped unhealthy twilio" in skipping.why
    lines = render(skipping, "test")
    assert "carrier twilio: UNHEALTHY, skipped (submits failed 100% of 3" in "\n".join(lines)
    assert "carrier smsc: healthy (submits failed 0% of 0" in "\n".join(lines)


def test_the_applied_table_is_the_one_explained():
    routes = explainer(applied=(7, APPLIED))
    version, source, e = routes.explain(MessageFacts(to="+14155550100", sender="ACME", message_id="x"))
    assert version == 7 and "version 7" in source
    assert e.chosen_route == "applied" and e.rewritten_sender == "+14155550123"


def test_a_carrier_no_adapter_replica_is_connected_to_is_skipped_before_any_submit_fails():
    routes = explainer()
    facts = MessageFacts(to="+14155550100", message_id="x")
    down = ConnectionReport(
        "twilio", "adapter-0#1", connected=False, reported_at=NOW.timestamp() - 2, refresh_seconds=5
    )
    routes.health.connections.apply(down)
    _, _, e = routes.explain(facts)
    assert e.chosen_carrier == "smsc" and "skipped unhealthy twilio" in e.why
    lines = "\n".join(render(e, "test"))
    assert "carrier twilio: UNHEALTHY, skipped (submits failed 0% of 0" in lines
    assert "NOT connected on any of 1 adapter replica(s)" in lines
    assert (
        "carrier smsc: healthy" in lines
        and "smsc: healthy (submits failed 0% of 0, receipts undelivered 0% of 0, in the health window; connection not reported)"
        in lines
    )
    # A second replica connected to it: the carrier takes traffic again.
    routes.health.connections.apply(
        ConnectionReport("twilio", "adapter-1#2", connected=True, reported_at=NOW.timestamp() - 1, refresh_seconds=5)
    )
    _, _, e = routes.explain(facts)
    assert e.chosen_carrier == "twilio"
    assert "connected on 1 of 2 adapter replica(s)" in "\n".join(render(e, "test"))
