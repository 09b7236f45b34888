"""Read model of the inbound log: the opt-out list intake enforces, and the live feed of
WatchInbound. Rebuilt from smsgw.inbound-events.v1 at start.

No inbound message is kept: a stream that resumes from a cursor reads what it missed from the
log (inbound_history). What is kept is bounded: the opt-outs (one per number and sender that
said STOP), the position reached per partition, and the ids of the most recent events (a
retried append can put a copy of an event in the log, always close to the original).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from smsgw.domain.opt_out import OptOutList
from smsgw.v1 import events_pb2 as ev

from .subscriptions import DEFAULT_QUEUE_SIZE, Subscription, Watchers


@dataclass(frozen=True)
class InboundEntry:
    partition: int
    offset: int
    event: ev.EventEnvelope


#: Event ids remembered to drop copies of an event: a copy follows its original within a few
#: records (a producer retry), far fewer than this.
RECENT_IDS = 100_000


class InboundProjection:
    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE, recent_ids: int = RECENT_IDS) -> None:
        self.opt_outs = OptOutList()
        self.positions: dict[int, int] = {}
        self.received = 0  # inbound messages applied since start
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._recent_ids = recent_ids
        self._watchers: Watchers[InboundEntry] = Watchers(queue_size)

    def __len__(self) -> int:
        return self.received

    def apply_from_log(self, envelope: ev.EventEnvelope, partition: int, offset: int) -> None:
        self.positions[partition] = offset + 1
        if envelope.event_id in self._recent:
            return
        self._recent[envelope.event_id] = None
        if len(self._recent) > self._recent_ids:
            self._recent.popitem(last=False)
        self.opt_outs.apply(envelope)
        if envelope.WhichOneof("payload") != "inbound_message_received":
            return
        self.received += 1
        self._watchers.offer(envelope.account_id, InboundEntry(partition, offset, envelope))

    def watch(self, account_id: str) -> Subscription[InboundEntry]:
        return self._watchers.subscribe(account_id)

    def unwatch(self, account_id: str, subscription: Subscription[InboundEntry]) -> None:
        self._watchers.unsubscribe(account_id, subscription)
