"""What a carrier's answer means for the message (pure)."""

from __future__ import annotations

from smsgw.v1 import events_pb2 as ev

DeliveryState = ev.DeliveryState

# SMPP receipt `stat:` values (and message_state TLV names) to our part states.
RECEIPT_STATES = {
    "DELIVRD": DeliveryState.DELIVERY_STATE_DELIVERED,
    "DELIVERED": DeliveryState.DELIVERY_STATE_DELIVERED,
    "EXPIRED": DeliveryState.DELIVERY_STATE_EXPIRED,
    "DELETED": DeliveryState.DELIVERY_STATE_DELETED,
    "UNDELIV": DeliveryState.DELIVERY_STATE_UNDELIVERABLE,
    "UNDELIVERABLE": DeliveryState.DELIVERY_STATE_UNDELIVERABLE,
    "ACCEPTD": DeliveryState.DELIVERY_STATE_ACCEPTED,
    "ACCEPTED": DeliveryState.DELIVERY_STATE_ACCEPTED,
    "UNKNOWN": DeliveryState.DELIVERY_STATE_UNKNOWN,
    "REJECTD": DeliveryState.DELIVERY_STATE_REJECTED,
    "REJECTED": DeliveryState.DELIVERY_STATE_REJECTED,
    "ENROUTE": DeliveryState.DELIVERY_STATE_ENROUTE,
}


def delivery_state_of(carrier_state: str | None) -> int:
    return RECEIPT_STATES.get((carrier_state or "").strip().upper(), DeliveryState.DELIVERY_STATE_UNKNOWN)


def submit_failure(carrier: str, command_status: int) -> ev.MessageFailed:
    """A permanent submit error: the message fails with the SMPP status recorded (error table 500)."""
    return ev.MessageFailed(
        carrier=carrier,
        error_code=500,
        reason="CARRIER_REJECTED",
        message=f"carrier {carrier} refused the message with SMPP status 0x{command_status:08X}",
        carrier_error=f"0x{command_status:08X}",
    )
