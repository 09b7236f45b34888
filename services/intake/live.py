"""What intake knows of messages beyond the store: its own appends until the projector has
them, the messages waiting in QUEUED (those this replica projects), and who is watching what.

The message store (SQLite or PostgreSQL, fed by the projector, the one reader of the events
topic in intake) answers for every message. This holds only what the store cannot say yet or
cannot push: so its size is bounded by this replica's recent appends, the QUEUED backlog and
its open streams, not by the number of messages the platform ever carried.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from smsgw.deadlines import DeadlineIndex
from smsgw.domain import status as st
from smsgw.domain.message_state import MessageState, apply
from smsgw.projections.follower import Interest
from smsgw.projections.store import LoggedEvent
from smsgw.v1 import events_pb2 as ev

from .subscriptions import DEFAULT_QUEUE_SIZE, Subscription, Watchers

#: This replica's appends kept until the projector commits them (read-your-writes across the gap).
DEFAULT_OWN_CAPACITY = 20_000


class LiveMessages:
    def __init__(self, *, own_capacity: int = DEFAULT_OWN_CAPACITY, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._own: OrderedDict[str, MessageState] = OrderedDict()
        self._own_capacity = own_capacity
        self._watchers: Watchers[tuple[ev.EventEnvelope, MessageState]] = Watchers(queue_size)
        self._account_watchers: Watchers[LoggedEvent] = Watchers(queue_size)
        #: Messages in QUEUED by when they last changed (epoch s): what the redriver looks at.
        self.queued_since = DeadlineIndex[str]()
        #: Called with each committed event this replica did not append itself (other replicas'
        #: work, and everything read at start): what the sending limits count.
        self.on_committed_elsewhere: Callable[[LoggedEvent], None] | None = None
        #: Called after each change of the QUEUED index, with whether a message left it (the
        #: backlog gate looks at its size and at how fast routing takes messages from it).
        self.on_queued_changed: Callable[[bool], None] | None = None
        self.producer_name = ""

    # -- this replica's appends ----------------------------------------------------------
    def apply_own(self, envelope: ev.EventEnvelope, current: MessageState | None) -> MessageState:
        """Folds an event this replica just appended onto the message's `current` state."""
        after = apply(current, envelope)
        if current is not None and after.version == current.version:
            return current  # a copy of an event already applied
        self._own[envelope.message_id] = after
        self._own.move_to_end(envelope.message_id)
        while len(self._own) > self._own_capacity:
            self._own.popitem(last=False)  # the store has it by now, or will shortly
        self._index(after)
        self._watchers.offer(envelope.message_id, (envelope, after))
        return after

    def own(self, message_id: str) -> MessageState | None:
        return self._own.get(message_id)

    def __len__(self) -> int:
        return len(self._own)

    # -- the projector's commits ---------------------------------------------------------
    def on_committed(self, notice: LoggedEvent) -> None:
        """The projector's listener (it writes every partition): an event is in the store now."""
        self.on_written(notice)
        self.on_told(notice)

    def on_written(self, notice: LoggedEvent) -> None:
        """This replica's projector wrote the event: the QUEUED index of the messages it projects."""
        self._index(notice.state)

    def on_told(self, notice: LoggedEvent) -> None:
        """An event the store holds now, as this replica hears of them (from its projector, or
        from the store follower when the replicas share the store: then only the events of what
        is watched here and every message's first, `interest`)."""
        state = notice.state
        own = self._own.get(state.message_id)
        if own is not None and own.version <= state.version:
            del self._own[state.message_id]
        if notice.envelope.producer != self.producer_name and self.on_committed_elsewhere is not None:
            self.on_committed_elsewhere(notice)
        self._watchers.offer(state.message_id, (notice.envelope, state))
        self._account_watchers.offer(state.account_id, notice)

    def interest(self) -> Interest:
        """What this replica must hear of beyond every message's first event (which the sending
        limits count): the accounts and messages watched here now."""
        return Interest(accounts=self._account_watchers.keys(), message_ids=self._watchers.keys())

    def _index(self, state: MessageState) -> None:
        at = state.updated_at.timestamp() if state.status == st.QUEUED and state.updated_at is not None else None
        left = at is None and state.message_id in self.queued_since
        self.queued_since.set(state.message_id, at)
        if self.on_queued_changed is not None:
            self.on_queued_changed(left)

    # -- watchers ------------------------------------------------------------------------
    def watch(self, message_id: str) -> Subscription[tuple[ev.EventEnvelope, MessageState]]:
        return self._watchers.subscribe(message_id)

    def unwatch(self, message_id: str, subscription: Subscription) -> None:
        self._watchers.unsubscribe(message_id, subscription)

    def watch_account(
        self, account_id: str, wants: Callable[[LoggedEvent], bool] | None = None
    ) -> Subscription[LoggedEvent]:
        return self._account_watchers.subscribe(account_id, wants)

    def unwatch_account(self, account_id: str, subscription: Subscription) -> None:
        self._account_watchers.unsubscribe(account_id, subscription)

    def watcher_count(self) -> int:
        return self._watchers.count() + self._account_watchers.count()
