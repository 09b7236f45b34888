"""ListMessages over a store, the pure parts: tags, exact times, page tokens, the SQL's shape."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest

from smsgw.domain import errors as de
from smsgw.domain import status as st
from smsgw.domain.message_state import MessageState
from smsgw.projections.query import (
    MessageFilter,
    decode_token,
    encode_token,
    list_query,
    page_from_rows,
    page_size_of,
    tags_of,
    to_micros,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def state(**kw) -> MessageState:
    metadata = kw.pop("metadata", {})
    return MessageState(
        message_id=kw.pop("message_id", "m1"),
        account_id=kw.pop("account_id", "acct"),
        status=kw.pop("status", st.QUEUED),
        created_at=kw.pop("created_at", T0),
        metadata=MappingProxyType(metadata),
        **kw,
    )


def test_tags_are_the_messages_tags_each_once_in_order():
    assert tags_of(state(tags=("promo", "otp", "promo", "", "vip"))) == ("promo", "otp", "vip")
    assert tags_of(state()) == ()
    assert tags_of(state(metadata={"tags": "promo"})) == ()  # metadata is not where tags live


def test_times_are_exact_integer_microseconds():
    at = datetime(2262, 4, 11, 23, 47, 16, 854_775, tzinfo=UTC)
    assert to_micros(at) == 9_223_372_036_854_775  # a float would round this
    assert to_micros(T0 + timedelta(microseconds=1)) - to_micros(T0) == 1
    assert to_micros(T0.replace(tzinfo=None)) == to_micros(T0)  # naive means UTC
    assert to_micros(None) is None


def test_a_token_round_trips_only_with_its_filters():
    flt = MessageFilter(account_id="acct", tag="promo")
    token = encode_token((to_micros(T0), "m-7"), flt)
    assert decode_token(token, flt) == (to_micros(T0), "m-7")
    with pytest.raises(de.InvalidPageToken, match="other filters") as refused:
        decode_token(token, dataclasses.replace(flt, tag="otp"))
    assert refused.value.field == "page_token"


@pytest.mark.parametrize(
    "payload",
    [
        {"c": "1", "i": "x", "f": ""},
        {"c": 1.5, "i": "x", "f": ""},
        {"c": True, "i": "x", "f": ""},
        {"c": 1, "i": 2, "f": ""},
        {"c": 2**70, "i": "x", "f": ""},
        {"i": "x", "f": ""},
        [1, "x"],
        7,
    ],
)
def test_a_token_this_api_did_not_issue_is_refused(payload):
    token = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(de.InvalidPageToken, match="not a token") as refused:
        decode_token(token, MessageFilter(account_id="acct"))
    assert refused.value.field == "page_token"
    with pytest.raises(de.InvalidPageToken):
        decode_token("%%%", MessageFilter(account_id="acct"))


def test_every_filter_field_changes_the_digest():
    base = MessageFilter(account_id="acct")
    variants = [
        dataclasses.replace(base, account_id="b"),
        dataclasses.replace(base, statuses=frozenset({1})),
        dataclasses.replace(base, to="+1"),
        dataclasses.replace(base, sender="+1"),
        dataclasses.replace(base, created_after=T0),
        dataclasses.replace(base, created_before=T0),
        dataclasses.replace(base, tag="t"),
    ]
    digests = {v.digest() for v in variants} | {base.digest()}
    assert len(digests) == len(variants) + 1
    assert (
        MessageFilter(account_id="a", statuses=frozenset({1, 2})).digest()
        == MessageFilter(account_id="a", statuses=frozenset({2, 1})).digest()
    )


def test_page_size_rules():
    assert page_size_of(0) == 50 and page_size_of(1) == 1 and page_size_of(1000) == 1000 and page_size_of(10**6) == 1000
    with pytest.raises(de.InvalidArgument) as refused:
        page_size_of(-1)
    assert refused.value.field == "page_size"


def test_the_predicate_hides_unqueued_messages_and_applies_every_filter():
    flt = MessageFilter(
        account_id="acct",
        statuses=frozenset({st.SENT}),
        to="+1",
        sender="S",
        created_after=T0,
        created_before=T0 + timedelta(seconds=1),
        tag="promo",
    )
    match = dict(status=st.SENT, to="+1", sender="S", tags=("otp", "promo"))
    assert flt.matches(state(**match))
    for change in (
        {"status": st.QUEUED},
        {"to": "+2"},
        {"sender": "T"},
        {"account_id": "b"},
        {"created_at": T0 - timedelta(microseconds=1)},
        {"created_at": T0 + timedelta(seconds=1)},
        {"tags": ("otp",)},
        {"created_at": None},
        {"status": st.UNSPECIFIED},
    ):
        assert not flt.matches(state(**{**match, **change})), change


def test_the_sql_numbers_its_parameters_in_order():
    flt = MessageFilter(
        account_id="acct",
        statuses=frozenset({st.SENT, st.QUEUED}),
        to="+1",
        sender="S",
        created_after=T0,
        created_before=T0 + timedelta(days=1),
        tag="promo",
    )
    token = encode_token((to_micros(T0), "m-1"), flt)
    query = list_query(flt, 10, token, placeholder=lambda n: f"${n}", any_of=lambda c, n: f"{c} = ANY(${n})")
    numbers = [int(n) for n in re.findall(r"\$(\d+)", query.sql)]
    assert numbers == list(range(1, len(query.params) + 1))
    assert query.params[1] == [st.QUEUED, st.SENT] and query.params[-1] == 11 and query.limit == 11
    assert "ORDER BY m.created_at DESC, m.id ASC" in query.sql


def test_a_next_token_only_when_the_extra_row_came_back():
    flt = MessageFilter(account_id="acct")
    rows = [(b"v%d" % i, 100 - i, f"m{i}") for i in range(4)]
    views, token = page_from_rows(rows, flt, 4)
    assert views == [b"v0", b"v1", b"v2"] and decode_token(token, flt) == (98, "m2")
    assert page_from_rows(rows[:3], flt, 4) == ([b"v0", b"v1", b"v2"], "")
    assert page_from_rows([], flt, 4) == ([], "")
