"""PDU codec: round trips for every PDU, wire layout against the spec and against smpplib."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import smpplib.smpp

from smsgw.smpp import constants as c
from smsgw.smpp.pdu import (
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    PduError,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    UnknownPdu,
    decode_pdu,
    encode_pdu,
    tlv_cstr,
    tlv_int,
    tlv_str,
    tlv_u8,
    tlv_u16,
)

pytestmark = pytest.mark.timeout(60)

_SM_FIELDS: dict[str, Any] = dict(
    service_type="CMT",
    source_addr_ton=5,
    source_addr_npi=0,
    source_addr="SMSGW",
    dest_addr_ton=1,
    dest_addr_npi=1,
    destination_addr="447700900123",
    esm_class=0x40,
    protocol_id=0,
    priority_flag=1,
    schedule_delivery_time="",
    validity_period="000001000000000R",
    registered_delivery=1,
    replace_if_present_flag=0,
    data_coding=8,
    sm_default_msg_id=0,
    short_message=b"\x05\x00\x03\x2a\x02\x01" + "héllo 👋".encode("utf-16-be"),
)

ALL_PDUS: list[Pdu] = [
    BindTransmitter(system_id="smsgw", password="secret", system_type="GW", addr_ton=1, addr_npi=1, sequence_number=1),
    BindTransmitterResp(system_id="SMSC", sequence_number=1, tlvs={c.TAG_SC_INTERFACE_VERSION: tlv_u8(0x34)}),
    BindReceiver(system_id="smsgw", password="secret", address_range="^44", sequence_number=2),
    BindReceiverResp(system_id="SMSC", sequence_number=2),
    BindTransceiver(system_id="smsgw", password="12345678", sequence_number=0x7FFFFFFF),
    BindTransceiverResp(system_id="SMSC", sequence_number=0x7FFFFFFF),
    SubmitSm(sequence_number=10, **_SM_FIELDS),
    SubmitSm(
        sequence_number=11,
        source_addr="1",
        destination_addr="2",
        tlvs={
            c.TAG_SAR_MSG_REF_NUM: tlv_u16(0x1234),
            c.TAG_SAR_TOTAL_SEGMENTS: tlv_u8(3),
            c.TAG_SAR_SEGMENT_SEQNUM: tlv_u8(2),
            c.TAG_MESSAGE_PAYLOAD: b"x" * 1000,
        },
    ),
    SubmitSmResp(message_id="A0000001", sequence_number=10),
    SubmitSmResp(command_status=c.ESME_RTHROTTLED, sequence_number=12),
    DeliverSm(
        sequence_number=13,
        source_addr="447700900123",
        destination_addr="SMSGW",
        esm_class=c.ESM_CLASS_SMSC_DELIVERY_RECEIPT,
        short_message=b"id:1 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000 text:",
        tlvs={
            c.TAG_RECEIPTED_MESSAGE_ID: tlv_cstr("1"),
            c.TAG_MESSAGE_STATE: tlv_u8(2),
            c.TAG_NETWORK_ERROR_CODE: b"\x03\x00\x00",
        },
    ),
    DeliverSm(sequence_number=14, **_SM_FIELDS),
    DeliverSmResp(sequence_number=13),
    EnquireLink(sequence_number=20),
    EnquireLinkResp(sequence_number=20),
    Unbind(sequence_number=21),
    UnbindResp(sequence_number=21),
    GenericNack(command_status=c.ESME_RINVCMDID, sequence_number=22),
    UnknownPdu(command_id=c.DATA_SM, sequence_number=23, body=b"\x00\x01\x02"),
]


@pytest.mark.parametrize("pdu", ALL_PDUS, ids=lambda p: f"{type(p).__name__}-{p.sequence_number}")
def test_round_trip(pdu: Pdu) -> None:
    data = encode_pdu(pdu)
    assert struct.unpack(">I", data[:4])[0] == len(data)
    assert decode_pdu(data) == pdu


def test_header_only_pdus_are_16_octets() -> None:
    assert encode_pdu(EnquireLink(sequence_number=7)) == bytes.fromhex("00000010 00000015 00000000 00000007")
    assert encode_pdu(GenericNack(command_status=3, sequence_number=9)) == bytes.fromhex(
        "00000010 80000000 00000003 00000009"
    )


def test_submit_sm_wire_layout_matches_the_spec() -> None:
    pdu = SubmitSm(
        sequence_number=6, source_addr="123", destination_addr="456", registered_delivery=1, short_message=b"hi"
    )
    expected = bytes.fromhex(
        "00000029 00000004 00000000 00000006"  # header
        "00"  # service_type
        "00 00 31323300"  # source ton, npi, addr
        "00 00 34353600"  # dest ton, npi, addr
        "00 00 00"  # esm_class, protocol_id, priority_flag
        "00 00"  # schedule_delivery_time, validity_period
        "01 00 00 00"  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
        "02 6869"  # sm_length, short_message
    )
    assert encode_pdu(pdu) == expected


class _Client:
    """The bits of an smpplib client that its PDU factory touches."""

    sequence = 0
    allow_unknown_opt_params = True

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


def test_smpplib_reads_what_we_write() -> None:
    ours = SubmitSm(sequence_number=42, **_SM_FIELDS)
    theirs = smpplib.smpp.parse_pdu(encode_pdu(ours), client=_Client())
    assert theirs.command == "submit_sm"
    assert theirs.sequence == 42
    assert theirs.destination_addr == b"447700900123"
    assert theirs.source_addr == b"SMSGW"
    assert theirs.esm_class == 0x40
    assert theirs.data_coding == 8
    assert theirs.short_message == _SM_FIELDS["short_message"]


def test_we_read_what_smpplib_writes() -> None:
    theirs = smpplib.smpp.make_pdu(
        "deliver_sm",
        client=_Client(),
        source_addr="447700900123",
        destination_addr="SMSGW",
        esm_class=4,
        short_message=b"id:7 stat:DELIVRD",
        receipted_message_id="7",
        message_state=2,
    )
    ours = decode_pdu(theirs.generate())
    assert isinstance(ours, DeliverSm)
    assert ours.source_addr == "447700900123"
    assert ours.esm_class == 4
    assert ours.short_message == b"id:7 stat:DELIVRD"
    assert tlv_str(ours.tlvs[c.TAG_RECEIPTED_MESSAGE_ID]) == "7"
    assert tlv_int(ours.tlvs[c.TAG_MESSAGE_STATE]) == 2


def test_error_response_without_body_decodes() -> None:
    # §4.4.2: submit_sm_resp carries no message_id when command_status != 0.
    data = bytes.fromhex("00000010 80000004 00000058 00000003")
    pdu = decode_pdu(data)
    assert pdu == SubmitSmResp(command_status=c.ESME_RTHROTTLED, sequence_number=3, message_id="")


def test_message_id_without_nul_is_tolerated() -> None:
    data = bytes.fromhex("00000013 80000004 00000000 00000003") + b"abc"
    assert decode_pdu(data) == SubmitSmResp(message_id="abc", sequence_number=3)


def test_unknown_command_decodes_as_unknown_pdu() -> None:
    data = bytes.fromhex("00000011 00000103 00000000 00000004 00")
    pdu = decode_pdu(data)
    assert isinstance(pdu, UnknownPdu)
    assert (pdu.command_id, pdu.sequence_number, pdu.body) == (c.DATA_SM, 4, b"\x00")


@pytest.mark.parametrize(
    ("hex_data", "status"),
    [
        ("00000011 00000004 00000000 00000001", c.ESME_RINVCMDLEN),  # length says 17, 16 given
        ("00000014 00000004 00000000 00000001 00000000", c.ESME_RINVCMDLEN),  # submit_sm body cut short
        ("00000017 80000004 00000000 00000001 4100 0424 0005 41", c.ESME_RINVOPTPARSTREAM),  # TLV overruns
    ],
)
def test_malformed_pdus(hex_data: str, status: int) -> None:
    data = bytes.fromhex(hex_data)
    with pytest.raises(PduError) as info:
        decode_pdu(data)
    assert info.value.status == status
    assert info.value.header is not None and info.value.header.sequence_number == 1


def test_encode_rejects_fields_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        encode_pdu(SubmitSm(destination_addr="1" * 21))  # 21 digits + NUL > 21
    with pytest.raises(ValueError):
        encode_pdu(SubmitSm(short_message=b"x" * 255))
    with pytest.raises(ValueError):
        encode_pdu(BindTransceiver(password="123456789"))  # password max 8 chars + NUL


def test_response_factory_keeps_sequence() -> None:
    request = SubmitSm(sequence_number=99)
    resp = request.response(message_id="5")
    assert isinstance(resp, SubmitSmResp)
    assert (resp.sequence_number, resp.message_id, resp.command_status) == (99, "5", 0)
    nack = DeliverSm(sequence_number=3).response(c.ESME_RX_T_APPN)
    assert isinstance(nack, DeliverSmResp) and nack.command_status == c.ESME_RX_T_APPN
    with pytest.raises(TypeError):
        SubmitSmResp().response()


def test_payload_prefers_short_message_then_message_payload() -> None:
    assert SubmitSm(short_message=b"a", tlvs={c.TAG_MESSAGE_PAYLOAD: b"b"}).payload == b"a"
    assert SubmitSm(tlvs={c.TAG_MESSAGE_PAYLOAD: b"b"}).payload == b"b"


def test_status_names() -> None:
    assert c.status_name(0x58) == "ESME_RTHROTTLED"
    assert c.status_name(0x14) == "ESME_RMSGQFUL"
    assert c.status_name(0x0B) == "ESME_RINVDSTADR"
    assert c.status_name(0x400) == "ESME_0x00000400"
    assert {c.ESME_RTHROTTLED, c.ESME_RMSGQFUL} == c.BACKPRESSURE_STATUSES


def test_a_field_too_long_to_encode_is_named_but_its_value_is_not():
    # The bind's password is one of these fields, and the error is logged.
    with pytest.raises(ValueError, match="password") as refused:
        BindTransceiver(system_id="smsgw", password="pw9Zq4Lr7", sequence_number=1).encode()
    assert "pw9Zq4Lr7" not in str(refused.value)
