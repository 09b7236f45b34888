"""The status lattice: which status may follow which.

Statuses only move up in rank, and a final status never changes. That single
rule is what makes late, duplicated or reordered carrier reports harmless.
"""

from __future__ import annotations

from smsgw.v1.message_pb2 import MessageStatus

QUEUED = MessageStatus.QUEUED
SCHEDULED = MessageStatus.SCHEDULED
SENDING = MessageStatus.SENDING
SENT = MessageStatus.SENT
DELIVERED = MessageStatus.DELIVERED
UNDELIVERED = MessageStatus.UNDELIVERED
FAILED = MessageStatus.FAILED
CANCELED = MessageStatus.CANCELED
EXPIRED = MessageStatus.EXPIRED
UNSPECIFIED = MessageStatus.MESSAGE_STATUS_UNSPECIFIED

FINAL_STATUSES = frozenset({DELIVERED, UNDELIVERED, FAILED, CANCELED, EXPIRED})

_RANK: dict[int, int] = {
    UNSPECIFIED: 0,
    QUEUED: 1,
    SCHEDULED: 2,
    SENDING: 3,
    SENT: 4,
}


def is_final(status: int) -> bool:
    return status in FINAL_STATUSES


def rank(status: int) -> int:
    return 10 if is_final(status) else _RANK[status]


def can_move(current: int, proposed: int) -> bool:
    """True when `proposed` is a step forward from `current`."""
    if is_final(current):
        return False
    return rank(proposed) > rank(current)


def status_name(status: int) -> str:
    return MessageStatus.Name(status)
