"""A partition's commit passes only commands with an outcome, whatever order they finish in."""

from smsgw_carrier_adapter.offsets import (
    METADATA_PREFIX,
    OffsetWatermarks,
    decode_finished_ahead,
    encode_finished_ahead,
)


def test_the_commit_waits_for_the_oldest_unfinished_command() -> None:
    marks = OffsetWatermarks()
    for offset in (10, 11, 12):
        marks.started("p0", offset)
    marks.finished("p0", 12)
    marks.finished("p0", 11)
    # 10 (a carrier that is down) holds the partition; the commit names 11 and 12 as finished.
    assert marks.committable() == {"p0": (10, METADATA_PREFIX + "1-2")}
    marks.finished("p0", 10)
    assert marks.committable() == {"p0": (13, "")}
    assert marks.committable() == {}  # reported once
    assert marks.in_flight() == 0


def test_partitions_move_independently() -> None:
    marks = OffsetWatermarks()
    marks.started("p0", 5)
    marks.started("p1", 7)
    marks.started("p1", 8)
    marks.finished("p1", 7)
    assert marks.committable() == {"p1": (8, "")}
    assert marks.in_flight("p0") == 1 and marks.in_flight("p1") == 1


def test_a_dropped_partition_is_forgotten_and_late_finishes_are_ignored() -> None:
    marks = OffsetWatermarks()
    marks.started("p0", 1)
    marks.drop("p0")
    marks.finished("p0", 1)
    assert marks.committable() == {} and marks.partitions() == set()


def test_gaps_in_offsets_are_fine() -> None:
    # Offsets of a topic need not be contiguous (transaction markers, compaction).
    marks = OffsetWatermarks()
    marks.started("p0", 3)
    marks.started("p0", 9)
    marks.finished("p0", 9)
    marks.finished("p0", 3)
    assert marks.committable() == {"p0": (10, "")}


def test_a_new_reader_skips_what_the_last_commit_says_was_finished() -> None:
    # The first reader: offset 20 waits for a carrier that is down, 21-23 and 25 finished.
    first = OffsetWatermarks()
    first.resume("p0", None, None)
    for offset in range(20, 26):
        first.started("p0", offset)
    for offset in (21, 22, 23, 25):
        first.finished("p0", offset)
    ((committed, metadata),) = first.committable().values()
    assert committed == 20

    # It crashes; the next reader (after a restart or a rebalance) fetches from 20 again.
    second = OffsetWatermarks()
    second.resume("p0", committed, metadata)
    handled = []
    for offset in range(20, 27):  # in fetch order, as the dispatcher does
        if not second.finished_before("p0", offset):
            second.started("p0", offset)
            handled.append(offset)
    assert handled == [20, 24, 26]
    second.finished("p0", 24)
    # Still held by 20: what the first reader finished must stay in the commit, or a second
    # crash would send it again.
    assert second.committable() == {"p0": (20, METADATA_PREFIX + "1-5")}
    second.finished("p0", 20)
    second.finished("p0", 26)
    assert second.committable() == {"p0": (27, "")}


def test_metadata_round_trips_as_ranges() -> None:
    offsets = {105, 106, 107, 110, 120, 121}
    metadata, complete = encode_finished_ahead(100, offsets | {99})  # 99 is behind the position
    assert complete and metadata == METADATA_PREFIX + "5-7,10,20-21"
    assert decode_finished_ahead(100, metadata) == offsets


def test_metadata_that_does_not_fit_keeps_the_nearest_offsets() -> None:
    scattered = set(range(1000, 1000 + 4000, 2))  # 2000 isolated offsets
    metadata, complete = encode_finished_ahead(1000, scattered, limit=200)
    assert not complete and len(metadata) <= 200
    kept = decode_finished_ahead(1000, metadata)
    assert kept and kept <= scattered and min(kept) == 1000
    assert max(kept) < min(scattered - kept)  # a prefix: the rest is handled again


def test_foreign_or_broken_metadata_means_nothing_was_finished() -> None:
    assert decode_finished_ahead(0, "") == set()
    assert decode_finished_ahead(0, "written by someone else") == set()
    assert decode_finished_ahead(0, METADATA_PREFIX + "3-x") == set()
    assert decode_finished_ahead(0, METADATA_PREFIX + "5-2") == set()
