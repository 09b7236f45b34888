"""The soak's memory verdict: judged from when the retention windows are full, only in runs long enough."""

from tests.chaos.soak import RETENTION_SECONDS, Usage, growth_verdicts


def _usage(rss_mib_at) -> dict[str, Usage]:
    return {"receipt": Usage(samples=[(t, int(rss_mib_at(t) * 1024), 61) for t in range(0, 1200, 10)], pids={1})}


def test_a_long_run_that_grows_after_its_windows_filled_fails():
    lines, ok = growth_verdicts(_usage(lambda t: 140 + t / 10), 1200)
    assert not ok and "**grew**" in lines[-1]


def test_windows_filling_in_the_first_minutes_are_not_growth():
    full = RETENTION_SECONDS + 60
    lines, ok = growth_verdicts(_usage(lambda t: 100 + min(t, full) / 5), 900)
    assert ok and lines[-1].endswith("| flat |")
    assert f"RSS at {full} s" in lines[0]


def test_a_short_run_shows_memory_without_judging_it():
    lines, ok = growth_verdicts(_usage(lambda t: 100 + t / 5), 600)
    assert ok and "memory not judged" in lines[0] and lines[-1].endswith("| not judged |")
