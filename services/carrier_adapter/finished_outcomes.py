"""Commands whose outcome reached the log though their offset was never committed.

A dispatch command is committed after its outcome (CarrierAccepted, MessageFailed,
DispatchExpired) is written to the message's events. Killed between the two,
the adapter left a command that is done but not committed: whoever reads its partition next
would submit it to its carrier a second time (the duplicate `make chaos` measured after a kill -9
of carrier-adapter). So when a replica is given dispatch partitions, it first reads the recent
events of the same partitions of the message-events topic (both are keyed by message id and have
as many partitions, so a message's command and its events share a partition number) and
collects the commands that have an outcome there: each event the adapter writes names its
command (causation_id). Those commands are skipped like the ones the commit's metadata names.

The look-back is bounded in time (`lookback_seconds`, default 5 minutes): a command finished
longer ago than that before its partition was taken over is submitted again (the behaviour
without this scan: a duplicate, never a loss). What no scan can see is a submit the carrier took
whose outcome was never written (the process died with the answer in hand): that is the in-doubt
window the submit ledger covers (submit_ledger.py).

A CarrierAccepted is written together with the correlations of its carrier ids (Dispatcher.handle:
one round of acknowledged writes, not two in a row), so one may be in the log without the other
when the writer died. The look-up keeps the carrier ids of every CarrierAccepted it finds: the
replica that skips the command writes its correlations again (the same record, harmless twice),
and its receipts find their message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from aiokafka.structs import ConsumerRecord
from google.protobuf.message import DecodeError

from smsgw.events.envelope import decode_event
from smsgw.v1.carrier_pb2 import DispatchCommand

from .recent_records import Lookup

#: The events after which a command needs nothing more. Not MessageRerouted: the command for
#: the next carrier is published after it (Dispatcher._reroute), so a command whose reroute was
#: written but whose successor may not have been is handled again (it reroutes again, under the
#: same ids: the copies are dropped), never skipped, which could leave its message waiting forever.
FINISHING = frozenset({"carrier_accepted", "message_failed", "dispatch_expired"})

#: One partition's finished commands: command id -> the carrier ids its CarrierAccepted names
#: (empty for every other outcome).
Found = dict[str, tuple[str, ...]]


class FinishedOutcomes:
    def __init__(
        self,
        events_topic: str,
        *,
        lookback_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
        delay_topics: Sequence[str] = (),
    ) -> None:
        self.events_topic = events_topic
        self.lookback_seconds = lookback_seconds
        self.clock = clock
        #: Where deferred commands wait (deferral.py, every tier): a command whose successor is
        #: there is finished, whether or not its DispatchDeferred event was written (none: not looked at).
        self.delay_topics = tuple(delay_topics)

    def lookup(self, partitions: set[int]) -> tuple[Lookup, dict[int, Found]]:
        """The read of the last `lookback_seconds` of these events partitions (recent_records.py),
        and what it fills: per partition, the ids of the commands whose outcome is there, each
        with the carrier ids its CarrierAccepted names (none for another outcome)."""
        found: dict[int, Found] = {p: {} for p in partitions}

        def on_record(partition: int, record: ConsumerRecord) -> None:
            try:
                envelope = decode_event(record.value or b"")
            except DecodeError:
                return  # not an event (the services dead-letter it); names no command
            kind = envelope.WhichOneof("payload")
            if envelope.causation_id and kind in FINISHING:
                ids = tuple(envelope.carrier_accepted.carrier_message_ids) if kind == "carrier_accepted" else ()
                found[partition][envelope.causation_id] = ids

        since = int((self.clock() - self.lookback_seconds) * 1000)
        return Lookup(self.events_topic, set(partitions), on_record, since_ms=since), found

    def deferred(self, partitions: set[int], found: dict[int, Found]) -> list[Lookup]:
        """The reads of the last `lookback_seconds` of the delay topics' same partitions, adding to
        `found` the commands deferred from (`DispatchCommand.deferred_from`). The successor on the
        delay topic is the one fact a deferral needs: its command is finished even if the replica
        died before writing DispatchDeferred or committing, and handled again it could reach a
        carrier back meanwhile while the successor waits to do the same. Empty without delay topics."""

        def on_record(partition: int, record: ConsumerRecord) -> None:
            command = DispatchCommand()
            try:
                command.ParseFromString(record.value or b"")
            except DecodeError:
                return
            if command.deferred_from:
                found.setdefault(partition, {}).setdefault(command.deferred_from, ())

        since = int((self.clock() - self.lookback_seconds) * 1000)
        return [Lookup(topic, set(partitions), on_record, since_ms=since) for topic in self.delay_topics]
