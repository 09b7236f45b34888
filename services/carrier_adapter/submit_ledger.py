"""The submit ledger: what a replica was doing with a command, recorded before it acts.

Without it, a replica that dies between the carrier's answer and the outcome's write leaves no
trace that the submit was made: whoever reads the command next submits it again without knowing
it is a retry (the duplicate `make chaos` measured after a kill -9 of carrier-adapter), neither
counted nor reported. So before each attempt the dispatcher records its intent on the ledger topic
and waits for the brokers' acknowledgement; an attempt that ends without a final answer is recorded
as ended (and whether it may have reached the carrier); a long message records the parts the carrier
has taken as they are taken. The final answer itself is the outcome in the message's events.

When a replica is given dispatch partitions it reads the recent entries of the same ledger
partitions (recent_records.py) and folds them per command into `Started`: a command whose last
attempt was intended and never ended was on its way to the carrier when its replica died. The
dispatcher then records that attempt as failed in doubt (reason ADAPTER_RESTARTED) and applies the
carrier's `in_doubt` policy: "retry" submits again (at least once: a copy is possible, counted by
`smsgw_carrier_restart_in_doubt_total` and in the message's history), "fail" ends the message with
SUBMIT_IN_DOUBT (at most once). A long message resumes after its recorded parts.

What is left: an intent is recorded before the first byte goes out, so a replica that died after
the intent and before the submit left a command reported in doubt that never reached the carrier
(a "retry" carrier then sends it once; a "fail" carrier fails a message it never had). No
protocol here offers a way to ask the carrier: SMPP's query_sm needs the id the lost answer held.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from google.protobuf.message import DecodeError

from smsgw.events.envelope import timestamp
from smsgw.v1 import carrier_pb2 as cp

from .recent_records import Lookup


@dataclass(frozen=True)
class Started:
    """What the ledger says of a command a replica had started."""

    attempt: int  # the last attempt recorded
    #: The attempt was intended and never ended: it may have reached the carrier.
    open: bool
    #: A long message's concatenation reference and the carrier's ids of the parts it has taken.
    reference: int = 0
    accepted_ids: tuple[str, ...] = ()

    def resume(self) -> tuple[int, tuple[str, ...]] | None:
        """Where a long message resumes: (reference, ids of the parts taken), or None."""
        return (self.reference, self.accepted_ids) if self.accepted_ids else None


def fold(started: Started | None, entry: cp.SubmitLedgerEntry) -> Started:
    """One more ledger entry of a command (entries of a command arrive in the order written)."""
    kind = entry.WhichOneof("entry")
    reference = started.reference if started else 0
    accepted = started.accepted_ids if started else ()
    if kind == "parts_accepted":
        parts = entry.parts_accepted
        return Started(entry.attempt, True, parts.reference, tuple(parts.carrier_message_ids))
    if kind == "attempt_ended":
        return Started(entry.attempt, False, reference, accepted)
    return Started(entry.attempt, True, reference, accepted)


class SubmitLedger:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        lookback_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.lookback_seconds = lookback_seconds
        self.clock = clock

    async def intended(self, command: cp.DispatchCommand, attempt: int) -> None:
        """Returns once the brokers have the intent: only then may the attempt go out."""
        await self._write(command, attempt, intended=cp.SubmitIntended())

    async def attempt_ended(self, command: cp.DispatchCommand, attempt: int, *, in_doubt: bool) -> None:
        await self._write(command, attempt, attempt_ended=cp.SubmitAttemptEnded(in_doubt=in_doubt))

    async def parts_accepted(
        self, command: cp.DispatchCommand, attempt: int, reference: int, carrier_ids: Sequence[str]
    ) -> None:
        """The parts of a long message the carrier has taken so far; returns once durable."""
        await self._write(
            command,
            attempt,
            parts_accepted=cp.PartsAccepted(reference=reference, carrier_message_ids=list(carrier_ids)),
        )

    async def _write(self, command: cp.DispatchCommand, attempt: int, **entry) -> None:
        record = cp.SubmitLedgerEntry(
            command_id=command.command_id,
            message_id=command.message_id,
            carrier=command.carrier,
            attempt=attempt,
            recorded_at=timestamp(),
            **entry,
        )
        await self.producer.send_and_wait(self.topic, key=command.message_id.encode(), value=record.SerializeToString())

    def lookup(self, partitions: set[int]) -> tuple[Lookup, dict[int, dict[str, Started]]]:
        """The read of the last `lookback_seconds` of these ledger partitions (recent_records.py),
        and what it fills: per partition, the commands with entries there and what they say."""
        found: dict[int, dict[str, Started]] = {p: {} for p in partitions}

        def on_record(partition: int, record: ConsumerRecord) -> None:
            entry = cp.SubmitLedgerEntry()
            try:
                entry.ParseFromString(record.value or b"")
            except DecodeError:
                return
            if entry.command_id:
                commands = found[partition]
                commands[entry.command_id] = fold(commands.get(entry.command_id), entry)

        since = int((self.clock() - self.lookback_seconds) * 1000)
        return Lookup(self.topic, set(partitions), on_record, since_ms=since), found
