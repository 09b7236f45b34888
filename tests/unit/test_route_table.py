"""The route table: conditions, order of evaluation, strategies, health (properties and examples)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from pydantic import ValidationError

from smsgw.domain.carrier_health import CarrierHealth, HealthSettings
from smsgw.domain.route_schema import load_route_section, load_routes
from smsgw.domain.routes import MessageFacts, Route, RouteCarrier, RouteTable, SenderKind, Strategy, sender_kind_of

CARRIERS = ["a", "b", "c", "d"]
TAGS = ["otp", "bulk", "vip"]
ACCOUNTS = ["acme", "globex"]

# Destinations with what their numbering plans say of them, written down by hand (the oracle for
# the country and number-type conditions): ISO country, and the number types a route may name
# that the number is.
DESTINATIONS = {
    "+14155550100": ("US", {"mobile", "fixed_line"}),  # the US plan does not tell them apart
    "+18005550100": ("US", {"toll_free"}),
    "+447911123456": ("GG", {"mobile"}),  # a Guernsey mobile range within +44
    "+447797123456": ("JE", {"mobile"}),  # Jersey
    "+442079460000": ("GB", {"fixed_line"}),  # a London landline
    "+447700900123": ("GB", {"unknown"}),  # a drama range: no type, +44's main country
    "+4420794600": ("GB", {"unknown"}),  # too short for any type
    "+33612345678": ("FR", {"mobile"}),
    "+35312345678": ("IE", {"fixed_line"}),
}
COUNTRIES = ["US", "GB", "GG", "JE", "FR", "IE"]
NUMBER_TYPE_NAMES = ["mobile", "fixed_line", "toll_free", "unknown", "voip"]

prefixes = hs.sampled_from(["", "+1", "+14", "+1415", "+44", "+447", "+4477", "+33", "+353"])
routes = hs.builds(
    Route,
    prefix=prefixes,
    countries=hs.frozensets(hs.sampled_from(COUNTRIES), max_size=2),
    number_types=hs.frozensets(hs.sampled_from(NUMBER_TYPE_NAMES), max_size=2),
    carriers=hs.lists(hs.sampled_from(CARRIERS), min_size=1, max_size=3, unique=True).map(
        lambda names: tuple(RouteCarrier(n) for n in names)
    ),
    sender_kinds=hs.frozensets(hs.sampled_from(list(SenderKind)), max_size=2),
    accounts=hs.frozensets(hs.sampled_from(ACCOUNTS), max_size=1),
    tags=hs.frozensets(hs.sampled_from(TAGS), max_size=2),
)
tables = hs.lists(routes, min_size=1, max_size=8, unique_by=lambda r: r.conditions).map(
    lambda rs: RouteTable(tuple(rs))
)
facts = hs.builds(
    MessageFacts,
    to=hs.sampled_from(sorted(DESTINATIONS)),
    sender=hs.sampled_from(["+14155550000", "12345", "ACME"]),
    account=hs.sampled_from(ACCOUNTS),
    tags=hs.frozensets(hs.sampled_from(TAGS), max_size=3),
    message_id=hs.uuids().map(str),
)


@settings(max_examples=300, deadline=None)
@given(tables, facts)
def test_the_chosen_route_matches_and_no_matching_route_outranks_it(table, message):
    chosen = table.pick(message)
    assert all(r.matches(message) == (r.mismatch(message) is None) for r in table.routes)
    matching = [r for r in table.routes if r.matches(message)]
    if chosen is None:
        assert matching == []
        return
    assert chosen.matches(message)
    assert all(r.rank <= chosen.rank for r in matching)
    # Among the equally ranked, the first listed wins.
    first_of_rank = next(r for r in table.routes if r in matching and r.rank == chosen.rank)
    assert chosen is first_of_rank


@settings(max_examples=300, deadline=None)
@given(routes, facts)
def test_a_route_matches_exactly_when_every_condition_it_sets_holds(route, message):
    country, number_types = DESTINATIONS[message.to]
    assert message.country == country
    expected = (
        message.to.startswith(route.prefix)
        and (not route.countries or country in route.countries)
        and (not route.number_types or bool(route.number_types & number_types))
        and (not route.sender_kinds or sender_kind_of(message.sender) in route.sender_kinds)
        and (not route.accounts or message.account in route.accounts)
        and route.tags <= message.tags
    )
    assert route.matches(message) == expected
    assert (route.mismatch(message) is None) == expected


@settings(max_examples=200, deadline=None)
@given(tables, facts, hs.randoms())
def test_the_choice_does_not_depend_on_the_order_of_routes_of_different_rank(table, message, rnd):
    by_rank: dict[tuple[int, int], list[Route]] = {}
    for route in table.routes:
        by_rank.setdefault(route.rank, []).append(route)
    ranks = list(by_rank)
    rnd.shuffle(ranks)  # shuffles ranks, keeps the listed order within one rank
    shuffled = RouteTable(tuple(r for rank in ranks for r in by_rank[rank]))
    assert shuffled.pick(message) == table.pick(message)


@settings(max_examples=200, deadline=None)
@given(tables, facts)
def test_a_route_chooses_one_of_its_own_carriers_and_the_same_one_again(table, message):
    first = table.choose(message)
    if first is None:
        return
    assert first.carrier in first.route.carrier_names
    assert table.choose(message) == first  # a replay decides alike


@settings(max_examples=200, deadline=None)
@given(tables, facts, hs.sets(hs.sampled_from(CARRIERS)))
def test_an_unhealthy_carrier_is_chosen_only_when_every_carrier_of_the_route_is(table, message, unhealthy):
    choice = table.choose(message, healthy=lambda c: c not in unhealthy)
    if choice is None:
        return
    if choice.carrier in unhealthy:
        assert set(choice.route.carrier_names) <= unhealthy


def test_longest_prefix_wins_then_more_conditions_then_the_first_listed():
    table = load_route_section(
        [
            {"name": "any", "carrier": "a"},
            {"name": "uk", "prefix": "+44", "carrier": "b"},
            {"name": "uk-otp", "prefix": "+44", "tags": ["otp"], "carrier": "c"},
            {"name": "uk-mobile", "prefix": "+447", "carrier": "d"},
            {"name": "uk-acme", "prefix": "+44", "accounts": ["acme"], "carrier": "e"},
        ]
    )
    assert table.pick(MessageFacts("+14155550100")).name == "any"
    assert table.pick(MessageFacts("+442079460000")).name == "uk"
    assert table.pick(MessageFacts("+442079460000", tags=frozenset({"otp"}))).name == "uk-otp"
    assert table.pick(MessageFacts("+447911123456", tags=frozenset({"otp"}))).name == "uk-mobile"
    # otp and acme rank alike (prefix +44, one condition): the first listed wins.
    assert table.pick(MessageFacts("+442079460000", account="acme", tags=frozenset({"otp"}))).name == "uk-otp"


def test_country_number_type_and_sender_kind_conditions():
    table = load_route_section(
        [
            {"name": "rest", "carrier": "a"},
            {"name": "gb-mobile", "countries": ["gb"], "number_types": ["mobile"], "carrier": "b"},
            {"name": "brand", "sender_kinds": ["alphanumeric"], "carrier": "c"},
            {"name": "us", "countries": ["US"], "number_types": ["mobile"], "carrier": "d"},
        ]
    )
    assert table.pick(MessageFacts("+447400123456")).name == "gb-mobile"
    assert table.pick(MessageFacts("+442079460000")).name == "rest"  # a London landline
    assert table.pick(MessageFacts("+442079460000", sender="ACME")).name == "brand"
    # The US plan does not tell mobile from fixed: a US number counts as both.
    assert table.pick(MessageFacts("+14155550100")).name == "us"
    # Outside every allocated range, the country code's main country still counts.
    assert MessageFacts("+447700900123").country == "GB"
    assert sender_kind_of("+14155550000") is SenderKind.LONG_CODE
    assert sender_kind_of("12345") is SenderKind.SHORT_CODE
    assert sender_kind_of("ACME") is SenderKind.ALPHANUMERIC


def test_weighted_routes_spread_by_weight_and_least_cost_takes_the_cheapest_healthy_carrier():
    weighted = Route(carriers=(RouteCarrier("a", weight=3), RouteCarrier("b", weight=1)), strategy=Strategy.WEIGHTED)
    shares = Counter(weighted.choose(MessageFacts("+1", message_id=f"m{n}"), lambda _: True).name for n in range(4000))
    assert 2800 <= shares["a"] <= 3200 and 800 <= shares["b"] <= 1200, shares
    cheapest = Route(
        carriers=(RouteCarrier("a", cost=0.05), RouteCarrier("b", cost=0.02), RouteCarrier("c", cost=0.03)),
        strategy=Strategy.LEAST_COST,
    )
    message = MessageFacts("+1")
    assert cheapest.choose(message, lambda _: True).name == "b"
    assert cheapest.choose(message, lambda c: c != "b").name == "c"
    assert "skipped unhealthy b" in cheapest.why(message, lambda c: c != "b")


def test_failover_takes_the_first_healthy_carrier_and_every_carrier_down_still_chooses_one():
    route = Route(carriers=(RouteCarrier("a"), RouteCarrier("b"), RouteCarrier("c")))
    message = MessageFacts("+1")
    assert route.choose(message, lambda _: True).name == "a"
    assert route.choose(message, lambda c: c not in {"a"}).name == "b"
    assert route.choose(message, lambda _: False).name == "a"
    assert "every carrier unhealthy" in route.why(message, lambda _: False)


def test_the_table_is_refused_with_the_reason_and_where():
    with pytest.raises(ValidationError) as bad:
        load_route_section(
            [
                {"prefix": "44", "carrier": "a"},
                {"carrier": "a", "carriers": ["b"]},
                {"strategy": "least_cost", "carriers": ["a", {"carrier": "b", "cost": 0.1}]},
                {"countries": ["XX"], "carrier": "a"},
                {"number_types": ["landline"], "carrier": "a"},
                {"carrier": "a", "colour": "red"},
            ]
        )
    errors = {tuple(e["loc"]): e["msg"] for e in bad.value.errors()}
    assert "'+' followed by up to 15 digits" in errors[(0, "prefix")]
    assert "either `carrier`" in errors[(1,)]
    assert "least_cost needs a cost on every carrier" in errors[(2,)] and "['a']" in errors[(2,)]
    assert "ISO 3166-1" in errors[(3, "countries")]
    assert "valid: mobile" in errors[(4, "number_types")]
    assert (5, "colour") in errors
    with pytest.raises(ValueError, match="could never be chosen"):
        load_route_section([{"prefix": "+1", "carrier": "a"}, {"prefix": "+1", "carrier": "b"}])
    with pytest.raises(ValueError, match="used twice"):
        load_route_section([{"name": "x", "carrier": "a"}, {"name": "x", "prefix": "+1", "carrier": "b"}])


def test_the_json_variable_is_the_same_schema_and_old_tables_keep_their_meaning():
    # SMSGW_ROUTES as it always was: longest prefix wins whatever the order.
    table = load_routes('{"routes": [{"prefix": "", "carrier": "x"}, {"prefix": "+44", "carrier": "uk"}]}')
    assert table.pick("+447911123456").carrier == "uk"
    assert table.pick("+14155550100").name == "*->x"
    assert table == RouteTable((Route("", "x"), Route("+44", "uk")))


def test_a_carrier_is_unhealthy_while_enough_recent_outcomes_failed_and_recovers_as_they_age():
    health = CarrierHealth(HealthSettings(window_seconds=10, min_attempts=4, max_failure_ratio=0.5))
    for t in range(3):
        health.record("a", failed=True, at=100 + t)
    assert health.healthy("a", 103), "too few outcomes to judge"
    health.record("a", failed=True, at=103)
    assert not health.healthy("a", 103)
    for t in range(4):
        health.record("a", failed=False, at=104 + t)
    assert not health.healthy("a", 108), "4 of 8 failed: still at the threshold"
    assert health.failure_ratio("a", 108) == (0.5, 8)
    assert health.healthy("a", 112), "the failures older than 10 s are forgotten"
    assert health.healthy("never-seen", 0)


def test_a_carrier_whose_receipts_nearly_all_fail_is_unhealthy_until_they_age_out():
    settings = HealthSettings(window_seconds=10, min_attempts=4, min_receipts=10, max_undelivered_ratio=0.9)
    health = CarrierHealth(settings)
    for t in range(10):
        health.record("grey", failed=False, at=100 + t / 10)  # it takes every message...
    for t in range(9):
        health.record_receipt("grey", failed=True, at=100 + t / 10)  # ...and delivers next to none
    assert health.healthy("grey", 101), "too few receipts to judge"
    health.record_receipt("grey", failed=False, at=101)
    assert health.undelivered_ratio("grey", 101) == (0.9, 10)
    assert not health.healthy("grey", 101)
    assert health.failure_ratio("grey", 101) == (0.0, 10), "its submits all went through"
    health.record_receipt("grey", failed=False, at=101.5)
    assert health.healthy("grey", 101.5), "9 of 11 failed: under the threshold"
    assert health.healthy("grey", 112) and "grey" in health.carriers()
    # A campaign to bad numbers: most receipts fail, but not nine in ten.
    for t in range(100):
        health.record_receipt("busy", failed=t % 10 < 8, at=200 + t / 100)
    assert health.healthy("busy", 201)


def test_a_routes_fallbacks_are_its_other_carriers_best_first_by_its_strategy():
    failover = Route(carriers=(RouteCarrier("a"), RouteCarrier("b"), RouteCarrier("c")))
    assert failover.fallbacks("a") == ("b", "c") and failover.fallbacks("b") == ("a", "c")
    cheapest = Route(
        carriers=(RouteCarrier("a", cost=0.05), RouteCarrier("b", cost=0.02), RouteCarrier("c", cost=0.03)),
        strategy=Strategy.LEAST_COST,
    )
    assert cheapest.fallbacks("b") == ("c", "a")
    weighted = Route(
        carriers=(RouteCarrier("a", weight=1), RouteCarrier("b", weight=5), RouteCarrier("c", weight=3)),
        strategy=Strategy.WEIGHTED,
    )
    assert weighted.fallbacks("a") == ("b", "c")
    assert Route("", "only").fallbacks("only") == ()


def test_a_route_rewrites_the_senders_of_the_kinds_it_names_and_refuses_a_bad_sender():
    table = load_route_section(
        [
            {"prefix": "+1", "carrier": "us", "rewrite_sender": {"to": "+1 415 555 0123", "kinds": ["alphanumeric"]}},
            {"prefix": "+44", "carrier": "uk", "rewrite_sender": {"to": "ACME"}},
            {"carrier": "rest"},
        ]
    )
    us = table.pick("+14155550100")
    assert us is not None and us.rewrite_sender is not None and us.rewrite_sender.to == "+14155550123"  # normalised
    assert us.rewritten_sender("ACME") == "+14155550123"
    assert us.rewritten_sender("+14155550000") is None  # a long code keeps its own
    uk = table.pick("+447911123456")
    assert uk is not None and uk.rewritten_sender("+14155550000") == "ACME" and uk.rewritten_sender("ACME") is None
    rest = table.pick("+33612345678")
    assert rest is not None and rest.rewritten_sender("ACME") is None
    # An action, not a condition: two routes differing only in it still match the same messages.
    with pytest.raises(ValueError, match="could never be chosen"):
        load_route_section([{"carrier": "a"}, {"carrier": "b", "rewrite_sender": {"to": "ACME"}}])
    with pytest.raises(ValidationError) as bad:
        load_route_section(
            [
                {"carrier": "a", "rewrite_sender": {"to": "not a sender!"}},
                {"prefix": "+1", "carrier": "a", "rewrite_sender": {"to": "ACME", "kinds": ["carrier_pigeon"]}},
            ]
        )
    errors = {tuple(e["loc"]): e["msg"] for e in bad.value.errors()}
    assert "is not a valid sender" in errors[(0, "rewrite_sender", "to")]
    assert (1, "rewrite_sender", "kinds", 0) in errors
