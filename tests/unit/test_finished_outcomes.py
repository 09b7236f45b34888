"""Which events let carrier-adapter skip a command it reads again after a crash."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from smsgw.events.envelope import encode, new_event
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev
from smsgw_carrier_adapter.finished_outcomes import FINISHING, FinishedOutcomes, Found


def test_a_rerouted_command_is_handled_again_because_its_successor_may_not_have_been_published():
    # Dispatcher._reroute writes MessageRerouted, then the command for the next carrier: killed in
    # between, skipping the original would leave the message with no command at all.
    assert "message_rerouted" not in FINISHING
    # What ends a command for good: the carrier took it, refused it for good, or its validity ended.
    assert {"carrier_accepted", "message_failed", "dispatch_expired"} == FINISHING


def test_a_deferred_command_is_finished_by_its_successor_on_the_delay_topic_not_by_its_event():
    # Dispatcher._defer writes DispatchDeferred, then the successor on the delay topic: the event
    # alone does not finish the command (killed in between, there is no successor to come back).
    assert "dispatch_deferred" not in FINISHING
    outcomes = FinishedOutcomes(
        "events", delay_topics=["delayed", "delayed-x2"], lookback_seconds=300, clock=lambda: 1_000.0
    )
    found: dict[int, Found] = {}
    lookups = outcomes.deferred({3, 4}, found)
    assert [(lookup.topic, lookup.partitions, lookup.since_ms) for lookup in lookups] == [
        ("delayed", {3, 4}, 700_000),
        ("delayed-x2", {3, 4}, 700_000),
    ], "every tier of the delay topics is read"
    successor = cp.DispatchCommand(command_id="later", message_id="m", deferred_from="earlier")
    lookups[1].on_record(3, _record(successor.SerializeToString()))
    lookups[0].on_record(3, _record(cp.DispatchCommand(command_id="routed", message_id="n").SerializeToString()))
    lookups[0].on_record(4, _record(b"\xff not a command"))
    assert found == {3: {"earlier": ()}}


def test_an_accepted_command_is_found_with_its_carrier_ids_to_correlate_them_again():
    # The dispatcher writes CarrierAccepted beside the correlations, not after them: the replica
    # that finds a command accepted but uncommitted writes its correlations again from these ids.
    lookup, found = FinishedOutcomes("events", lookback_seconds=60, clock=lambda: 1_000.0).lookup({0, 1})
    assert (lookup.topic, lookup.partitions, lookup.since_ms) == ("events", {0, 1}, 940_000)
    accepted = _event(ev.CarrierAccepted(carrier="c", carrier_message_ids=["a1", "a2"], segments=2), "cmd-a")
    failed = _event(ev.MessageFailed(carrier="c", error_code=400, reason="INVALID_NUMBER"), "cmd-f")
    rerouted = _event(ev.MessageRerouted(from_carrier="c", carrier="d"), "cmd-r")
    for partition, value in ((0, accepted), (0, failed), (1, rerouted), (1, b"\xff not an event")):
        lookup.on_record(partition, _record(value))
    assert found == {0: {"cmd-a": ("a1", "a2"), "cmd-f": ()}, 1: {}}


def _event(payload, command_id: str) -> bytes:
    envelope = new_event(
        payload,
        service="carrier-adapter",
        producer="test",
        message_id="m",
        account_id="acct",
        sequence=3,
        causation_id=command_id,
    )
    return encode(envelope)


def test_without_a_delay_topic_nothing_is_looked_up_there():
    assert FinishedOutcomes("events").deferred({0}, {}) == []


def _record(value: bytes) -> ConsumerRecord:
    return ConsumerRecord(
        topic="delayed",
        partition=3,
        offset=0,
        timestamp=0,
        timestamp_type=0,
        key=b"m",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value),
        headers=(),
    )
