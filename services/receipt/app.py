"""The receipt loop: carrier reports in, DeliveryReported and inbound events out, in batches.

A member of the receipt group on `smsgw.kafka.partitioned_loop`. Its state is keyed like the
reports, so a submit correlation and its receipts meet in one partition and one record:
- correlations, "<carrier>/<carrier message id>" -> message (plus receipts that came before
  their submit), decided by `correlation.py`;
- parts of long inbound SMS being joined, "<carrier>/mo/<sender>" -> parts so far
  (`mo_reassembly.py`).
Both are reloaded from their changelogs when the group gives this member a partition. Deadlines
(receipt timeout, orphan window, retention, parts that waited too long) are in time indexes the
loop looks at after every poll. This replaced a faust agent (docs/architecture.md).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka.structs import ConsumerRecord

from smsgw.deadlines import DeadlineIndex
from smsgw.domain.phone import masked
from smsgw.events.envelope import encode, new_event
from smsgw.events.topics import (
    CARRIER_REPORTS,
    INBOUND_EVENTS,
    MESSAGE_EVENTS,
    RECEIPT_CORRELATIONS_CHANGELOG,
    RECEIPT_MO_PARTS_CHANGELOG,
    RECEIPT_ORPHANS,
)
from smsgw.kafka.partitioned_loop import Batch, PartitionedLoop
from smsgw.kafka.predecessor import MemberFile
from smsgw.settings import ServiceSettings
from smsgw.telemetry import current_context_carrier, kafka_headers, next_hop_context, tracer
from smsgw.v1 import carrier_pb2 as cp

from .correlation import CorrelationRecord, Matched, ReceiptPolicies, due_at, on_report, on_tick
from .inbound import InboundOutcome, NumberDirectory, joined_report, on_inbound, part_of
from .mo_reassembly import Reassembled, SenderParts, add_part
from .mo_reassembly import due_at as parts_due_at
from .mo_reassembly import expire as expire_parts
from .receipt_counts import ReceiptCounts

log = logging.getLogger(__name__)
SERVICE = "receipt"
GROUP = "smsgw-receipt"
_tracer = tracer("smsgw.receipt")
ReplySender = Callable[[InboundOutcome], Awaitable[None]]
#: How long the parts of a long inbound SMS wait for the rest (from the latest part): Jasmin's 300 s.
DEFAULT_MO_REASSEMBLY_TIMEOUT = 300.0
Key = tuple[int, bytes]  # (partition, key)


class ReceiptWorker:
    """One member of the receipt group (as many as the reports topic has partitions, at most)."""

    def __init__(
        self,
        settings: ServiceSettings,
        directory: NumberDirectory | None = None,
        send_reply: ReplySender | None = None,
        policies: ReceiptPolicies | None = None,
        clock: Callable[[], float] = time.time,
        tick_interval: float = 1.0,
        mo_reassembly_timeout: float = DEFAULT_MO_REASSEMBLY_TIMEOUT,
        member_file: MemberFile | None = None,
    ) -> None:
        self.directory = directory or NumberDirectory()
        self.send_reply = send_reply
        self.policies = policies or ReceiptPolicies()
        self.clock = clock
        self.tick_interval = tick_interval
        self.mo_reassembly_timeout = mo_reassembly_timeout
        self.producer_name = f"receipt/{settings.instance_id}"
        self.events_topic = settings.topic(MESSAGE_EVENTS)
        self.inbound_topic = settings.topic(INBOUND_EVENTS)
        self.orphans_topic = settings.topic(RECEIPT_ORPHANS)
        self.correlations_changelog = settings.topic(RECEIPT_CORRELATIONS_CHANGELOG)
        self.parts_changelog = settings.topic(RECEIPT_MO_PARTS_CHANGELOG)
        self.changelogs: tuple[str, ...] = (self.correlations_changelog, self.parts_changelog)
        #: Per owned partition: carrier key -> correlation record; "<carrier>/mo/<sender>" -> parts.
        self.correlations: dict[int, dict[bytes, CorrelationRecord]] = {}
        self.parts: dict[int, dict[bytes, SenderParts]] = {}
        # When each record next needs a look (so the tick never decodes the whole state).
        self.correlation_deadlines = DeadlineIndex[Key]()
        self.parts_deadlines = DeadlineIndex[Key]()
        self.loop = PartitionedLoop(
            settings,
            GROUP,
            settings.topic(CARRIER_REPORTS),
            self,
            tick_interval=min(tick_interval, 0.25),
            member_file=member_file,
        )
        self.ready = self.loop.ready
        self._next_tick = 0.0
        self.counts = ReceiptCounts()

    async def run(self, stop) -> None:
        await self.loop.run(stop)

    def correlation(self, key: bytes) -> CorrelationRecord | None:
        """The correlation kept for a carrier key in whichever owned partition (tests, diagnostics)."""
        for records in self.correlations.values():
            if key in records:
                return records[key]
        return None

    # -- deciding (pure: correlation.py, inbound.py, mo_reassembly.py) --------------------------

    def on_record(self, partition: int, record: ConsumerRecord, batch: Batch) -> None:
        if record.value is None or record.key is None:
            return
        key = record.key
        report = cp.CarrierReport()
        report.ParseFromString(record.value)
        now = self.clock()
        if report.WhichOneof("report") == "inbound_received":
            part = part_of(report)
            if part is None:
                self._inbound(report, batch)
            else:
                state, whole = add_part(self.parts[partition].get(key) or SenderParts(), part, now)
                self._reassembled(key, whole, batch)
                self._store_parts(partition, key, state, batch)
            return
        current = self.correlations[partition].get(key) or CorrelationRecord()
        changed, matched = on_report(current, report, now)
        self._matched(matched, batch)
        if changed.correlation is None and changed.pending:
            text_key = key.decode(errors="replace")
            self.counts.held_early[self.counts.carrier_of(text_key)] += 1
            # Debug, not info: with an SMSC that answers at once it is most receipts (a log line
            # each was 4 % of receipt's CPU at 800/s); smsgw_receipts_held_early_total counts them.
            log.debug("receipt for %s arrived before its submit; holding it", text_key)
        self._store_correlation(partition, key, changed, batch)

    def on_tick(self, batch: Batch) -> None:
        now = self.clock()
        if now < self._next_tick:
            return
        self._next_tick = now + self.tick_interval
        for partition, key in self.correlation_deadlines.pop_due(now):
            record = self.correlations.get(partition, {}).get(key)
            if record is None:
                continue  # the partition went to another member
            if not self.loop.caught_up(partition):
                # After a restart a receipt held before the crash must meet its submit, still in
                # the backlog, before it can be called an orphan (or a timeout): the backlog first.
                self.correlation_deadlines.set((partition, key), now + self.tick_interval)
                continue
            text_key = key.decode(errors="replace")
            outcome = on_tick(record, text_key, self.policies.of(text_key.partition("/")[0]), now)
            self._matched(outcome.matched, batch)
            for orphan in outcome.orphans:
                self.counts.orphaned[self.counts.carrier_of(text_key)] += 1
                log.warning("orphaned receipt %s for %s: no message matched it", orphan.report_id, text_key)
                batch.publish(self.orphans_topic, key, encode(orphan))
            self._store_correlation(partition, key, outcome.record, batch)
        for partition, key in self.parts_deadlines.pop_due(now):
            parts = self.parts.get(partition, {}).get(key)
            if parts is None:
                continue
            if not self.loop.caught_up(partition):
                # Parts still in the backlog after a restart join their message first.
                self.parts_deadlines.set((partition, key), now + self.tick_interval)
                continue
            state, timed_out = expire_parts(parts, now, self.mo_reassembly_timeout)
            self._reassembled(key, timed_out, batch)
            self._store_parts(partition, key, state, batch)

    def _matched(self, matched: list[Matched], batch: Batch) -> None:
        for match in matched:
            fields = match.envelope_fields
            trace_context = next_hop_context(_tracer, "receipt.matched", fields["message_id"], fields["trace_context"])
            envelope = new_event(
                match.payload,
                service=SERVICE,
                producer=self.producer_name,
                message_id=fields["message_id"],
                account_id=fields["account_id"],
                sequence=fields["sequence"],
                event_id=fields["event_id"],
                causation_id=fields["causation_id"],
                trace_context=trace_context,
            )
            batch.publish(
                self.events_topic, fields["message_id"].encode(), encode(envelope), kafka_headers(trace_context)
            )

    def _inbound(self, report: cp.CarrierReport, batch: Batch, missing_parts: tuple[int, ...] = ()) -> None:
        outcome = on_inbound(report, self.directory, missing_parts)
        trace_context = current_context_carrier()
        for payload, event_id in outcome.events:
            envelope = new_event(
                payload,
                service=SERVICE,
                producer=self.producer_name,
                message_id=outcome.inbound_id,
                account_id=outcome.account_id,
                sequence=1,
                event_id=event_id,
                causation_id=report.report_id,
                trace_context=trace_context,
            )
            batch.publish(
                self.inbound_topic, outcome.partition_key.encode(), encode(envelope), kafka_headers(trace_context)
            )
        if outcome.help_reply and self.send_reply is not None:
            # After the inbound message is on the log (the reply's idempotency key is derived
            # from it, so a batch read again after a crash replies once).
            send_reply = self.send_reply
            batch.then.append(lambda: send_reply(outcome))

    def _reassembled(self, key: bytes, messages: list[Reassembled], batch: Batch) -> None:
        carrier, _, subscriber = key.decode(errors="replace").partition("/mo/")
        for message in messages:
            if message.missing:
                log.warning(
                    "long SMS from %s (reference %d) incomplete after %.0fs: parts %s of %d never came",
                    masked(subscriber),
                    message.reference,
                    self.mo_reassembly_timeout,
                    list(message.missing),
                    message.total,
                )
            self._inbound(joined_report(carrier, subscriber, message), batch, message.missing)

    # -- state (changed in memory at once; the loop writes the changelogs after the records) ----

    def _store_correlation(self, partition: int, key: bytes, record: CorrelationRecord | None, batch: Batch) -> None:
        records = self.correlations[partition]
        if record is None:
            if records.pop(key, None) is None:
                return
            batch.change(self.correlations_changelog, partition, key, None)
        else:
            records[key] = record
            batch.change(self.correlations_changelog, partition, key, json.dumps(record.to_json()).encode())
        self.correlation_deadlines.set((partition, key), due_at(record, self._policy(key)))

    def _store_parts(self, partition: int, key: bytes, state: SenderParts | None, batch: Batch) -> None:
        parts = self.parts[partition]
        if state is None:
            if parts.pop(key, None) is None:
                return
            batch.change(self.parts_changelog, partition, key, None)
        else:
            parts[key] = state
            batch.change(self.parts_changelog, partition, key, json.dumps(state.to_json()).encode())
        self.parts_deadlines.set((partition, key), parts_due_at(state, self.mo_reassembly_timeout))

    def _policy(self, key: bytes):
        return self.policies.of(key.decode(errors="replace").partition("/")[0])  # "<carrier>/<id>"

    # -- partitions moving (called by the loop) -------------------------------------------------

    def loaded(self, partition: int, state: dict[str, dict[bytes, bytes]]) -> None:
        correlations = {
            key: CorrelationRecord.from_json(json.loads(value))
            for key, value in state[self.correlations_changelog].items()
            if value
        }
        parts = {
            key: SenderParts.from_json(json.loads(value)) for key, value in state[self.parts_changelog].items() if value
        }
        self.correlations[partition] = correlations
        self.parts[partition] = parts
        for key, record in correlations.items():
            self.correlation_deadlines.set((partition, key), due_at(record, self._policy(key)))
        for key, held in parts.items():
            self.parts_deadlines.set((partition, key), parts_due_at(held, self.mo_reassembly_timeout))

    def revoked(self, partition: int) -> None:
        for key in self.correlations.pop(partition, {}):
            self.correlation_deadlines.set((partition, key), None)
        for key in self.parts.pop(partition, {}):
            self.parts_deadlines.set((partition, key), None)
