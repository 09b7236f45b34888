"""Read model of the inbound log: the opt-out list intake enforces, and the
journal behind WatchInbound. Rebuilt from smsgw.inbound-events.v1 at start."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from smsgw.domain.opt_out import OptOutList
from smsgw.v1 import events_pb2 as ev


@dataclass(frozen=True)
class InboundEntry:
    partition: int
    offset: int
    event: ev.EventEnvelope


class InboundProjection:
    def __init__(self) -> None:
        self.opt_outs = OptOutList()
        self.positions: dict[int, int] = {}
        self._journal: dict[str, list[InboundEntry]] = {}
        self._seen: set[str] = set()
        self._watchers: dict[str, set[asyncio.Queue]] = {}

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
        for queue in self._watchers.get(envelope.account_id, ()):
            queue.put_nowait(entry)

    def journal(self, account_id: str) -> list[InboundEntry]:
        return list(self._journal.get(account_id, ()))

    def watch(self, account_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._watchers.setdefault(account_id, set()).add(queue)
        return queue

    def unwatch(self, account_id: str, queue: asyncio.Queue) -> None:
        self._watchers.get(account_id, set()).discard(queue)
