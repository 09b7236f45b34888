"""What an Android phone's answers mean: SmsManager result codes, delivery statuses, failures (pure)."""

from __future__ import annotations

from typing import cast

import pytest

from smsgw.v1 import device_gateway_pb2 as dg
from smsgw.v1 import events_pb2 as ev
from smsgw_carrier_adapter.android.outcomes import (
    SendVerdict,
    carrier_message_id,
    delivery_of,
    device_rejected_failure,
    device_send_failure,
    result_name,
    send_verdict,
    validity_ended_failure,
)

R = dg.SmsManagerResult
DS = ev.DeliveryState

# The numeric values of android.telephony.SmsManager (and Activity.RESULT_OK): the phone sends
# getResultCode() as is, so the enum must carry exactly these numbers.
ANDROID_VALUES = {
    "RESULT_OK": -1,
    "RESULT_ERROR_GENERIC_FAILURE": 1,
    "RESULT_ERROR_RADIO_OFF": 2,
    "RESULT_ERROR_NULL_PDU": 3,
    "RESULT_ERROR_NO_SERVICE": 4,
    "RESULT_ERROR_LIMIT_EXCEEDED": 5,
    "RESULT_ERROR_FDN_CHECK_FAILURE": 6,
    "RESULT_ERROR_SHORT_CODE_NOT_ALLOWED": 7,
    "RESULT_ERROR_SHORT_CODE_NEVER_ALLOWED": 8,
    "RESULT_RADIO_NOT_AVAILABLE": 9,
    "RESULT_NETWORK_REJECT": 10,
    "RESULT_INVALID_ARGUMENTS": 11,
    "RESULT_INVALID_SMS_FORMAT": 14,
    "RESULT_ENCODING_ERROR": 18,
    "RESULT_NO_DEFAULT_SMS_APP": 32,
    "RESULT_USER_NOT_ALLOWED": 33,
    "RESULT_RIL_RADIO_NOT_AVAILABLE": 100,
    "RESULT_RIL_SMS_SEND_FAIL_RETRY": 101,
    "RESULT_RIL_SIM_ABSENT": 120,
    "RESULT_RIL_ABORTED": 137,
}


@pytest.mark.parametrize(("name", "value"), sorted(ANDROID_VALUES.items()))
def test_enum_carries_the_android_numbers(name: str, value: int) -> None:
    assert R.Value("SMS_MANAGER_" + name) == value
    assert result_name(value) == name


def test_a_code_newer_than_the_proto_keeps_its_number() -> None:
    assert result_name(138) == "RESULT_138"
    assert send_verdict(138) is SendVerdict.TRANSIENT
    frame = dg.SendResult(result=cast("dg.SmsManagerResult", 138))  # open enum: the number survives the wire
    assert dg.SendResult.FromString(frame.SerializeToString()).result == 138


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (R.SMS_MANAGER_RESULT_OK, SendVerdict.SENT),
        (R.SMS_MANAGER_RESULT_ERROR_NULL_PDU, SendVerdict.PERMANENT),
        (R.SMS_MANAGER_RESULT_ERROR_SHORT_CODE_NOT_ALLOWED, SendVerdict.PERMANENT),
        (R.SMS_MANAGER_RESULT_ERROR_SHORT_CODE_NEVER_ALLOWED, SendVerdict.PERMANENT),
        (R.SMS_MANAGER_RESULT_INVALID_SMS_FORMAT, SendVerdict.PERMANENT),
        (R.SMS_MANAGER_RESULT_ERROR_GENERIC_FAILURE, SendVerdict.TRANSIENT),
        (R.SMS_MANAGER_RESULT_ERROR_NO_SERVICE, SendVerdict.TRANSIENT),
        (R.SMS_MANAGER_RESULT_ERROR_RADIO_OFF, SendVerdict.TRANSIENT),
        (R.SMS_MANAGER_RESULT_ERROR_LIMIT_EXCEEDED, SendVerdict.TRANSIENT),
        (R.SMS_MANAGER_RESULT_RIL_SMS_SEND_FAIL_RETRY, SendVerdict.TRANSIENT),
        (R.SMS_MANAGER_RESULT_UNSPECIFIED, SendVerdict.TRANSIENT),
    ],
)
def test_send_verdicts(code: int, verdict: SendVerdict) -> None:
    assert send_verdict(code) is verdict


def test_send_failure_records_the_android_name() -> None:
    failure = device_send_failure("phones", "pixel-1", R.SMS_MANAGER_RESULT_ERROR_NULL_PDU, error_code=38)
    assert (failure.carrier, failure.error_code, failure.reason, failure.carrier_error) == (
        "phones",
        500,
        "DEVICE_SEND_FAILED",
        "RESULT_ERROR_NULL_PDU",
    )
    assert "pixel-1" in failure.message and "radio error 38" in failure.message


def test_rejection_and_validity_failures() -> None:
    rejected = device_rejected_failure("phones", "pixel-1", dg.SendRejectReason.SEND_REJECT_REASON_EXPIRED, "late")
    assert (rejected.reason, rejected.carrier_error) == ("DEVICE_REJECTED", "EXPIRED")
    ended = validity_ended_failure("phones", "no phone connected")
    assert (ended.error_code, ended.reason) == (500, "DEVICE_VALIDITY_ENDED")


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (0x00, DS.DELIVERY_STATE_DELIVERED),
        (0x01, DS.DELIVERY_STATE_UNKNOWN),  # forwarded, the SC cannot confirm delivery
        (0x02, DS.DELIVERY_STATE_DELETED),  # replaced by the SC
        (0x20, DS.DELIVERY_STATE_ENROUTE),  # congestion, SC still trying
        (0x3F, DS.DELIVERY_STATE_ENROUTE),
        (0x41, DS.DELIVERY_STATE_UNDELIVERABLE),  # incompatible destination
        (0x46, DS.DELIVERY_STATE_EXPIRED),  # validity period expired
        (0x47, DS.DELIVERY_STATE_DELETED),
        (0x48, DS.DELIVERY_STATE_DELETED),
        (0x62, DS.DELIVERY_STATE_UNDELIVERABLE),  # no response from SME, SC gave up
        (0x80, DS.DELIVERY_STATE_UNKNOWN),  # reserved
        (-5, DS.DELIVERY_STATE_UNKNOWN),
    ],
)
def test_tp_status(status: int, state: int) -> None:
    assert delivery_of("3gpp", status)[0] == state


def test_delivery_raw_state_and_error() -> None:
    assert delivery_of("3gpp", 0x00) == (DS.DELIVERY_STATE_DELIVERED, "3gpp:0x00", "")
    assert delivery_of("3gpp", 0x41) == (DS.DELIVERY_STATE_UNDELIVERABLE, "3gpp:0x41", "3gpp:0x41")
    assert delivery_of("", 0x20) == (DS.DELIVERY_STATE_ENROUTE, "3gpp:0x20", "")  # format absent: 3gpp


def _cdma(error_class: int, status: int) -> int:
    """What com.android.internal.telephony.cdma.SmsMessage.getStatus() returns."""
    return ((error_class << 8) | status) << 16


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (_cdma(0, 2), DS.DELIVERY_STATE_DELIVERED),
        (_cdma(0, 0), DS.DELIVERY_STATE_ACCEPTED),
        (_cdma(0, 3), DS.DELIVERY_STATE_DELETED),
        (_cdma(2, 4), DS.DELIVERY_STATE_ENROUTE),  # temporary: network congestion
        (_cdma(3, 7), DS.DELIVERY_STATE_UNDELIVERABLE),  # permanent: blocked destination
        (_cdma(3, 0x0D), DS.DELIVERY_STATE_EXPIRED),
    ],
)
def test_3gpp2_status(status: int, state: int) -> None:
    got, raw, error = delivery_of("3gpp2", status)
    assert got == state and raw == f"3gpp2:0x{status:08X}"
    assert bool(error) == (
        state in (DS.DELIVERY_STATE_UNDELIVERABLE, DS.DELIVERY_STATE_EXPIRED, DS.DELIVERY_STATE_DELETED)
    )


def test_carrier_message_id_names_device_message_and_part() -> None:
    assert carrier_message_id("pixel-1", "m-1", 0) == "pixel-1:m-1:0"
