"""SMPP 3.4 PDU codec: bytes <-> typed dataclasses, no I/O.

Every PDU is a 16-byte header (command_length, command_id, command_status,
sequence_number; big-endian u32 each) followed by a body of mandatory fields in
a fixed order and then optional TLVs. The bodies are described declaratively
(``_BODY``) so one encoder and one decoder serve every PDU type; the layouts are
transcribed from the spec (§4) and are the only place a field order lives.

Decoding is tolerant where real SMSCs deviate and the meaning is still clear
(a response with an error status and no body; a C-string longer than the spec's
maximum; a final C-string missing its NUL). Encoding is strict: we never put a
PDU on the wire that a strict peer could reject.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field
from typing import ClassVar, Literal, NamedTuple

from smsgw.smpp import constants as c

HEADER = struct.Struct(">IIII")
HEADER_LENGTH = HEADER.size

#: submit_sm carries at most 254 octets in short_message; longer bodies go in
#: message_payload (we split with UDH instead).
MAX_SHORT_MESSAGE = 254


class PduError(Exception):
    """A PDU that cannot be decoded or encoded.

    ``status`` is the command_status to answer the peer with (in a generic_nack
    when the command is unknown or the frame is broken). ``header`` is set when
    the header itself was readable, so the nack can carry its sequence number.
    """

    def __init__(self, message: str, status: int, header: Header | None = None):
        super().__init__(message)
        self.status = status
        self.header = header


class Header(NamedTuple):
    command_length: int
    command_id: int
    command_status: int
    sequence_number: int


def parse_header(data: bytes) -> Header:
    if len(data) < HEADER_LENGTH:
        raise PduError(f"header needs {HEADER_LENGTH} octets, got {len(data)}", c.ESME_RINVCMDLEN)
    return Header(*HEADER.unpack_from(data))


# A body field is (attribute name, kind, max octets). "cstr" max includes the
# NUL, as the spec counts it; "u8" is one octet; "sm" is sm_length + octets.
_Kind = Literal["cstr", "u8", "sm"]
_Field = tuple[str, _Kind, int]


@dataclass(kw_only=True)
class Pdu:
    """Base of every PDU. ``tlvs`` maps tag -> raw value, in wire order."""

    command_id: ClassVar[int]
    #: Mandatory body fields in wire order; empty for header-only PDUs.
    _BODY: ClassVar[tuple[_Field, ...]] = ()
    #: Response class for a request PDU (None for responses and generic_nack).
    _RESPONSE: ClassVar[type[Pdu] | None] = None

    command_status: int = c.ESME_ROK
    sequence_number: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)

    @property
    def is_response(self) -> bool:
        return c.is_response(self.command_id)

    def response(self, command_status: int = c.ESME_ROK, **fields: object) -> Pdu:
        """The matching *_resp for this request, same sequence number."""
        if self._RESPONSE is None:
            raise TypeError(f"{type(self).__name__} has no response PDU")
        return self._RESPONSE(command_status=command_status, sequence_number=self.sequence_number, **fields)  # type: ignore[arg-type]

    def encode(self) -> bytes:
        return encode_pdu(self)


# --- bind ---------------------------------------------------------------------


@dataclass(kw_only=True)
class _Bind(Pdu):
    _BODY = (
        ("system_id", "cstr", 16),
        ("password", "cstr", 9),
        ("system_type", "cstr", 13),
        ("interface_version", "u8", 1),
        ("addr_ton", "u8", 1),
        ("addr_npi", "u8", 1),
        ("address_range", "cstr", 41),
    )
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = c.SMPP_VERSION
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""


@dataclass(kw_only=True)
class _BindResp(Pdu):
    # sc_interface_version travels as a TLV (0x0210) when the SMSC sends it.
    _BODY = (("system_id", "cstr", 16),)
    system_id: str = ""


@dataclass(kw_only=True)
class BindTransmitterResp(_BindResp):
    command_id = c.BIND_TRANSMITTER_RESP


@dataclass(kw_only=True)
class BindReceiverResp(_BindResp):
    command_id = c.BIND_RECEIVER_RESP


@dataclass(kw_only=True)
class BindTransceiverResp(_BindResp):
    command_id = c.BIND_TRANSCEIVER_RESP


@dataclass(kw_only=True)
class BindTransmitter(_Bind):
    command_id = c.BIND_TRANSMITTER
    _RESPONSE = BindTransmitterResp


@dataclass(kw_only=True)
class BindReceiver(_Bind):
    command_id = c.BIND_RECEIVER
    _RESPONSE = BindReceiverResp


@dataclass(kw_only=True)
class BindTransceiver(_Bind):
    command_id = c.BIND_TRANSCEIVER
    _RESPONSE = BindTransceiverResp


# --- submit_sm / deliver_sm ---------------------------------------------------------


@dataclass(kw_only=True)
class _ShortMessage(Pdu):
    # submit_sm and deliver_sm share one layout (§4.4.1, §4.6.1); in deliver_sm
    # several fields are unused and must be NULL/0, which the defaults give.
    _BODY = (
        ("service_type", "cstr", 6),
        ("source_addr_ton", "u8", 1),
        ("source_addr_npi", "u8", 1),
        ("source_addr", "cstr", 21),
        ("dest_addr_ton", "u8", 1),
        ("dest_addr_npi", "u8", 1),
        ("destination_addr", "cstr", 21),
        ("esm_class", "u8", 1),
        ("protocol_id", "u8", 1),
        ("priority_flag", "u8", 1),
        ("schedule_delivery_time", "cstr", 17),
        ("validity_period", "cstr", 17),
        ("registered_delivery", "u8", 1),
        ("replace_if_present_flag", "u8", 1),
        ("data_coding", "u8", 1),
        ("sm_default_msg_id", "u8", 1),
        ("short_message", "sm", MAX_SHORT_MESSAGE),
    )
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""

    @property
    def payload(self) -> bytes:
        """The user data: short_message, or message_payload when the sender used the TLV instead."""
        if not self.short_message and c.TAG_MESSAGE_PAYLOAD in self.tlvs:
            return self.tlvs[c.TAG_MESSAGE_PAYLOAD]
        return self.short_message


@dataclass(kw_only=True)
class SubmitSmResp(Pdu):
    command_id = c.SUBMIT_SM_RESP
    _BODY = (("message_id", "cstr", 65),)
    message_id: str = ""


@dataclass(kw_only=True)
class DeliverSmResp(Pdu):
    command_id = c.DELIVER_SM_RESP
    # Always NULL per spec; kept so a non-conforming SMSC's value round-trips.
    _BODY = (("message_id", "cstr", 65),)
    message_id: str = ""


@dataclass(kw_only=True)
class SubmitSm(_ShortMessage):
    command_id = c.SUBMIT_SM
    _RESPONSE = SubmitSmResp


@dataclass(kw_only=True)
class DeliverSm(_ShortMessage):
    command_id = c.DELIVER_SM
    _RESPONSE = DeliverSmResp


# --- header-only PDUs ------------------------------------------------------------------


@dataclass(kw_only=True)
class EnquireLinkResp(Pdu):
    command_id = c.ENQUIRE_LINK_RESP


@dataclass(kw_only=True)
class EnquireLink(Pdu):
    command_id = c.ENQUIRE_LINK
    _RESPONSE = EnquireLinkResp


@dataclass(kw_only=True)
class UnbindResp(Pdu):
    command_id = c.UNBIND_RESP


@dataclass(kw_only=True)
class Unbind(Pdu):
    command_id = c.UNBIND
    _RESPONSE = UnbindResp


@dataclass(kw_only=True)
class GenericNack(Pdu):
    command_id = c.GENERIC_NACK


@dataclass(kw_only=True)
class UnknownPdu(Pdu):
    """A well-framed PDU whose command_id we do not implement (query_sm, data_sm, ...).

    Kept rather than rejected at decode time so the session can answer it with
    a generic_nack carrying the right sequence number.
    """

    command_id: int = 0  # type: ignore[misc]  # instance field here, ClassVar elsewhere
    body: bytes = b""


PDU_TYPES: dict[int, type[Pdu]] = {
    cls.command_id: cls
    for cls in (
        BindTransmitter,
        BindTransmitterResp,
        BindReceiver,
        BindReceiverResp,
        BindTransceiver,
        BindTransceiverResp,
        SubmitSm,
        SubmitSmResp,
        DeliverSm,
        DeliverSmResp,
        EnquireLink,
        EnquireLinkResp,
        Unbind,
        UnbindResp,
        GenericNack,
    )
}


# --- encoding ------------------------------------------------------------------------------


def _encode_cstr(name: str, value: str, limit: int) -> bytes:
    raw = value.encode("latin-1")
    if len(raw) + 1 > limit or b"\x00" in raw:
        # Not the value: the field may be the bind's password, and this error is logged.
        raise ValueError(f"{name} ({len(raw)} octets) does not fit a C-octet string of {limit} octets with its NUL")
    return raw + b"\x00"


def _encode_body(pdu: Pdu) -> bytes:
    out = bytearray()
    for name, kind, limit in pdu._BODY:  # noqa: SLF001 - the body layout of another PDU class of this module
        value = getattr(pdu, name)
        if kind == "cstr":
            out += _encode_cstr(name, value, limit)
        elif kind == "u8":
            out += struct.pack(">B", value)
        else:
            if len(value) > limit:
                raise ValueError(f"{name} is {len(value)} octets, more than {limit}; use message_payload")
            out += struct.pack(">B", len(value)) + value
    for tag, value in pdu.tlvs.items():
        out += struct.pack(">HH", tag, len(value)) + value
    return bytes(out)


def encode_pdu(pdu: Pdu) -> bytes:
    body = pdu.body if isinstance(pdu, UnknownPdu) else _encode_body(pdu)
    return HEADER.pack(HEADER_LENGTH + len(body), pdu.command_id, pdu.command_status, pdu.sequence_number) + body


# --- decoding ------------------------------------------------------------------------------


def _read_cstr(body: bytes, offset: int, header: Header) -> tuple[str, int]:
    end = body.find(b"\x00", offset)
    if end < 0:
        # Some SMSCs omit the NUL after the last field (often message_id in
        # submit_sm_resp). Taking the rest is unambiguous only if no TLVs could
        # follow, which the caller guarantees by only reaching here at the end.
        return body[offset:].decode("latin-1"), len(body)
    return body[offset:end].decode("latin-1"), end + 1


def _decode_tlvs(body: bytes, offset: int, header: Header) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    while offset < len(body):
        if offset + 4 > len(body):
            raise PduError("truncated TLV header", c.ESME_RINVOPTPARSTREAM, header)
        tag, length = struct.unpack_from(">HH", body, offset)
        offset += 4
        if offset + length > len(body):
            raise PduError(f"TLV 0x{tag:04X} claims {length} octets past the end", c.ESME_RINVOPTPARSTREAM, header)
        tlvs[tag] = body[offset : offset + length]
        offset += length
    return tlvs


def decode_pdu(data: bytes) -> Pdu:
    """One complete PDU (header included) -> its dataclass; UnknownPdu for unimplemented commands."""
    header = parse_header(data)
    if header.command_length != len(data):
        raise PduError(f"command_length {header.command_length} but {len(data)} octets", c.ESME_RINVCMDLEN, header)
    body = data[HEADER_LENGTH:]
    cls = PDU_TYPES.get(header.command_id)
    if cls is None:
        return UnknownPdu(
            command_id=header.command_id,
            command_status=header.command_status,
            sequence_number=header.sequence_number,
            body=body,
        )
    values: dict[str, object] = {}
    offset = 0
    for name, kind, _limit in cls._BODY:
        if offset >= len(body):
            # A response with an error status may carry no body at all (§4.4.2:
            # "not returned if command_status is non-zero"); keep the defaults.
            if cls._RESPONSE is None and (header.command_status != c.ESME_ROK or not body):
                break
            raise PduError(f"{cls.__name__} body ends before {name}", c.ESME_RINVCMDLEN, header)
        if kind == "cstr":
            values[name], offset = _read_cstr(body, offset, header)
        elif kind == "u8":
            values[name] = body[offset]
            offset += 1
        else:
            length = body[offset]
            offset += 1
            if offset + length > len(body):
                raise PduError(f"sm_length {length} runs past the body", c.ESME_RINVMSGLEN, header)
            values[name] = body[offset : offset + length]
            offset += length
    tlvs = _decode_tlvs(body, offset, header)
    return cls(command_status=header.command_status, sequence_number=header.sequence_number, tlvs=tlvs, **values)


def with_sequence(pdu: Pdu, sequence_number: int) -> Pdu:
    """A copy carrying a new sequence number (a retried PDU must not reuse the old one)."""
    return dataclasses.replace(pdu, sequence_number=sequence_number)


# --- TLV value helpers ------------------------------------------------------------------------


def tlv_u8(value: int) -> bytes:
    return struct.pack(">B", value)


def tlv_u16(value: int) -> bytes:
    return struct.pack(">H", value)


def tlv_cstr(value: str) -> bytes:
    return value.encode("latin-1") + b"\x00"


def tlv_int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def tlv_str(raw: bytes) -> str:
    """A C-octet-string TLV value; tolerates a missing NUL (some SMSCs send the bare id)."""
    return raw.split(b"\x00", 1)[0].decode("latin-1")
