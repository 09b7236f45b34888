"""RecentCommands: which command ids a partition held recently (the dispatcher skips their copies)."""

from __future__ import annotations

import pytest

from smsgw_carrier_adapter.recent_commands import RecentCommands


def test_a_command_is_seen_only_in_its_own_partition_after_it_was_added():
    recent = RecentCommands(window=10)
    assert not recent.seen(0, "a")
    recent.add(0, "a")
    assert recent.seen(0, "a") and not recent.seen(1, "a")


def test_only_the_last_window_commands_of_a_partition_are_kept():
    recent = RecentCommands(window=3)
    for command_id in "abcd":
        recent.add(0, command_id)
    recent.add(1, "a")
    assert [recent.seen(0, c) for c in "abcd"] == [False, True, True, True]
    assert recent.seen(1, "a") and len(recent) == 4


def test_adding_a_known_id_again_neither_counts_it_twice_nor_renews_it():
    recent = RecentCommands(window=2)
    recent.add(0, "a")
    recent.add(0, "a")
    recent.add(0, "b")
    assert len(recent) == 2
    recent.add(0, "c")
    assert not recent.seen(0, "a") and recent.seen(0, "b") and recent.seen(0, "c")


def test_a_dropped_partition_is_forgotten():
    recent = RecentCommands(window=5)
    recent.add(0, "a")
    recent.drop(0)
    recent.drop(7)  # never read: nothing to forget
    assert not recent.seen(0, "a") and len(recent) == 0


def test_the_window_must_hold_at_least_one_command():
    with pytest.raises(ValueError, match="window must be at least 1"):
        RecentCommands(window=0)
