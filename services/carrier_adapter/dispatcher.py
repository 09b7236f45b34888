"""Takes dispatch commands off the topic and hands them to carriers.

At least once: offsets are committed only after every command of a batch has
a recorded outcome (CarrierAccepted or MessageFailed). A carrier that is down
blocks its commands (they wait and retry) instead of failing or dropping them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError

from smsgw.events.envelope import derived_id, encode, new_event, timestamp
from smsgw.telemetry import context_from, kafka_headers, tracer
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev


log = logging.getLogger(__name__)
SERVICE = "carrier-adapter"
_tracer = tracer("smsgw.carrier_adapter")


class CarrierUnavailable(Exception):
    """The carrier cannot take the message right now; retry later, nothing is lost."""


@dataclass(frozen=True)
class SubmitResult:
    """A carrier's final answer to one message: accepted with ids, or refused for good."""

    carrier_ids: tuple[str, ...] = ()       # normalised, one per part, when accepted
    failure: ev.MessageFailed | None = None  # set when refused; built by the carrier (its own codes)

    @property
    def accepted(self) -> bool:
        return self.failure is None


class CarrierClient(Protocol):
    """What the dispatcher needs of a carrier, whatever its kind (SMPP, HTTP provider, Android phones)."""

    name: str

    async def submit(self, command: cp.DispatchCommand) -> SubmitResult:
        """Hands the message to the carrier. Raises CarrierUnavailable when it cannot answer now
        (the dispatcher retries with backoff; the message is never dropped)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class CarrierReports(Protocol):
    """Where a carrier hands what its peer tells it (implemented by Dispatcher)."""

    async def on_receipt(self, carrier: str, carrier_message_id: str, state: int, carrier_state: str = "",
                         error: str = "") -> None: ...

    async def on_inbound(self, carrier: str, source: str, destination: str, text: str, parts: int = 1) -> None: ...


class Dispatcher:
    def __init__(self, *, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, events_topic: str,
                 reports_topic: str, carriers: dict[str, CarrierClient], producer_name: str,
                 retry_min: float = 0.2, retry_max: float = 5.0):
        self.consumer = consumer
        self.producer = producer
        self.events_topic = events_topic
        self.reports_topic = reports_topic
        self.carriers = carriers
        self.producer_name = producer_name
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.assigned = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batches = await self.consumer.getmany(timeout_ms=100, max_records=500)
            if self.consumer.assignment():
                self.assigned.set()
            if not batches:
                continue
            commands = []
            for records in batches.values():
                for record in records:
                    command = cp.DispatchCommand()
                    command.ParseFromString(record.value)
                    commands.append(command)
            # A failure here propagates: the process exits, and the uncommitted batch is redelivered.
            await asyncio.gather(*(self.handle(c, stop) for c in commands))
            await self._commit({tp: records[-1].offset + 1 for tp, records in batches.items()})

    async def _commit(self, offsets) -> None:
        """Commits exactly what was handled. A commit refused because the group rebalanced meanwhile
        is not fatal: the batch is redelivered to the partition's new owner (a duplicate, never a loss)."""
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            log.warning("offsets %s not committed (%s); the new owner will redeliver them", offsets, exc)

    async def handle(self, command: cp.DispatchCommand, stop: asyncio.Event) -> None:
        with _tracer.start_as_current_span(
            "carrier_adapter.dispatch", context=context_from(command.trace_context),
            attributes={"smsgw.message_id": command.message_id, "smsgw.carrier": command.carrier},
        ):
            await self._emit(command, ev.MessageSubmitted(carrier=command.carrier, attempt=1, segments=command.segments),
                             "submitted", command.sequence + 1)
            client = self.carriers.get(command.carrier)
            if client is None:
                await self._emit(command, ev.MessageFailed(
                    carrier=command.carrier, error_code=500, reason="UNKNOWN_CARRIER",
                    message=f"no carrier named {command.carrier!r} is configured on this adapter"),
                    "outcome", command.sequence + 2)
                return
            delay = self.retry_min
            while True:
                try:
                    result = await client.submit(command)
                    break
                except CarrierUnavailable as exc:
                    if stop.is_set():
                        raise
                    log.warning("carrier %s unavailable (%s); retrying %s in %.1fs",
                                command.carrier, exc, command.message_id, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max)
            if result.accepted:
                normalized = list(result.carrier_ids)
                # Correlations first: a receipt that overtakes CarrierAccepted still finds its message.
                await asyncio.gather(*(
                    self._report(command.carrier, cid, cp.CarrierReport(submit_correlated=cp.SubmitCorrelated(
                        message_id=command.message_id, account_id=command.account_id, part_index=index,
                        total_parts=len(normalized), sequence=command.sequence + 2)), command.trace_context)
                    for index, cid in enumerate(normalized)
                ))
                await self._emit(command, ev.CarrierAccepted(
                    carrier=command.carrier, carrier_message_ids=normalized, segments=len(normalized)),
                    "outcome", command.sequence + 2)
            else:
                await self._emit(command, result.failure, "outcome", command.sequence + 2)

    async def on_receipt(self, carrier: str, carrier_message_id: str, state: int, carrier_state: str = "",
                         error: str = "") -> None:
        """A delivery report from a carrier (any kind), already mapped to a DeliveryState.

        `carrier_message_id` must be normalised the way the adapter normalised the submit's id.
        Carriers acknowledge the report to their peer only after this returns: it is durable then.
        """
        report = cp.CarrierReport(receipt_received=cp.ReceiptReceived(
            state=state, carrier_state=carrier_state, carrier_error=error, done_at=timestamp()))
        await self._report(carrier, carrier_message_id, report, {})

    async def on_inbound(self, carrier: str, source: str, destination: str, text: str, parts: int = 1) -> None:
        """A mobile-originated message; durable once this returns."""
        report = cp.CarrierReport(inbound_received=cp.InboundReceived(
            to=destination, content=ev.MessageContent(text=text), parts=parts))
        setattr(report.inbound_received, "from", source)
        await self._report(carrier, f"mo/{source}", report, {})

    async def _emit(self, command: cp.DispatchCommand, payload, kind: str, sequence: int) -> None:
        envelope = new_event(
            payload, service=SERVICE, producer=self.producer_name, message_id=command.message_id,
            account_id=command.account_id, sequence=sequence, event_id=derived_id(command.command_id, kind),
            causation_id=command.command_id, trace_context=dict(command.trace_context),
        )
        await self.producer.send_and_wait(self.events_topic, key=command.message_id.encode(), value=encode(envelope),
                                          headers=kafka_headers(dict(command.trace_context)))

    async def _report(self, carrier: str, carrier_message_id: str, report: cp.CarrierReport,
                      trace_context) -> None:
        report.report_id = report.report_id or str(uuid.uuid4())
        report.carrier = carrier
        report.carrier_message_id = carrier_message_id
        report.received_at.CopyFrom(timestamp(datetime.now(timezone.utc)))
        report.producer = self.producer_name
        report.trace_context.update(dict(trace_context))
        await self.producer.send_and_wait(self.reports_topic, key=f"{carrier}/{carrier_message_id}".encode(),
                                          value=encode(report), headers=kafka_headers(dict(trace_context)))
