"""What a text message becomes on the wire: the submit_sm PDUs, one per part.

The text is encoded and split by ``smsgw.domain.encoding.split_encoded``, the
same routine ``plan_segments`` counts with, so the number of parts quoted to an
API client is the number sent. Carriers differ only in how a long message
says "I am part k of n" (``long_message``):

* ``"udh"``: each part's short_message starts with a 6-octet concatenation UDH
  (8-bit reference) and esm_class has the UDHI bit. The default; every SMSC
  takes it.
* ``"sar"``: each part carries the sar_msg_ref_num (16-bit reference),
  sar_total_segments and sar_segment_seqnum TLVs, and short_message holds the
  text only; the SMSC builds the UDH. Part sizes are those of "udh" (153
  septets / 67 UTF-16 units), the room the SMSC's UDH leaves.
* ``"payload"``: one submit_sm with the whole text in the message_payload TLV
  and an empty short_message; the SMSC splits. One submit_sm_resp, one id, one
  receipt, although the handset still gets (and the carrier bills) every part.

A text that fits one SMS is sent the same way in every mode: one plain
submit_sm, text in short_message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args

from smsgw.domain.encoding import Encoding, concat_udh, split_encoded
from smsgw.smpp import constants as c
from smsgw.smpp.pdu import SubmitSm, tlv_u8, tlv_u16

__all__ = ["LONG_MESSAGE_MODES", "LongMessage", "OutboundMessage", "address_fields", "build_submits"]

LongMessage = Literal["udh", "sar", "payload"]
LONG_MESSAGE_MODES: tuple[str, ...] = get_args(LongMessage)


@dataclass(frozen=True)
class OutboundMessage:
    #: SMS parts the handset receives: ``plan_segments(text).segments``.
    segments: int
    #: What to send, in order: one per part ("udh", "sar"), or one in all ("payload").
    pdus: list[SubmitSm]


def address_fields(address: str) -> tuple[str, int, int]:
    """(addr, TON, NPI) for an smsgw address.

    E.164 ("+447700900123") and long numbers go as international/ISDN (1/1)
    without the '+', which SMPP addresses never carry. Short numbers (short
    codes) go as unknown/ISDN (0/1) and let the SMSC apply its numbering plan.
    Anything with a letter is an alphanumeric sender id (5/0).
    """
    digits = address[1:] if address.startswith("+") else address
    if digits.isdigit():
        if address.startswith("+") or len(digits) > 8:
            return digits, 1, 1
        return digits, 0, 1
    return address, 5, 0


def absolute_time(at: datetime) -> str:
    """SMPP 3.4 absolute time (section 7.1.1), in UTC: "YYMMDDhhmmsstnnp" with tenths of a
    second, 00 quarter-hours from UTC and '+'. Used for validity_period."""
    utc = at.astimezone(UTC)
    return utc.strftime("%y%m%d%H%M%S") + f"{utc.microsecond // 100_000}00+"


def build_submits(
    *,
    source: str,
    destination: str,
    text: str,
    registered_delivery: bool,
    long_message: LongMessage,
    reference: int,
    expires_at: datetime | None = None,
    priority_flag: int = 0,
) -> OutboundMessage:
    """The submit_sm PDUs for one message (sequence numbers are the session's to set).

    ``reference`` (0..65535) tells this message's parts from another's at the
    handset; "udh" uses its low 8 bits, "sar" all 16.
    """
    if long_message not in LONG_MESSAGE_MODES:
        raise ValueError(f"long_message must be one of {LONG_MESSAGE_MODES}, not {long_message!r}")
    encoding, parts = split_encoded(text)
    if not parts:
        raise ValueError("cannot submit an empty message")
    source_addr, source_ton, source_npi = address_fields(source)
    destination_addr, dest_ton, dest_npi = address_fields(destination)
    common = dict(
        registered_delivery=c.REGISTERED_DELIVERY_RECEIPT if registered_delivery else 0,
        data_coding=c.DATA_CODING_DEFAULT if encoding is Encoding.GSM7 else c.DATA_CODING_UCS2,
        source_addr=source_addr,
        source_addr_ton=source_ton,
        source_addr_npi=source_npi,
        destination_addr=destination_addr,
        dest_addr_ton=dest_ton,
        dest_addr_npi=dest_npi,
        # The message's validity: an SMSC that cannot deliver by then gives up (and says
        # EXPIRED in its receipt) instead of trying for its own default, often days.
        validity_period=absolute_time(expires_at) if expires_at is not None else "",
        # 0 is "non-priority" for GSM SMSCs; 1 asks the SMSC to queue it ahead (a HIGH message).
        priority_flag=priority_flag,
    )
    total = len(parts)
    if total > 0xFF and long_message != "payload":
        raise ValueError(f"{total} parts do not fit a concatenation counter (at most 255)")
    if total == 1:
        pdus = [SubmitSm(short_message=parts[0], **common)]  # type: ignore[arg-type]
    elif long_message == "udh":
        udh_reference = reference & 0xFF
        pdus = [
            SubmitSm(
                esm_class=c.ESM_CLASS_UDHI,
                short_message=concat_udh(udh_reference, total, index) + part,
                **common,  # type: ignore[arg-type]
            )
            for index, part in enumerate(parts, start=1)
        ]
    elif long_message == "sar":
        sar_reference = tlv_u16(reference & 0xFFFF)
        pdus = [
            SubmitSm(
                short_message=part,
                tlvs={
                    c.TAG_SAR_MSG_REF_NUM: sar_reference,
                    c.TAG_SAR_TOTAL_SEGMENTS: tlv_u8(total),
                    c.TAG_SAR_SEGMENT_SEQNUM: tlv_u8(index),
                },
                **common,  # type: ignore[arg-type]
            )
            for index, part in enumerate(parts, start=1)
        ]
    else:
        # The parts are cut on character boundaries, so joining them is the whole text encoded.
        payload = b"".join(parts)
        if len(payload) > 0xFFFF:
            raise ValueError(f"{len(payload)} octets do not fit message_payload (at most 65535)")
        pdus = [SubmitSm(short_message=b"", tlvs={c.TAG_MESSAGE_PAYLOAD: payload}, **common)]  # type: ignore[arg-type]
    return OutboundMessage(segments=total, pdus=pdus)
