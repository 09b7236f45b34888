"""What the webhook feed commits: never past a webhook still queued, across a rebalance too."""

from __future__ import annotations

from aiokafka import TopicPartition

from smsgw_receipt.webhook_feed import _Watermarks

TP = TopicPartition("smsgw.message-events.v1", 3)


def test_a_partition_given_back_is_not_committed_past_a_webhook_queued_before_it_was_given_up():
    marks = _Watermarks()
    for offset in range(5, 11):
        marks.seen(TP, offset)
    marks.hold(TP, 5)  # the webhook of offset 5 is still queued
    assert marks.committable() == {TP: 5}

    marks.forget([TP])  # revoked (e.g. the brokers were unreachable and the member rejoined) ...
    assert marks.committable() == {}
    marks.seen(TP, 11)  # ... and given back: reading goes on
    assert marks.committable() == {TP: 5}, "a crash now must not lose the queued webhook"

    marks.settle(TP, 5)  # delivered (or dead-lettered)
    assert marks.committable() == {TP: 12}
