"""SMPP 3.4 numbers: command ids, command_status codes, TLV tags, field bits.

Plain module-level ints rather than enums: they travel on the wire and in logs
as numbers, carriers send codes outside the spec's table (0x400..0x4FF are
vendor-specific), and an enum would turn those into exceptions.

Reference: SMPP v3.4 specification, issue 1.2 (§5.1.2 command ids, §5.1.3
command_status, §5.3.2 TLV tags).
"""

from __future__ import annotations

SMPP_VERSION = 0x34

# --- command_id (§5.1.2) ------------------------------------------------------
# A response's id is its request's id with the top bit set.
RESPONSE_BIT = 0x80000000

GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_RECEIVER_RESP = 0x80000001
BIND_TRANSMITTER = 0x00000002
BIND_TRANSMITTER_RESP = 0x80000002
QUERY_SM = 0x00000003
QUERY_SM_RESP = 0x80000003
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
REPLACE_SM = 0x00000007
REPLACE_SM_RESP = 0x80000007
CANCEL_SM = 0x00000008
CANCEL_SM_RESP = 0x80000008
BIND_TRANSCEIVER = 0x00000009
BIND_TRANSCEIVER_RESP = 0x80000009
OUTBIND = 0x0000000B
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
SUBMIT_MULTI = 0x00000021
SUBMIT_MULTI_RESP = 0x80000021
ALERT_NOTIFICATION = 0x00000102
DATA_SM = 0x00000103
DATA_SM_RESP = 0x80000103


def is_response(command_id: int) -> bool:
    return bool(command_id & RESPONSE_BIT)


# --- command_status (§5.1.3) ----------------------------------------------------
ESME_ROK = 0x00000000
ESME_RINVMSGLEN = 0x00000001
ESME_RINVCMDLEN = 0x00000002
ESME_RINVCMDID = 0x00000003
ESME_RINVBNDSTS = 0x00000004
ESME_RALYBND = 0x00000005
ESME_RINVPRTFLG = 0x00000006
ESME_RINVREGDLVFLG = 0x00000007
ESME_RSYSERR = 0x00000008
ESME_RINVSRCADR = 0x0000000A
ESME_RINVDSTADR = 0x0000000B
ESME_RINVMSGID = 0x0000000C
ESME_RBINDFAIL = 0x0000000D
ESME_RINVPASWD = 0x0000000E
ESME_RINVSYSID = 0x0000000F
ESME_RCANCELFAIL = 0x00000011
ESME_RREPLACEFAIL = 0x00000013
ESME_RMSGQFUL = 0x00000014
ESME_RINVSERTYP = 0x00000015
ESME_RINVNUMDESTS = 0x00000033
ESME_RINVDLNAME = 0x00000034
ESME_RINVDESTFLAG = 0x00000040
ESME_RINVSUBREP = 0x00000042
ESME_RINVESMCLASS = 0x00000043
ESME_RCNTSUBDL = 0x00000044
ESME_RSUBMITFAIL = 0x00000045
ESME_RINVSRCTON = 0x00000048
ESME_RINVSRCNPI = 0x00000049
ESME_RINVDSTTON = 0x00000050
ESME_RINVDSTNPI = 0x00000051
ESME_RINVSYSTYP = 0x00000053
ESME_RINVREPFLAG = 0x00000054
ESME_RINVNUMMSGS = 0x00000055
ESME_RTHROTTLED = 0x00000058
ESME_RINVSCHED = 0x00000061
ESME_RINVEXPIRY = 0x00000062
ESME_RINVDFTMSGID = 0x00000063
ESME_RX_T_APPN = 0x00000064
ESME_RX_P_APPN = 0x00000065
ESME_RX_R_APPN = 0x00000066
ESME_RQUERYFAIL = 0x00000067
ESME_RINVOPTPARSTREAM = 0x000000C0
ESME_ROPTPARNOTALLWD = 0x000000C1
ESME_RINVPARLEN = 0x000000C2
ESME_RMISSINGOPTPARAM = 0x000000C3
ESME_RINVOPTPARAMVAL = 0x000000C4
ESME_RDELIVERYFAILURE = 0x000000FE
ESME_RUNKNOWNERR = 0x000000FF

#: Statuses that mean "the SMSC is fine, it wants us to slow down": the same PDU
#: is retried after a pause instead of being reported as a failed message.
BACKPRESSURE_STATUSES = frozenset({ESME_RTHROTTLED, ESME_RMSGQFUL})
#: Statuses that refuse this submit for a fault of the moment on the SMSC's side (a system
#: error, a temporary application error at the receiver): the message is tried again later,
#: as Kannel does, not failed. Every other refusal is the message's own and final.
TEMPORARY_STATUSES = frozenset({ESME_RSYSERR, ESME_RX_T_APPN})

_STATUS_NAMES: dict[int, str] = {
    value: name for name, value in list(globals().items()) if name.startswith("ESME_R") and isinstance(value, int)
}


def status_name(status: int) -> str:
    """'ESME_RTHROTTLED' for 0x58; 'ESME_0x00000400' for a code outside the spec (vendor range)."""
    return _STATUS_NAMES.get(status, f"ESME_0x{status:08X}")


# --- TLV tags (§5.3.2) ------------------------------------------------------------
TAG_DEST_ADDR_SUBUNIT = 0x0005
TAG_USER_MESSAGE_REFERENCE = 0x0204
TAG_SOURCE_PORT = 0x020A
TAG_DESTINATION_PORT = 0x020B
TAG_SAR_MSG_REF_NUM = 0x020C
TAG_SAR_TOTAL_SEGMENTS = 0x020E
TAG_SAR_SEGMENT_SEQNUM = 0x020F
TAG_SC_INTERFACE_VERSION = 0x0210
TAG_RECEIPTED_MESSAGE_ID = 0x001E
TAG_NETWORK_ERROR_CODE = 0x0423
TAG_MESSAGE_PAYLOAD = 0x0424
TAG_DELIVERY_FAILURE_REASON = 0x0425
TAG_MORE_MESSAGES_TO_SEND = 0x0426
TAG_MESSAGE_STATE = 0x0427

# --- esm_class bits (§5.2.12) -------------------------------------------------------
#: Bits 2..5 carry the message type on deliver_sm.
ESM_CLASS_TYPE_MASK = 0x3C
ESM_CLASS_SMSC_DELIVERY_RECEIPT = 0x04
ESM_CLASS_SME_DELIVERY_ACK = 0x08
ESM_CLASS_SME_MANUAL_ACK = 0x10
ESM_CLASS_CONVERSATION_ABORT = 0x18
ESM_CLASS_INTERMEDIATE_NOTIFICATION = 0x20
#: short_message starts with a user data header (concatenation IE, ports, ...).
ESM_CLASS_UDHI = 0x40

# --- registered_delivery (§5.2.17) ----------------------------------------------------
REGISTERED_DELIVERY_NONE = 0x00
#: Receipt on final outcome, success or failure.
REGISTERED_DELIVERY_RECEIPT = 0x01
REGISTERED_DELIVERY_FAILURE_ONLY = 0x02
REGISTERED_DELIVERY_RECEIPT_MASK = 0x03

# --- data_coding (§5.2.19) -------------------------------------------------------------
DATA_CODING_DEFAULT = 0x00  # SMSC default alphabet: GSM 03.38 on every SMSC we talk to
DATA_CODING_IA5 = 0x01
DATA_CODING_LATIN1 = 0x03
DATA_CODING_BINARY = 0x04
DATA_CODING_UCS2 = 0x08
