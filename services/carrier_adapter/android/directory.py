"""Which carrier-adapter replica holds which Android phone: presence records folded into a
directory, and the choice of a phone among this replica's and the others'.

Pure: no Kafka, no gRPC, no clock of its own (callers pass `now`, wall-clock seconds, as
presence records cross processes). The Kafka side is presence.py; the rules are in
docs/android-gateway.md, "Several carrier-adapter replicas".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from smsgw.v1 import device_relay_pb2 as dr

# A replica that has not refreshed a phone's record for this many refresh intervals is gone.
STALE_AFTER_INTERVALS = 3


def presence_key(account_id: str, device_id: str) -> str:
    """The record key of a phone on smsgw.device-presence.v1."""
    return f"{account_id}/{device_id}"


@dataclass(frozen=True)
class Presence:
    """One phone as its holding replica last described it."""

    account_id: str
    device_id: str
    carrier: str
    replica_id: str
    replica_address: str
    session_id: str
    connected: bool
    outstanding: int
    pending: frozenset[str]  # accepted by the phone, not yet reported: they stay with it
    connected_at: float  # when this session began (the newer session wins)
    seen_at: float
    expires_at: float  # a record not refreshed by then describes a replica that is gone

    @property
    def key(self) -> str:
        return presence_key(self.account_id, self.device_id)

    def reachable(self, now: float) -> bool:
        """The phone can be sent to through its replica: connected there, recently confirmed."""
        return self.connected and now < self.expires_at

    def newer_session_than(self, other: Presence) -> bool:
        return self.session_id != other.session_id and self.connected_at > other.connected_at


@dataclass(frozen=True)
class Tombstone:
    """The session ended and its phone holds nothing: the key is deleted."""

    account_id: str
    device_id: str
    session_id: str

    @property
    def key(self) -> str:
        return presence_key(self.account_id, self.device_id)


def _timestamp(seconds: float):
    stamp = dr.DevicePresence().seen_at
    stamp.FromDatetime(datetime.fromtimestamp(seconds, UTC))
    return stamp


def to_proto(presence: Presence) -> dr.DevicePresence:
    return dr.DevicePresence(
        account_id=presence.account_id,
        device_id=presence.device_id,
        carrier=presence.carrier,
        replica_id=presence.replica_id,
        replica_address=presence.replica_address,
        session_id=presence.session_id,
        connected=presence.connected,
        outstanding=presence.outstanding,
        pending_message_ids=sorted(presence.pending),
        connected_at=_timestamp(presence.connected_at),
        seen_at=_timestamp(presence.seen_at),
        expires_at=_timestamp(presence.expires_at),
    )


def from_proto(record: dr.DevicePresence) -> Presence:
    def seconds(stamp) -> float:
        return stamp.seconds + stamp.nanos / 1e9

    return Presence(
        account_id=record.account_id,
        device_id=record.device_id,
        carrier=record.carrier,
        replica_id=record.replica_id,
        replica_address=record.replica_address,
        session_id=record.session_id,
        connected=record.connected,
        outstanding=record.outstanding,
        pending=frozenset(record.pending_message_ids),
        connected_at=seconds(record.connected_at),
        seen_at=seconds(record.seen_at),
        expires_at=seconds(record.expires_at),
    )


class DeviceDirectory:
    """The last word on each phone, read from every replica's presence records.

    A record replaces the entry of its key unless that entry is a newer session (a late
    refresh or tombstone of a replaced stream must not undo the phone's move). Entries
    whose replica stopped refreshing stay, unreachable: their pending messages still
    belong to their phone.
    """

    def __init__(self) -> None:
        self._entries: dict[str, Presence] = {}
        self._holders: dict[tuple[str, str], str] = {}  # (account, message id) -> key of the phone holding it

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, record: Presence | Tombstone) -> bool:
        """Folds one record in; False when it was ignored as older than what is known."""
        current = self._entries.get(record.key)
        if isinstance(record, Tombstone):
            if current is None:
                return False
            if record.session_id and record.session_id != current.session_id:
                return False  # it ends a session that was already replaced
            self._forget(current)
            del self._entries[record.key]
            return True
        if current is not None and current.newer_session_than(record):
            return False
        if current is not None:
            self._forget(current)
        self._entries[record.key] = record
        for message_id in record.pending:
            self._holders[(record.account_id, message_id)] = record.key
        return True

    def _forget(self, entry: Presence) -> None:
        for message_id in entry.pending:
            if self._holders.get((entry.account_id, message_id)) == entry.key:
                del self._holders[(entry.account_id, message_id)]

    def get(self, account_id: str, device_id: str) -> Presence | None:
        return self._entries.get(presence_key(account_id, device_id))

    def holder_of(self, account_id: str, message_id: str) -> Presence | None:
        """The phone that accepted this message and has not reported it, reachable or not."""
        key = self._holders.get((account_id, message_id))
        return self._entries.get(key) if key is not None else None

    def reachable(self, account_id: str, now: float) -> list[Presence]:
        return [e for e in self._entries.values() if e.account_id == account_id and e.reachable(now)]


def record_after_change(
    *,
    connected_presence: Presence | None,
    account_id: str,
    device_id: str,
    last_published: Presence | None,
    pending: frozenset[str],
    outstanding: int,
    current: Presence | None,
    now: float,
) -> Presence | Tombstone | None:
    """What this replica writes when one of its phones changed.

    `connected_presence`: the phone's record while its stream here is open (None when it is
    not); `last_published`: what this replica last wrote for it; `current`: the directory's
    entry. A phone that left writes `connected=false` while it still holds accepted messages
    (they stay pinned to it), a tombstone once it holds none, and nothing at all when a newer
    session elsewhere already owns the key (a late record would only hide that session from
    readers after compaction).
    """
    if connected_presence is not None:
        return connected_presence
    if last_published is None:
        return None
    if (
        current is not None
        and current.replica_id != last_published.replica_id
        and current.newer_session_than(last_published)
    ):
        return None
    if pending:
        return replace(
            last_published, connected=False, pending=pending, outstanding=outstanding, seen_at=now, expires_at=now
        )
    return Tombstone(account_id, device_id, last_published.session_id)


@dataclass(frozen=True)
class Candidate:
    """A phone a message could go to: connected here (presence None) or through its replica."""

    device_id: str
    outstanding: int
    radio_down: bool = False
    last_dispatch: float = 0.0
    presence: Presence | None = None

    @property
    def remote(self) -> bool:
        return self.presence is not None


def pick_phone(candidates: list[Candidate]) -> Candidate | None:
    """The phone with the fewest messages outstanding; phones whose radio just failed last;
    on a tie a phone connected here (no relay hop), then the one used least recently."""
    if not candidates:
        return None
    return min(candidates, key=lambda c: (c.radio_down, c.outstanding, c.remote, c.last_dispatch))
