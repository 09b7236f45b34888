"""Matching carrier receipts to messages (pure).

Records arrive keyed by "<carrier>/<carrier message id>", so a submit
correlation and its receipts share a partition and one record here. A receipt
may come first (the SMSC answered faster than we recorded the submit): it waits
in `pending` until the correlation arrives, then both are matched.

Time-based outcomes (decided by `on_tick`, driven by a timer):
- a correlated part with no final receipt after the carrier's `receipt_timeout`
  ends EXPIRED (policy "expire") or stays SENT (policy "keep_sent");
- receipts whose submit never shows up within `orphan_after` are reported as
  orphaned and dropped from the table;
- a closed record is forgotten after `retain_after_final` (late duplicates
  within that window are recognised as duplicates, later ones become orphans).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from smsgw.events.envelope import derived_id
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev

DS = ev.DeliveryState
FINAL_PART_STATES = frozenset(
    {
        DS.DELIVERY_STATE_DELIVERED,
        DS.DELIVERY_STATE_UNDELIVERABLE,
        DS.DELIVERY_STATE_EXPIRED,
        DS.DELIVERY_STATE_DELETED,
        DS.DELIVERY_STATE_REJECTED,
    }
)


@dataclass(frozen=True)
class ReceiptPolicy:
    receipt_timeout: float = 48 * 3600.0
    on_timeout: str = "expire"  # "expire" | "keep_sent"
    orphan_after: float = 600.0
    retain_after_final: float = 3600.0


@dataclass(frozen=True)
class ReceiptPolicies:
    default: ReceiptPolicy = ReceiptPolicy()
    per_carrier: dict[str, ReceiptPolicy] = field(default_factory=dict)

    def of(self, carrier: str) -> ReceiptPolicy:
        return self.per_carrier.get(carrier, self.default)

    @classmethod
    def parse(cls, text: str) -> ReceiptPolicies:
        """SMSGW_RECEIPT_POLICIES, JSON: {"default": {"receipt_timeout": 172800, "on_timeout": "expire"}, "carriers": {"x": {...}}}."""
        return load_policy_section(json.loads(text) if text else {})


class _PolicyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    receipt_timeout: float | None = Field(None, gt=0, description="seconds a SENT message waits for its receipt")
    on_timeout: Literal["expire", "keep_sent"] | None = None
    orphan_after: float | None = Field(None, gt=0, description="seconds an unmatched receipt waits for its submit")
    retain_after_final: float | None = Field(None, gt=0, description="seconds a settled correlation is kept")

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class PoliciesSection(BaseModel):
    """The configuration file's `receipt_policies` section (the same document as SMSGW_RECEIPT_POLICIES)."""

    model_config = ConfigDict(extra="forbid")

    default: _PolicyEntry = _PolicyEntry()
    carriers: dict[str, _PolicyEntry] = {}


def load_policy_section(value: object) -> ReceiptPolicies:
    section = PoliciesSection.model_validate(value or {})
    default = ReceiptPolicy(**section.default.given())
    per_carrier = {name: replace(default, **entry.given()) for name, entry in section.carriers.items()}
    return ReceiptPolicies(default=default, per_carrier=per_carrier)


#: The trace context of a closed correlation: shared, never written to (see `_closed_if_final`).
NO_TRACE: dict[str, str] = {}


# Slots: a receipt replica keeps one record per message part for the whole retention window
# (an hour by default: 720,000 at 200 messages/s), so every byte of one counts.
@dataclass(frozen=True, slots=True)
class Correlation:
    message_id: str
    account_id: str
    part_index: int
    total_parts: int
    sequence: int
    trace_context: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "message_id": self.message_id,
            "account_id": self.account_id,
            "part_index": self.part_index,
            "total_parts": self.total_parts,
            "sequence": self.sequence,
            "trace_context": self.trace_context,
        }

    @classmethod
    def from_json(cls, data: dict) -> Correlation:
        # Interned: a few accounts own every record.
        return cls(**{**data, "account_id": sys.intern(data["account_id"])})


@dataclass(frozen=True, slots=True)
class CorrelationRecord:
    correlation: Correlation | None = None
    pending: tuple[bytes, ...] = ()  # serialized CarrierReports waiting for their correlation
    first_seen: float = 0.0  # when the first record for this key arrived (epoch s)
    correlated_at: float = 0.0
    closed_at: float = 0.0  # a final receipt (or the timeout) ended this part

    def to_json(self) -> dict:
        return {
            "correlation": None if self.correlation is None else self.correlation.to_json(),
            "pending": [p.hex() for p in self.pending],
            "first_seen": self.first_seen,
            "correlated_at": self.correlated_at,
            "closed_at": self.closed_at,
        }

    @classmethod
    def from_json(cls, data: dict | None) -> CorrelationRecord:
        if not data:
            return cls()
        c = data.get("correlation")
        return cls(
            correlation=Correlation.from_json(c) if c else None,
            pending=tuple(bytes.fromhex(p) for p in data.get("pending", ())),
            first_seen=data.get("first_seen", 0.0),
            correlated_at=data.get("correlated_at", 0.0),
            closed_at=data.get("closed_at", 0.0),
        )


@dataclass(frozen=True)
class Matched:
    """A DeliveryReported to append to the message's log."""

    envelope_fields: dict
    payload: ev.DeliveryReported


def on_report(
    record: CorrelationRecord, report: cp.CarrierReport, now: float = 0.0
) -> tuple[CorrelationRecord, list[Matched]]:
    record = record if record.first_seen else replace(record, first_seen=now)
    kind = report.WhichOneof("report")
    if kind == "submit_correlated":
        sc = report.submit_correlated
        correlation = Correlation(
            message_id=sc.message_id,
            account_id=sys.intern(sc.account_id),
            part_index=sc.part_index,
            total_parts=sc.total_parts,
            sequence=sc.sequence,
            trace_context=dict(report.trace_context),
        )
        waiting = [_parse(p) for p in record.pending]
        record = replace(record, correlation=correlation, pending=(), correlated_at=record.correlated_at or now)
        matched = [_match(correlation, r) for r in waiting]
        return _closed_if_final(record, waiting, now), matched
    if kind == "receipt_received":
        if record.correlation is None:
            return replace(record, pending=record.pending + (report.SerializeToString(),)), []
        return _closed_if_final(record, [report], now), [_match(record.correlation, report)]
    return record, []


@dataclass(frozen=True)
class TickOutcome:
    record: CorrelationRecord | None  # None: forget the key
    matched: list[Matched] = field(default_factory=list)
    orphans: list[cp.CarrierReport] = field(default_factory=list)


def due(record: CorrelationRecord, policy: ReceiptPolicy, now: float) -> bool:
    """True when `on_tick` would change something (cheap check for the timer)."""
    if record.closed_at:
        return now - record.closed_at >= policy.retain_after_final
    if record.correlation is None:
        return bool(record.pending) and now - record.first_seen >= policy.orphan_after
    return now - record.correlated_at >= policy.receipt_timeout


def due_at(record: CorrelationRecord | None, policy: ReceiptPolicy) -> float | None:
    """When `on_tick` will next change the record (epoch seconds), None if never: the time index
    behind the receipt timer, so it looks only at records whose time came."""
    if record is None:
        return None
    if record.closed_at:
        return record.closed_at + policy.retain_after_final
    if record.correlation is None:
        return record.first_seen + policy.orphan_after if record.pending else None
    return record.correlated_at + policy.receipt_timeout


def on_tick(record: CorrelationRecord, key: str, policy: ReceiptPolicy, now: float) -> TickOutcome:
    if not due(record, policy, now):
        return TickOutcome(record=record)
    if record.closed_at:
        return TickOutcome(record=None)
    if record.correlation is None:
        return TickOutcome(record=None, orphans=[_parse(p) for p in record.pending])
    closed = _closed(record, now)
    if policy.on_timeout == "keep_sent":
        return TickOutcome(record=closed)
    carrier, _, carrier_id = key.partition("/")
    timeout_report = cp.CarrierReport(
        report_id=derived_id(key, "receipt-timeout", str(record.correlated_at)),
        carrier=carrier,
        carrier_message_id=carrier_id,
        receipt_received=cp.ReceiptReceived(
            state=DS.DELIVERY_STATE_EXPIRED,
            carrier_state="NO_RECEIPT",
            carrier_error=f"no receipt within {policy.receipt_timeout:.0f}s",
        ),
    )
    return TickOutcome(record=closed, matched=[_match(record.correlation, timeout_report)])


def _closed_if_final(record: CorrelationRecord, receipts: list[cp.CarrierReport], now: float) -> CorrelationRecord:
    if not record.closed_at and any(r.receipt_received.state in FINAL_PART_STATES for r in receipts):
        return _closed(record, now)
    return record


def _closed(record: CorrelationRecord, now: float) -> CorrelationRecord:
    """Kept `retain_after_final` only to know late copies of its receipts: without its trace
    context (a third of a record), so such a copy starts a trace of its own."""
    correlation = record.correlation
    if correlation is not None and correlation.trace_context:
        correlation = replace(correlation, trace_context=NO_TRACE)
    return replace(record, closed_at=now, correlation=correlation)


def _parse(data: bytes) -> cp.CarrierReport:
    report = cp.CarrierReport()
    report.ParseFromString(data)
    return report


def _match(correlation: Correlation, report: cp.CarrierReport) -> Matched:
    receipt = report.receipt_received
    payload = ev.DeliveryReported(
        carrier=report.carrier,
        carrier_message_id=report.carrier_message_id,
        part_index=correlation.part_index,
        total_parts=correlation.total_parts,
        state=receipt.state,
        carrier_state=receipt.carrier_state,
        carrier_error=receipt.carrier_error,
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
