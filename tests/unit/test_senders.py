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


def test_a_change_of_the_pool_moves_only_the_recipients_it_must():
    from smsgw.domain.senders import pooled_sender

    pool = tuple(f"+1415555{n:04d}" for n in range(5))
    recipients = [f"+1650555{n:04d}" for n in range(2000)]
    before = {r: pooled_sender(pool, r) for r in recipients}
    # A number added takes over about a sixth of the recipients, and only for itself.
    grown = (*pool, "+14155550099")
    moved = {r for r in recipients if pooled_sender(grown, r) != before[r]}
    assert all(pooled_sender(grown, r) == "+14155550099" for r in moved)
    assert 2000 / 6 * 0.7 < len(moved) < 2000 / 6 * 1.3, len(moved)
    # A number removed moves its own recipients, no one else's.
    shrunk = pool[1:]
    assert all(pooled_sender(shrunk, r) == before[r] for r in recipients if before[r] != pool[0])
    assert all(pooled_sender(shrunk, r) in shrunk for r in recipients)
    # The pool's order is not part of the choice.
    assert all(pooled_sender(tuple(reversed(pool)), r) == before[r] for r in recipients)
