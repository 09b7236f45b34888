"""DeadlineIndex: the time index behind routing's, receipt's and intake's timers."""

from smsgw.deadlines import DeadlineIndex


def test_pops_only_what_is_due_earliest_first():
    index = DeadlineIndex[str]()
    index.set("late", 30.0)
    index.set("early", 10.0)
    index.set("middle", 20.0)
    assert index.pop_due(5.0) == []
    assert index.pop_due(20.0) == ["early", "middle"]
    assert len(index) == 1 and "late" in index and "early" not in index


def test_a_new_deadline_replaces_the_old_one_and_none_clears_it():
    index = DeadlineIndex[str]()
    index.set("k", 10.0)
    index.set("k", 50.0)  # moved later: not due at 10 any more
    assert index.pop_due(10.0) == []
    assert index.deadline("k") == 50.0
    index.set("k", None)
    assert index.pop_due(100.0) == [] and len(index) == 0


def test_limit_and_compaction_keep_the_answers():
    index = DeadlineIndex[int]()
    for round_ in range(5):  # many replacements: stale heap entries are compacted away
        for key in range(1000):
            index.set(key, float(round_ * 1000 + key))
    assert len(index) == 1000
    first = index.pop_due(1e9, limit=10)
    assert first == list(range(10))
    assert index.pop_due(1e9) == list(range(10, 1000))


def test_keys_due_at_the_same_time_come_out_in_key_order():
    index = DeadlineIndex[tuple[int, bytes]]()
    for key in [(2, b"b"), (1, b"z"), (2, b"a")]:
        index.set(key, 5.0)
    assert index.pop_due(5.0) == [(1, b"z"), (2, b"a"), (2, b"b")]


def test_earliest_is_the_soonest_deadline_still_set():
    index = DeadlineIndex[str]()
    assert index.earliest() is None
    index.set("a", 30.0)
    index.set("b", 10.0)
    index.set("c", 20.0)
    assert index.earliest() == 10.0
    index.set("b", 40.0)  # moved later: its old entry is stale
    assert index.earliest() == 20.0
    index.set("c", None)
    assert index.earliest() == 30.0
    assert index.pop_due(30.0) == ["a"]
    assert index.earliest() == 40.0
    index.set("b", None)
    assert index.earliest() is None
