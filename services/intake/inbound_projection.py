"""Read model of the inbound log: the opt-out list intake enforces, and the
journal behind WatchInbound. Rebuilt from smsgw.inbound-events.v1 at start."""

from __future__ import annotations

from dataclasses import dataclass

from smsgw.domain.opt_out import OptOutList
from smsgw.v1 import events_pb2 as ev

from .subscriptions import DEFAULT_QUEUE_SIZE, Subscription, Watchers


@dataclass(frozen=True)
class InboundEntry:
    partition: int
    offset: int
    event: ev.EventEnvelope


class InboundProjection:
    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.opt_outs = OptOutList()
        self.positions: dict[int, int] = {}
        self._journal: dict[str, list[InboundEntry]] = {}
        self._seen: set[str] = set()
        self._watchers: Watchers[InboundEntry] = Watchers(queue_size)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._journal.values())

    def apply_from_log(self, envelope: ev.EventEnvelope, partition: int, offset: int) -> None:
        self.positions[partition] = offset + 1
        if envelope.event_id in self._seen:
            return
        self._seen.add(envelope.event_id)
        self.opt_outs.apply(envelope)
        if envelope.WhichOneof("payload") != "inbound_message_received":
            return
        entry = InboundEntry(partition, offset, envelope)
        self._journal.setdefault(envelope.account_id, []).append(entry)
        self._watchers.offer(envelope.account_id, entry)

    def journal(self, account_id: str) -> list[InboundEntry]:
        return list(self._journal.get(account_id, ()))

    def watch(self, account_id: str) -> Subscription[InboundEntry]:
        return self._watchers.subscribe(account_id)

    def unwatch(self, account_id: str, subscription: Subscription[InboundEntry]) -> None:
        self._watchers.unsubscribe(account_id, subscription)
