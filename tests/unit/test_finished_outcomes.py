"""Which events let carrier-adapter skip a command it reads again after a crash."""

from __future__ import annotations

from smsgw_carrier_adapter.finished_outcomes import FINISHING


def test_a_rerouted_command_is_handled_again_because_its_successor_may_not_have_been_published():
    # Dispatcher._reroute writes MessageRerouted, then the command for the next carrier: killed in
    # between, skipping the original would leave the message with no command at all.
    assert "message_rerouted" not in FINISHING
    # What ends a command for good: the carrier took it, refused it for good, or its validity ended.
    assert {"carrier_accepted", "message_failed", "dispatch_expired"} == FINISHING
