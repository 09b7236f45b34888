"""What a deliver_sm means to smsgw: a delivery receipt or a mobile-originated message.

The SMSC may say "receipt" with the esm_class message type, with the
receipted_message_id TLV, or only by the shape of the text; it may give the id
and state as TLVs, as text, or both (and then not always in the same base).
This module folds all of that into one ``InboundDeliver``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from smsgw.domain.encoding import decode_gsm7, decode_ucs2, parse_concat_udh
from smsgw.smpp import constants as c
from smsgw.smpp.pdu import DeliverSm, tlv_int, tlv_str
from smsgw.smpp.receipts import normalize_message_id, parse_receipt_text, stat_from_message_state

_log = logging.getLogger(__name__)

_RECEIPT_TYPES = frozenset({c.ESM_CLASS_SMSC_DELIVERY_RECEIPT, c.ESM_CLASS_INTERMEDIATE_NOTIFICATION})


@dataclass(frozen=True)
class Concat:
    """Where a part of a long MO belongs: the sender's reference, the part count, this part's number."""

    reference: int
    total: int
    #: 1-based.
    sequence: int


@dataclass(frozen=True)
class InboundDeliver:
    """A deliver_sm the SMSC sent us, already interpreted."""

    is_receipt: bool
    #: The id the receipt is about, as the SMSC wrote it (TLV preferred over text).
    #: Compare with submit ids via ``message_id_key`` / ``normalize_message_id``.
    receipted_message_id: str | None
    #: 'DELIVRD', 'UNDELIV', ... (the TLV message_state mapped to these codes).
    state: str | None
    error_code: str | None
    source: str
    destination: str
    #: Decoded text for an MO (this part only, UDH removed); the receipt text for a receipt.
    text: str | None
    raw: dict[str, Any] = field(default_factory=dict)
    #: Set when an MO is one part of a long message (concatenation UDH, 8- or 16-bit
    #: reference, or the sar_* TLVs), with at least two parts. None: a whole message.
    concat: Concat | None = None

    @property
    def message_id_key(self) -> str | None:
        """``normalize_message_id`` of receipted_message_id: the key to correlate on."""
        if self.receipted_message_id is None:
            return None
        return normalize_message_id(self.receipted_message_id)


def decode_text(data_coding: int, payload: bytes) -> str:
    """User data to str by data_coding; never raises (an MO must not be lost to a bad octet)."""
    try:
        if data_coding == c.DATA_CODING_UCS2:
            return decode_ucs2(payload)
        if data_coding == c.DATA_CODING_DEFAULT:
            return decode_gsm7(payload)
    except ValueError:
        # Some SMSCs send ASCII/Latin-1 under data_coding 0; show it rather than drop it.
        _log.debug("payload does not decode as data_coding %d; falling back to Latin-1", data_coding)
    if data_coding == c.DATA_CODING_UCS2:
        return payload.decode("utf-16-be", errors="replace")
    return payload.decode("latin-1")


def from_deliver_sm(pdu: DeliverSm) -> InboundDeliver:
    payload = pdu.payload
    raw: dict[str, Any] = {
        "sequence_number": pdu.sequence_number,
        "service_type": pdu.service_type,
        "source_addr_ton": pdu.source_addr_ton,
        "source_addr_npi": pdu.source_addr_npi,
        "dest_addr_ton": pdu.dest_addr_ton,
        "dest_addr_npi": pdu.dest_addr_npi,
        "esm_class": pdu.esm_class,
        "protocol_id": pdu.protocol_id,
        "data_coding": pdu.data_coding,
        "short_message_hex": payload.hex(),
        "tlvs": {f"0x{tag:04X}": value.hex() for tag, value in pdu.tlvs.items()},
    }

    if pdu.esm_class & c.ESM_CLASS_UDHI:
        udh = parse_concat_udh(payload)
        if udh is not None:
            reference, total, sequence, payload = udh
            raw["concat"] = {"reference": reference, "total": total, "sequence": sequence}
        elif payload:
            payload = payload[1 + payload[0] :]  # a UDH without concatenation: skip it
    sar = [pdu.tlvs.get(tag) for tag in (c.TAG_SAR_MSG_REF_NUM, c.TAG_SAR_TOTAL_SEGMENTS, c.TAG_SAR_SEGMENT_SEQNUM)]
    if "concat" not in raw and all(value is not None for value in sar):
        # The same part-of-a-whole information, sent as TLVs instead of a UDH.
        reference, total, sequence = (tlv_int(value) for value in sar if value is not None)
        raw["concat"] = {"reference": reference, "total": total, "sequence": sequence}
    concat: Concat | None = None
    if "concat" in raw:
        info = raw["concat"]
        # A sequence outside 1..total makes the information void (as for a UDH, TS 23.040
        # 9.2.3.24.1): the part is shown as a message of its own rather than held forever.
        if info["total"] >= 2 and 1 <= info["sequence"] <= info["total"]:
            concat = Concat(reference=info["reference"], total=info["total"], sequence=info["sequence"])
    text = decode_text(pdu.data_coding, payload)

    tlv_id = tlv_str(pdu.tlvs[c.TAG_RECEIPTED_MESSAGE_ID]) if c.TAG_RECEIPTED_MESSAGE_ID in pdu.tlvs else None
    tlv_state = pdu.tlvs.get(c.TAG_MESSAGE_STATE)
    is_receipt = (pdu.esm_class & c.ESM_CLASS_TYPE_MASK) in _RECEIPT_TYPES or bool(tlv_id)
    if not is_receipt:
        return InboundDeliver(
            is_receipt=False,
            receipted_message_id=None,
            state=None,
            error_code=None,
            source=pdu.source_addr,
            destination=pdu.destination_addr,
            text=text,
            raw=raw,
            concat=concat,
        )

    parsed = parse_receipt_text(text) if text else None
    if parsed is not None:
        raw["receipt_text"] = {
            "id": parsed.message_id,
            "stat": parsed.stat,
            "sub": parsed.sub,
            "dlvrd": parsed.dlvrd,
            "submit_date": parsed.submit_date,
            "done_date": parsed.done_date,
            "err": parsed.err,
        }
    # The TLVs are binary and unambiguous, so they win over the text when both
    # are present; the text fills whatever the TLVs leave out.
    message_id = tlv_id or (parsed.message_id if parsed else None)
    state = stat_from_message_state(tlv_int(tlv_state)) if tlv_state else (parsed.stat if parsed else None)
    error_code: str | None = parsed.err if parsed else None
    network_error = pdu.tlvs.get(c.TAG_NETWORK_ERROR_CODE)
    if error_code is None and network_error is not None and len(network_error) == 3:
        # network_error_code is 1 octet network type + 2 octets code (§5.3.2.31).
        error_code = f"{int.from_bytes(network_error[1:], 'big'):03d}"
    if parsed is not None and tlv_id and normalize_message_id(parsed.message_id) != normalize_message_id(tlv_id):
        _log.warning("receipt TLV id %r and text id %r disagree; using the TLV", tlv_id, parsed.message_id)
    return InboundDeliver(
        is_receipt=True,
        receipted_message_id=message_id,
        state=state,
        error_code=error_code,
        source=pdu.source_addr,
        destination=pdu.destination_addr,
        text=text or None,
        raw=raw,
    )
