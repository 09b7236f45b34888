"""A partition's commit passes only commands with an outcome, whatever order they finish in."""

from smsgw_carrier_adapter.offsets import OffsetWatermarks


def test_the_commit_waits_for_the_oldest_unfinished_command() -> None:
    marks = OffsetWatermarks()
    for offset in (10, 11, 12):
        marks.started("p0", offset)
    marks.finished("p0", 12)
    marks.finished("p0", 11)
    assert marks.committable() == {}            # 10 (a carrier that is down) holds the partition
    marks.finished("p0", 10)
    assert marks.committable() == {"p0": 13}
    assert marks.committable() == {}            # reported once
    assert marks.in_flight() == 0


def test_partitions_move_independently() -> None:
    marks = OffsetWatermarks()
    marks.started("p0", 5)
    marks.started("p1", 7)
    marks.started("p1", 8)
    marks.finished("p1", 7)
    assert marks.committable() == {"p1": 8}
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
    assert marks.committable() == {"p0": 10}
