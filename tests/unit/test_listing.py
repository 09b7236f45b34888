from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from smsgw.domain import errors as de
from smsgw.domain import status as st
from smsgw.domain.message_state import MessageState
from smsgw_intake.listing import ListFilter, list_page

T0 = datetime(2026, 11, 26, tzinfo=timezone.utc)


def states(n):
    return [
        MessageState(message_id=f"m{i:03d}", account_id="a" if i % 5 else "b", to="+1415555%04d" % (i % 3),
                     status=st.DELIVERED if i % 2 else st.SENT, created_at=T0 + timedelta(seconds=i // 2))
        for i in range(n)
    ]


def test_pages_cover_every_match_once_newest_first():
    all_states = states(101)
    flt = ListFilter(account_id="a")
    seen, token, pages = [], "", 0
    while True:
        page, token = list_page(all_states, flt, 7, token)
        seen += page
        pages += 1
        if not token:
            break
    expected = [s for s in all_states if s.account_id == "a"]
    assert sorted(s.message_id for s in seen) == sorted(s.message_id for s in expected)
    assert len(seen) == len(expected) and pages == -(-len(expected) // 7)
    assert all(a.created_at >= b.created_at for a, b in zip(seen, seen[1:]))


def test_filters_by_status_to_and_time():
    flt = ListFilter(account_id="a", statuses=frozenset({st.DELIVERED}), to="+14155550001",
                     created_after=T0 + timedelta(seconds=5), created_before=T0 + timedelta(seconds=30))
    page, _ = list_page(states(101), flt, 1000, "")
    assert page and all(s.status == st.DELIVERED and s.to == "+14155550001" for s in page)
    assert all(T0 + timedelta(seconds=5) <= s.created_at < T0 + timedelta(seconds=30) for s in page)


def test_a_token_is_bound_to_its_filters():
    _, token = list_page(states(30), ListFilter(account_id="a"), 2, "")
    with pytest.raises(de.InvalidPageToken):
        list_page(states(30), ListFilter(account_id="a", to="+14155550001"), 2, token)
    with pytest.raises(de.InvalidPageToken):
        list_page(states(30), ListFilter(account_id="a"), 2, "garbage!")


def test_filters_by_tag():
    from dataclasses import replace
    tagged = [replace(s, tags=("promo",) if i % 3 == 0 else ()) for i, s in enumerate(states(30))]
    page, _ = list_page(tagged, ListFilter(account_id="a", tag="promo"), 100, "")
    assert page and all("promo" in s.tags for s in page)
    assert len(page) == sum(1 for s in tagged if s.account_id == "a" and "promo" in s.tags)
