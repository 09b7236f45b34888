"""What an Android phone's answers mean for the message (pure: no I/O, no grpc).

Sent intents carry an android.telephony.SmsManager result code; delivery intents carry
a status report PDU whose status is TP-Status (3gpp) or error class/status (3gpp2).
"""

from __future__ import annotations

from enum import Enum

from smsgw.v1 import device_gateway_pb2 as dg
from smsgw.v1 import events_pb2 as ev

R = dg.SmsManagerResult
DeliveryState = ev.DeliveryState


class SendVerdict(Enum):
    SENT = "sent"  # the radio took it: the message is SENT
    PERMANENT = "permanent"  # no phone would do better: the message fails
    TRANSIENT = "transient"  # this phone, now: try another phone, or later


# Errors that come from the message itself (its destination, its PDU, its encoding):
# another phone would fail the same way. Everything else, including codes we do not
# know yet, is about this phone or this moment, and is retried elsewhere or later.
PERMANENT_RESULTS = frozenset(
    {
        R.SMS_MANAGER_RESULT_ERROR_NULL_PDU,
        R.SMS_MANAGER_RESULT_ERROR_FDN_CHECK_FAILURE,  # destination barred by the SIM's fixed dialing list
        R.SMS_MANAGER_RESULT_ERROR_SHORT_CODE_NOT_ALLOWED,
        R.SMS_MANAGER_RESULT_ERROR_SHORT_CODE_NEVER_ALLOWED,
        R.SMS_MANAGER_RESULT_INVALID_ARGUMENTS,
        R.SMS_MANAGER_RESULT_INVALID_SMS_FORMAT,
        R.SMS_MANAGER_RESULT_ENCODING_ERROR,
        R.SMS_MANAGER_RESULT_RIL_INVALID_ARGUMENTS,
        R.SMS_MANAGER_RESULT_RIL_INVALID_SMS_FORMAT,
        R.SMS_MANAGER_RESULT_RIL_ENCODING_ERR,
    }
)

# Transient errors that say the phone's radio is down: it is passed over for a while.
RADIO_DOWN_RESULTS = frozenset(
    {
        R.SMS_MANAGER_RESULT_ERROR_RADIO_OFF,
        R.SMS_MANAGER_RESULT_ERROR_NO_SERVICE,
        R.SMS_MANAGER_RESULT_RADIO_NOT_AVAILABLE,
        R.SMS_MANAGER_RESULT_RIL_RADIO_NOT_AVAILABLE,
        R.SMS_MANAGER_RESULT_RIL_SIM_ABSENT,
        R.SMS_MANAGER_RESULT_RIL_NO_NETWORK_FOUND,
        R.SMS_MANAGER_RESULT_RIL_NETWORK_NOT_READY,
    }
)


def send_verdict(result: int) -> SendVerdict:
    if result == R.SMS_MANAGER_RESULT_OK:
        return SendVerdict.SENT
    if result in PERMANENT_RESULTS:
        return SendVerdict.PERMANENT
    return SendVerdict.TRANSIENT


def result_name(result: int) -> str:
    """The Android constant name, e.g. RESULT_ERROR_NO_SERVICE; RESULT_<n> for codes newer than our proto."""
    try:
        return R.Name(result).removeprefix("SMS_MANAGER_")
    except ValueError:
        return f"RESULT_{result}"


def device_send_failure(carrier: str, device_id: str, result: int, error_code: int = 0) -> ev.MessageFailed:
    """The phone's radio refused the message for good (error table 500)."""
    name = result_name(result)
    detail = f" (radio error {error_code})" if error_code else ""
    return ev.MessageFailed(
        carrier=carrier,
        error_code=500,
        reason="DEVICE_SEND_FAILED",
        message=f"phone {device_id} of carrier {carrier} could not send the message: {name}{detail}",
        carrier_error=name,
    )


def device_rejected_failure(carrier: str, device_id: str, reason: int, detail: str) -> ev.MessageFailed:
    name = dg.SendRejectReason.Name(reason) if reason in dg.SendRejectReason.values() else str(reason)
    return ev.MessageFailed(
        carrier=carrier,
        error_code=500,
        reason="DEVICE_REJECTED",
        message=f"phone {device_id} of carrier {carrier} refused the message: {name} {detail}".rstrip(),
        carrier_error=name.removeprefix("SEND_REJECT_REASON_"),
    )


def media_not_supported_failure(carrier: str, count: int) -> ev.MessageFailed:
    return ev.MessageFailed(
        carrier=carrier,
        error_code=500,
        reason="CARRIER_REJECTED",
        message=f"carrier {carrier} (Android phones) sends text only; {count} media URL(s) given",
        carrier_error="MMS_NOT_SUPPORTED",
    )


def account_mismatch_failure(carrier: str, carrier_account: str, message_account: str) -> ev.MessageFailed:
    """An account's phones (its SIMs, its bill) send that account's messages only."""
    return ev.MessageFailed(
        carrier=carrier,
        error_code=500,
        reason="CARRIER_REJECTED",
        message=f"carrier {carrier} is the phones of account {carrier_account}; a message of account "
        f"{message_account or '(none)'} was routed to it",
        carrier_error="ACCOUNT_MISMATCH",
    )


def validity_ended_failure(carrier: str, detail: str) -> ev.MessageFailed:
    return ev.MessageFailed(
        carrier=carrier,
        error_code=500,
        reason="DEVICE_VALIDITY_ENDED",
        message=f"carrier {carrier}: validity ended before a phone sent the message; {detail}",
    )


# A rejection that another phone would not fix.
PERMANENT_REJECTIONS = frozenset(
    {
        dg.SendRejectReason.SEND_REJECT_REASON_EXPIRED,
        dg.SendRejectReason.SEND_REJECT_REASON_INVALID_MESSAGE,
    }
)


def _tp_status_state(status: int) -> int:
    """3GPP TS 23.040 9.2.3.15 TP-Status to our part state."""
    if not 0 <= status <= 0x7F:  # 0x80-0xFF reserved; anything else is not a TP-Status
        return DeliveryState.DELIVERY_STATE_UNKNOWN
    if status == 0x00:  # short message received by the SME
        return DeliveryState.DELIVERY_STATE_DELIVERED
    if status == 0x02:  # replaced by the SC
        return DeliveryState.DELIVERY_STATE_DELETED
    if status <= 0x1F:  # 0x01 forwarded, unable to confirm; reserved/SC-specific
        return DeliveryState.DELIVERY_STATE_UNKNOWN
    if status <= 0x3F:  # temporary error, SC still trying
        return DeliveryState.DELIVERY_STATE_ENROUTE
    if status == 0x46:  # validity period expired
        return DeliveryState.DELIVERY_STATE_EXPIRED
    if status in (0x47, 0x48):  # deleted by the originating SME / by SC administration
        return DeliveryState.DELIVERY_STATE_DELETED
    return DeliveryState.DELIVERY_STATE_UNDELIVERABLE  # permanent error, or temporary error the SC gave up on


# 3GPP2 C.S0015-B 4.5.21 message status codes with error class 0 (no error).
_CDMA_STATUS_ACCEPTED, _CDMA_STATUS_DEPOSITED, _CDMA_STATUS_DELIVERED, _CDMA_STATUS_CANCELLED = 0, 1, 2, 3
_CDMA_STATUS_EXPIRED = 0x0D


def _cdma_state(status: int) -> int:
    error_class = (status >> 24) & 0xFF
    code = (status >> 16) & 0xFF
    if error_class == 0:
        return {
            _CDMA_STATUS_DELIVERED: DeliveryState.DELIVERY_STATE_DELIVERED,
            _CDMA_STATUS_ACCEPTED: DeliveryState.DELIVERY_STATE_ACCEPTED,
            _CDMA_STATUS_DEPOSITED: DeliveryState.DELIVERY_STATE_ENROUTE,
            _CDMA_STATUS_CANCELLED: DeliveryState.DELIVERY_STATE_DELETED,
        }.get(code, DeliveryState.DELIVERY_STATE_UNKNOWN)
    if error_class == 2:  # temporary: the network still tries
        return DeliveryState.DELIVERY_STATE_ENROUTE
    if error_class == 3:
        return (
            DeliveryState.DELIVERY_STATE_EXPIRED
            if code == _CDMA_STATUS_EXPIRED
            else DeliveryState.DELIVERY_STATE_UNDELIVERABLE
        )
    return DeliveryState.DELIVERY_STATE_UNKNOWN


_FAILED_STATES = frozenset(
    {
        DeliveryState.DELIVERY_STATE_UNDELIVERABLE,
        DeliveryState.DELIVERY_STATE_EXPIRED,
        DeliveryState.DELIVERY_STATE_DELETED,
        DeliveryState.DELIVERY_STATE_REJECTED,
    }
)


def delivery_of(pdu_format: str, status: int) -> tuple[int, str, str]:
    """(DeliveryState, carrier_state, carrier_error) of a delivery intent's status.

    carrier_state is the raw status ("3gpp:0x46", "3gpp2:0x03040000"); carrier_error
    repeats it when the part failed, and is empty otherwise.
    """
    fmt = (pdu_format or "3gpp").strip().lower()
    if fmt == "3gpp2":
        state, raw = _cdma_state(status), f"3gpp2:0x{status & 0xFFFFFFFF:08X}"
    else:
        state, raw = _tp_status_state(status), f"3gpp:0x{status & 0xFFFFFFFF:02X}"
    return state, raw, (raw if state in _FAILED_STATES else "")


def carrier_message_id(device_id: str, message_id: str, part_index: int) -> str:
    """The id a part gets on an Android carrier: receipts name it the same way."""
    return f"{device_id}:{message_id}:{part_index}"
