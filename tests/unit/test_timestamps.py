"""The fast Timestamp conversions give exactly what protobuf's FromDatetime/ToDatetime give."""

import random
from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from smsgw.domain.message_state import occurred_at
from smsgw.events.envelope import timestamp, to_datetime
from smsgw.v1 import events_pb2 as ev

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _samples(n: int = 3000):
    rng = random.Random(20261202)
    edges = [
        EPOCH,
        EPOCH - timedelta(microseconds=1),
        EPOCH + timedelta(microseconds=999_999),
        datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
        datetime(1900, 3, 1, tzinfo=UTC),
    ]
    return edges + [
        EPOCH + timedelta(seconds=rng.randint(-2 * 10**9, 4 * 10**9), microseconds=rng.randint(0, 999_999))
        for _ in range(n)
    ]


def test_timestamp_matches_from_datetime_for_aware_naive_and_offset_datetimes():
    for at in _samples():
        for variant in (at, at.replace(tzinfo=None), at.astimezone(timezone(timedelta(hours=-7, minutes=-30)))):
            expected = Timestamp()
            expected.FromDatetime(variant)
            assert timestamp(variant) == expected, variant


def test_to_datetime_and_occurred_at_match_to_datetime_in_utc():
    for at in _samples():
        ts = Timestamp()
        ts.FromDatetime(at)
        assert to_datetime(ts) == ts.ToDatetime(tzinfo=UTC) == at
        assert occurred_at(ev.EventEnvelope(occurred_at=ts)) == at


def test_timestamp_defaults_to_now():
    before = datetime.now(UTC)
    now = to_datetime(timestamp())
    assert before <= now <= datetime.now(UTC)
