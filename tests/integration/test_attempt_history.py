"""Every submit attempt is in the message's history, though not every attempt has an event.

Attempts 1-5 and the powers of two get a SubmitAttemptFailed each; the others are summed up on
the next one written (attempt_record.py). The real Dispatcher on a real broker (both kinds),
through the dispatch rig: one message fails 20 attempts and is taken at the 21st, one is rerouted
after 11 failed attempts. Read back from the event log, the failures cover attempts 1..N exactly
once each, in order, and each MessageSubmitted comes after the failures before it.
"""

from __future__ import annotations

import pytest

from smsgw.events.envelope import decode_event
from smsgw.events.topics import CARRIER_DISPATCH, MESSAGE_EVENTS
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev
from smsgw_carrier_adapter.carrier import CarrierUnavailable, SubmitProgress, SubmitResult
from tests.integration.dispatch_rig import GatedCarrier, dispatch_command, read_until, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FAILING, FAILOVER_AFTER = 20, 11


class FailsFirst(GatedCarrier):
    """Refuses the first `failures` submits of each message (NOT_CONNECTED), then takes it."""

    def __init__(self, name: str, failures: int) -> None:
        super().__init__(name)
        self.failures = failures
        self.calls: dict[str, int] = {}

    async def submit(self, command: cp.DispatchCommand, progress: SubmitProgress | None = None) -> SubmitResult:
        calls = self.calls[command.message_id] = self.calls.get(command.message_id, 0) + 1
        if calls <= self.failures:
            reason = "THROTTLED" if calls % 3 == 0 else "NOT_CONNECTED"
            raise CarrierUnavailable(f"{self.name}: attempt {calls} refused", reason=reason)
        return await super().submit(command, progress)


def _covered(failures: list[ev.SubmitAttemptFailed]) -> list[int]:
    """The attempt numbers the failures account for, in the order written."""
    numbers: list[int] = []
    for f in failures:
        numbers.extend(range(f.attempt - f.unrecorded_attempts, f.attempt + 1))
        assert sum(f.unrecorded_reasons.values()) == f.unrecorded_attempts
    return numbers


async def test_every_failed_attempt_is_in_the_history_summed_up_where_it_has_no_event(rig):
    flaky, down, up = FailsFirst("flaky", FAILING), GatedCarrier("down", up=False), GatedCarrier("up")
    taken, rerouted = dispatch_command("flaky", 0), dispatch_command("down", 0)
    rerouted.fallback_carriers.append("up")
    dispatcher = rig.dispatcher(
        [flaky, down, up],
        dispatch_topic=rig.settings.topic(CARRIER_DISPATCH),
        failover_after=600.0,
        failover_after_attempts=FAILOVER_AFTER,
    )
    await rig.send([taken, rerouted])
    stop, task = await rig.run(dispatcher)
    await until(lambda: flaky.accepted and up.accepted, 60, "both messages taken")
    await rig.stop(dispatcher, stop, task)

    events: dict[str, list[ev.EventEnvelope]] = {taken.message_id: [], rerouted.message_id: []}

    def on_record(record) -> None:
        envelope = decode_event(record.value)
        if envelope.message_id in events:
            events[envelope.message_id].append(envelope)

    def kinds(message_id: str) -> list[str]:
        return [str(e.WhichOneof("payload")) for e in events[message_id]]

    await read_until(
        rig,
        MESSAGE_EVENTS,
        on_record,
        lambda: "carrier_accepted" in kinds(taken.message_id) and "message_rerouted" in kinds(rerouted.message_id),
        30,
        f"the outcomes: {events}",
    )

    # Taken at attempt 21: every one of the 20 failures accounted for, once, in order.
    history = events[taken.message_id]
    failures = [e.submit_attempt_failed for e in history if e.HasField("submit_attempt_failed")]
    assert _covered(failures) == list(range(1, FAILING + 1))
    assert [f.attempt for f in failures] == [1, 2, 3, 4, 5, 7, 8, 15, 16, 20], "1-5, the powers of two, before them"
    reasons: dict[str, int] = {}
    for f in failures:
        reasons[f.reason] = reasons.get(f.reason, 0) + 1
        for reason, count in f.unrecorded_reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
    assert reasons == {"THROTTLED": FAILING // 3, "NOT_CONNECTED": FAILING - FAILING // 3}
    # The order of the log: each attempt announced (1-5, 8, 16) after the failures before it.
    order = [
        ("submitted", e.message_submitted.attempt)
        if e.HasField("message_submitted")
        else ("failed", e.submit_attempt_failed.attempt)
        for e in history
        if e.HasField("message_submitted") or e.HasField("submit_attempt_failed")
    ]
    last_failed = 0
    for what, attempt in order:
        if what == "failed":
            assert attempt > last_failed
            last_failed = attempt
        else:
            assert attempt == last_failed + 1, f"attempt {attempt} announced after failure {last_failed}: {order}"
    assert kinds(taken.message_id)[-1] == "carrier_accepted"

    # Rerouted after attempt 11: the 11th is written though not a power of two, with 9 and 10 on it.
    failures = [e.submit_attempt_failed for e in events[rerouted.message_id] if e.HasField("submit_attempt_failed")]
    assert _covered(failures) == list(range(1, FAILOVER_AFTER + 1))
    assert failures[-1].attempt == FAILOVER_AFTER and failures[-1].unrecorded_attempts == 2
    assert failures[-1].unrecorded_reasons["NOT_CONNECTED"] == 2
