"""The submit ledger's fold: what a replica taking a command over learns from its entries."""

from __future__ import annotations

from smsgw.v1 import carrier_pb2 as cp
from smsgw_carrier_adapter.submit_ledger import Started, fold


def _entry(attempt: int, **entry) -> cp.SubmitLedgerEntry:
    return cp.SubmitLedgerEntry(command_id="c1", message_id="m1", carrier="smsc", attempt=attempt, **entry)


def _fold(*entries: cp.SubmitLedgerEntry) -> Started | None:
    started = None
    for entry in entries:
        started = fold(started, entry)
    return started


def test_an_intent_without_an_end_is_an_attempt_that_may_be_at_the_carrier():
    started = _fold(_entry(1, intended=cp.SubmitIntended()))
    assert started == Started(attempt=1, open=True)
    assert started.resume() is None


def test_an_attempt_that_ended_is_not_in_doubt_and_the_next_one_is_counted_on_from_it():
    started = _fold(
        _entry(1, intended=cp.SubmitIntended()),
        _entry(1, attempt_ended=cp.SubmitAttemptEnded(in_doubt=False)),
    )
    assert started == Started(attempt=1, open=False)
    again = fold(started, _entry(2, intended=cp.SubmitIntended()))
    assert again == Started(attempt=2, open=True)


def test_the_parts_taken_carry_over_to_the_next_attempt_and_say_where_to_resume():
    started = _fold(
        _entry(1, intended=cp.SubmitIntended()),
        _entry(1, parts_accepted=cp.PartsAccepted(reference=7, carrier_message_ids=["a"])),
        _entry(1, parts_accepted=cp.PartsAccepted(reference=7, carrier_message_ids=["a", "b"])),
        _entry(1, attempt_ended=cp.SubmitAttemptEnded(in_doubt=True)),
        _entry(2, intended=cp.SubmitIntended()),
    )
    assert started == Started(attempt=2, open=True, reference=7, accepted_ids=("a", "b"))
    assert started.resume() == (7, ("a", "b"))
