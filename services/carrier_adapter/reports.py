"""Where carriers' reports go: the carrier-reports topic, one record a report, durable on return.

Every carrier client reports through it (it is the `CarrierReports` sink: receipts and inbound
SMS), and so does the dispatcher (the correlation of each accepted submit's carrier ids): one
writer, made before both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from smsgw.events.envelope import encode, random_id, timestamp
from smsgw.telemetry import kafka_headers
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev


class ReportWriter:
    def __init__(self, producer: AIOKafkaProducer, topic: str, producer_name: str) -> None:
        self.producer = producer
        self.topic = topic
        self.producer_name = producer_name

    async def on_receipt(
        self, carrier: str, carrier_message_id: str, state: int, carrier_state: str = "", error: str = ""
    ) -> None:
        """A delivery report from a carrier (any kind), already mapped to a DeliveryState.

        `carrier_message_id` must be normalised the way the adapter normalised the submit's id.
        Carriers acknowledge the report to their peer only after this returns: it is durable then.
        """
        report = cp.CarrierReport(
            receipt_received=cp.ReceiptReceived(
                state=state,  # type: ignore[arg-type]  # enum values are ints
                carrier_state=carrier_state,
                carrier_error=error,
                done_at=timestamp(),
            )
        )
        await self.write(carrier, carrier_message_id, report, {})

    async def on_inbound(
        self,
        carrier: str,
        source: str,
        destination: str,
        text: str,
        parts: int = 1,
        *,
        concat_reference: int = 0,
        part_number: int = 0,
        total_parts: int = 0,
        media_urls: Sequence[str] = (),
    ) -> None:
        """A mobile-originated message (with ``media_urls`` for an MMS); durable once this returns.

        One part of a long SMS (``total_parts`` >= 2, ``part_number`` 1-based, the sender's
        ``concat_reference``) is written as it is, not held here: parts may reach different
        binds or replicas, and the SMSC forgets a part once we acknowledge it. Keyed by sender,
        every part meets the others in one partition, where receipt joins them.
        """
        report = cp.CarrierReport(
            inbound_received=cp.InboundReceived(
                to=destination,
                content=ev.MessageContent(text=text),
                parts=parts,
                concat_reference=concat_reference,
                part_number=part_number,
                total_parts=total_parts,
                media_urls=list(media_urls),
            )
        )
        setattr(report.inbound_received, "from", source)
        await self.write(carrier, f"mo/{source}", report, {})

    async def write(
        self, carrier: str, carrier_message_id: str, report: cp.CarrierReport, trace_context: Mapping[str, str]
    ) -> None:
        """Writes one report, keyed by carrier and carrier id (a receipt meets its correlation)."""
        report.report_id = report.report_id or random_id()
        report.carrier = carrier
        report.carrier_message_id = carrier_message_id
        report.received_at.CopyFrom(timestamp(datetime.now(UTC)))
        report.producer = self.producer_name
        report.trace_context.update(dict(trace_context))
        await self.producer.send_and_wait(
            self.topic,
            key=f"{carrier}/{carrier_message_id}".encode(),
            value=encode(report),
            headers=kafka_headers(dict(trace_context)),
        )
