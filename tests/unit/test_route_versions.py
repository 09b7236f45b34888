"""Route tables applied at run time, folded from admin events (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from smsgw.domain import credentials as cr
from smsgw.domain import errors as de
from smsgw.domain.route_versions import RouteTableVersions
from smsgw.domain.routes import MessageFacts

NOW = datetime(2026, 12, 4, tzinfo=UTC)


def table(*routes: dict) -> str:
    return json.dumps({"routes": list(routes)})


def applied(versions: RouteTableVersions, routes_json: str, expected: int = 0, actor: str = "k1"):
    event = cr.platform_event(
        actor,
        NOW,
        route_table_applied=versions.next_version(
            routes_json, comment="why", source="f.yaml", expected_version=expected
        ),
    )
    return event


def test_versions_count_up_and_the_latest_is_the_table():
    versions = RouteTableVersions()
    assert versions.current is None and versions.current_version == 0
    first = applied(versions, table({"carrier": "a"}))
    assert first.account_id == cr.PLATFORM and first.route_table_applied.version == 1
    assert versions.apply(first).version == 1
    second = applied(versions, table({"carrier": "b"}, {"prefix": "+44", "carrier": "uk"}), expected=1)
    versions.apply(second)
    assert versions.current_version == 2
    assert versions.current.table.pick(MessageFacts("+447911123456")).carrier == "uk"
    assert versions.current.applied_by == "k1" and versions.current.comment == "why"
    assert versions.apply(first) is None and versions.apply(second) is None, "copies and stale versions"
    proto = versions.current.to_proto()
    assert proto.version == 2 and proto.source == "f.yaml" and proto.applied_at.seconds == int(NOW.timestamp())


def test_two_applies_computed_from_the_same_version_the_first_in_the_log_wins():
    versions = RouteTableVersions()
    one, other = applied(versions, table({"carrier": "a"})), applied(versions, table({"carrier": "b"}))
    assert one.route_table_applied.version == other.route_table_applied.version == 1
    assert versions.apply(one) is not None
    assert versions.apply(other) is None
    assert versions.current.event_id == one.event_id


def test_a_bad_table_or_a_stale_expected_version_is_refused_with_a_clear_reason():
    versions = RouteTableVersions()
    with pytest.raises(de.InvalidArgument) as bad:
        versions.next_version(table({"prefix": "44", "carrier": "a"}), comment="", source="", expected_version=0)
    assert bad.value.field == "routes_json" and "routes[0].prefix" in bad.value.message
    with pytest.raises(de.InvalidArgument, match="could never be chosen"):
        versions.next_version(table({"carrier": "a"}, {"carrier": "b"}), comment="", source="", expected_version=0)
    with pytest.raises(de.InvalidArgument, match="routes_json"):
        versions.next_version("{not json", comment="", source="", expected_version=0)
    versions.apply(applied(versions, table({"carrier": "a"})))
    with pytest.raises(de.RouteTableChanged) as stale:
        versions.next_version(table({"carrier": "b"}), comment="", source="", expected_version=3)
    assert stale.value.metadata == {"current_version": "1"}


def test_other_admin_events_are_not_tables():
    versions = RouteTableVersions()
    directory = cr.Directory()
    created = directory.create_account("acme", "ACME", actor="k1", now=NOW)
    assert versions.apply(created) is None and versions.current is None
