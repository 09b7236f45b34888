"""Which sender a message carries: forms, and an account's own senders."""

from __future__ import annotations

import pytest

from smsgw.domain import errors as de
from smsgw.domain.senders import choose_sender, normalize_sender, normalize_senders

DEFAULT = "+14155550000"


def test_senders_are_normalised_and_deduplicated_with_their_index_in_errors():
    assert normalize_senders(["+1 (415) 555-0123", "ACME", "acme", "12345", "+14155550123"]) == (
        "+14155550123",
        "ACME",
        "12345",
    )
    with pytest.raises(de.InvalidArgument) as bad:
        normalize_senders(["ACME", "not a sender!!"])
    assert bad.value.field == "senders[1]"
    with pytest.raises(de.InvalidPhoneNumber):
        normalize_sender("+1415", field="from")


def test_an_account_sends_only_from_its_own_senders_and_its_first_is_the_default():
    own = ("ACME", "+14155550123")
    assert choose_sender("", own, DEFAULT) == "ACME"
    assert choose_sender("Acme", own, DEFAULT) == "ACME"  # sender ids compare without case
    assert choose_sender("+14155550123", own, DEFAULT) == "+14155550123"
    for other in (DEFAULT, "+14155550999", "GLOBEX"):
        with pytest.raises(de.SenderNotAllowed) as refused:
            choose_sender(other, own, DEFAULT)
        assert refused.value.field == "from" and "ACME, +14155550123" in refused.value.message


def test_an_account_with_no_senders_has_the_servers_default_only():
    assert choose_sender("", (), DEFAULT) == DEFAULT
    assert choose_sender(DEFAULT, (), DEFAULT) == DEFAULT
    with pytest.raises(de.SenderNotAllowed, match="only the server's default sender"):
        choose_sender("+14155550001", (), DEFAULT)


def test_a_pool_gives_a_local_number_the_same_one_for_the_same_recipient_else_the_default():
    from collections import Counter

    pool = ("ACME", "+14155550123", "+14155550124", "+447700900123", "+447700900124", "+33612345678")
    # The destination's country: one of the account's numbers there.
    assert choose_sender("", pool, DEFAULT, to="+447911123456") in {"+447700900123", "+447700900124"}
    assert choose_sender("", pool, DEFAULT, to="+33698765432") == "+33612345678"
    # Sticky: a recipient always gets the same one; recipients spread over the local numbers.
    recipients = [f"+1415555{n:04d}" for n in range(200)]
    first = [choose_sender("", pool, DEFAULT, to=r) for r in recipients]
    assert first == [choose_sender("", pool, DEFAULT, to=r) for r in recipients]
    spread = Counter(first)
    assert set(spread) == {"+14155550123", "+14155550124"} and min(spread.values()) > 60
    # No number in that country: the default (the first); a requested sender still wins.
    assert choose_sender("", pool, DEFAULT, to="+4915112345678") == "ACME"
    assert choose_sender("+447700900124", pool, DEFAULT, to="+14155550100") == "+447700900124"
    # Without a pool (no `to`), always the default.
    assert choose_sender("", pool, DEFAULT) == "ACME"
