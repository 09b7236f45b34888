from __future__ import annotations

import pytest

from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev
from smsgw_receipt.correlation import CorrelationRecord, on_report


def submit(report_id="s1"):
    return cp.CarrierReport(
        report_id=report_id,
        carrier="smsc",
        carrier_message_id="42",
        trace_context={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
        submit_correlated=cp.SubmitCorrelated(message_id="m1", account_id="a", part_index=1, total_parts=2, sequence=4),
    )


def receipt(report_id="r1", state=ev.DeliveryState.DELIVERY_STATE_DELIVERED):
    return cp.CarrierReport(
        report_id=report_id,
        carrier="smsc",
        carrier_message_id="42",
        receipt_received=cp.ReceiptReceived(state=state, carrier_state="DELIVRD", carrier_error="000"),
    )


def test_receipt_after_submit_matches_at_once():
    record, matched = on_report(CorrelationRecord(), submit())
    assert matched == []
    record, matched = on_report(record, receipt())
    (m,) = matched
    assert m.envelope_fields["message_id"] == "m1" and m.envelope_fields["sequence"] == 5
    assert m.payload.part_index == 1 and m.payload.total_parts == 2
    assert m.envelope_fields["trace_context"]["traceparent"].startswith("00-111")


def test_receipt_before_submit_waits_then_matches():
    record, matched = on_report(CorrelationRecord(), receipt())
    assert matched == [] and len(record.pending) == 1
    record, matched = on_report(record, submit())
    assert len(matched) == 1 and record.pending == ()
    assert matched[0].payload.state == ev.DeliveryState.DELIVERY_STATE_DELIVERED


def test_repeated_receipt_yields_the_same_event_id_per_report():
    record, _ = on_report(CorrelationRecord(), submit())
    _, first = on_report(record, receipt("r1"))
    _, again = on_report(record, receipt("r1"))
    assert first[0].envelope_fields["event_id"] == again[0].envelope_fields["event_id"]


def test_record_survives_json_round_trip():
    record, _ = on_report(CorrelationRecord(), receipt())
    record, _ = on_report(record, submit())
    assert CorrelationRecord.from_json(record.to_json()) == record
    pending, _ = on_report(CorrelationRecord(), receipt())
    assert CorrelationRecord.from_json(pending.to_json()) == pending


from smsgw_receipt.correlation import ReceiptPolicies, ReceiptPolicy, due, on_tick  # noqa: E402

POLICY = ReceiptPolicy(receipt_timeout=100, on_timeout="expire", orphan_after=50, retain_after_final=10)


def test_missing_receipt_expires_the_part_after_the_carriers_timeout():
    record, _ = on_report(CorrelationRecord(), submit(), now=1000)
    assert not due(record, POLICY, 1099)
    outcome = on_tick(record, "smsc/42", POLICY, 1100)
    (m,) = outcome.matched
    assert m.payload.state == ev.DeliveryState.DELIVERY_STATE_EXPIRED and m.payload.carrier_state == "NO_RECEIPT"
    assert outcome.record.closed_at == 1100
    assert on_tick(outcome.record, "smsc/42", POLICY, 1110).record is None  # forgotten after the grace period


def test_keep_sent_policy_emits_nothing_on_timeout():
    record, _ = on_report(CorrelationRecord(), submit(), now=0)
    outcome = on_tick(record, "smsc/42", ReceiptPolicy(receipt_timeout=1, on_timeout="keep_sent"), 5)
    assert outcome.matched == [] and outcome.record.closed_at == 5


def test_receipt_for_an_unknown_id_becomes_an_orphan_after_a_while():
    record, matched = on_report(CorrelationRecord(), receipt(), now=0)
    assert not due(record, POLICY, 49)
    outcome = on_tick(record, "smsc/42", POLICY, 50)
    assert outcome.record is None and [o.report_id for o in outcome.orphans] == ["r1"]


def test_a_final_receipt_closes_the_part_so_no_timeout_fires():
    record, _ = on_report(CorrelationRecord(), submit(), now=0)
    record, _ = on_report(record, receipt(), now=5)
    assert record.closed_at == 5
    assert on_tick(record, "smsc/42", POLICY, 200).matched == []


def test_policies_parse_per_carrier_and_reject_unknown_modes():
    policies = ReceiptPolicies.parse(
        '{"default": {"receipt_timeout": 60}, "carriers": {"sim": {"on_timeout": "keep_sent"}}}'
    )
    assert policies.of("sim").on_timeout == "keep_sent" and policies.of("sim").receipt_timeout == 60
    assert policies.of("other").on_timeout == "expire"
    with pytest.raises(ValueError):
        ReceiptPolicies.parse('{"default": {"on_timeout": "drop"}}')


def test_a_closed_record_keeps_no_trace_context_and_its_last_match_still_carries_it():
    record, _ = on_report(CorrelationRecord(), submit())
    open_json = record.to_json()
    assert open_json["correlation"]["trace_context"]["traceparent"].startswith("00-111")
    record, (final,) = on_report(record, receipt(), now=10.0)
    assert record.closed_at == 10.0 and record.correlation.trace_context == {}
    assert final.envelope_fields["trace_context"]["traceparent"].startswith("00-111")
    # A late copy of the receipt is still matched (its event dropped downstream by id), in a trace of its own.
    _, (late,) = on_report(record, receipt("r2"), now=11.0)
    assert late.envelope_fields["message_id"] == "m1" and late.envelope_fields["trace_context"] == {}
    assert CorrelationRecord.from_json(record.to_json()) == record
