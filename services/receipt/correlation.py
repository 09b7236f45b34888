"""Matching carrier receipts to messages (pure).

Records arrive keyed by "<carrier>/<carrier message id>", so a submit
correlation and its receipts share a partition and one record here. A receipt
may come first (the SMSC answered faster than we recorded the submit): it waits
in `pending` until the correlation arrives, then both are matched.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from smsgw.events.envelope import derived_id
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev


@dataclass(frozen=True)
class Correlation:
    message_id: str
    account_id: str
    part_index: int
    total_parts: int
    sequence: int
    trace_context: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CorrelationRecord:
    correlation: Correlation | None = None
    pending: tuple[bytes, ...] = ()   # serialized CarrierReports waiting for their correlation

    def to_json(self) -> dict:
        return {
            "correlation": None if self.correlation is None else self.correlation.__dict__,
            "pending": [p.hex() for p in self.pending],
        }

    @classmethod
    def from_json(cls, data: dict | None) -> "CorrelationRecord":
        if not data:
            return cls()
        c = data.get("correlation")
        return cls(correlation=Correlation(**c) if c else None,
                   pending=tuple(bytes.fromhex(p) for p in data.get("pending", ())))


@dataclass(frozen=True)
class Matched:
    """A DeliveryReported to append to the message's log."""

    envelope_fields: dict
    payload: ev.DeliveryReported


def on_report(record: CorrelationRecord, report: cp.CarrierReport) -> tuple[CorrelationRecord, list[Matched]]:
    kind = report.WhichOneof("report")
    if kind == "submit_correlated":
        sc = report.submit_correlated
        correlation = Correlation(
            message_id=sc.message_id, account_id=sc.account_id, part_index=sc.part_index,
            total_parts=sc.total_parts, sequence=sc.sequence, trace_context=dict(report.trace_context),
        )
        waiting = [_parse(p) for p in record.pending]
        return CorrelationRecord(correlation=correlation), [_match(correlation, r) for r in waiting]
    if kind == "receipt_received":
        if record.correlation is None:
            return replace(record, pending=record.pending + (report.SerializeToString(),)), []
        return record, [_match(record.correlation, report)]
    return record, []


def _parse(data: bytes) -> cp.CarrierReport:
    report = cp.CarrierReport()
    report.ParseFromString(data)
    return report


def _match(correlation: Correlation, report: cp.CarrierReport) -> Matched:
    receipt = report.receipt_received
    payload = ev.DeliveryReported(
        carrier=report.carrier, carrier_message_id=report.carrier_message_id,
        part_index=correlation.part_index, total_parts=correlation.total_parts, state=receipt.state,
        carrier_state=receipt.carrier_state, carrier_error=receipt.carrier_error,
    )
    if receipt.HasField("done_at"):
        payload.reported_at.CopyFrom(receipt.done_at)
    return Matched(
        envelope_fields={
            "message_id": correlation.message_id,
            "account_id": correlation.account_id,
            "sequence": correlation.sequence + 1,
            "event_id": derived_id(report.report_id, "delivery"),
            "causation_id": report.report_id,
            "trace_context": correlation.trace_context,
        },
        payload=payload,
    )
