"""Joining the parts of a long inbound SMS (pure): order, duplicates, timeouts, reuse of references."""

from __future__ import annotations

import json

import pytest

from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev
from smsgw_receipt.inbound import NumberDirectory, joined_report, on_inbound, part_of
from smsgw_receipt.mo_reassembly import Part, SenderParts, add_part, due, expire

TIMEOUT = 300.0
TEXTS = {1: "The quick brown fox ", 2: "jumps over the lazy ", 3: "dog."}


def part(
    number: int,
    *,
    total: int = 3,
    reference: int = 7,
    text: str | None = None,
    to: str = "+14155550000",
    report_id: str | None = None,
    received_at: float = 0.0,
) -> Part:
    return Part(
        destination=to,
        reference=reference,
        total=total,
        number=number,
        text=TEXTS[number] if text is None else text,
        report_id=report_id or f"r{reference}-{number}",
        received_at=received_at or 1000.0 + number,
    )


def feed(*parts: Part, state: SenderParts = SenderParts(), at: float = 0.0):
    emitted = []
    for offset, p in enumerate(parts):
        state, out = add_part(state, p, at + offset)
        emitted += out
    return state, emitted


@pytest.mark.parametrize("order", [(1, 2, 3), (3, 1, 2), (2, 3, 1), (3, 2, 1)])
def test_every_order_gives_one_message_in_part_order_once_the_last_part_arrives(order):
    state, emitted = feed(*(part(n) for n in order[:-1]))
    assert emitted == []
    state, (whole,) = add_part(state, part(order[-1]), 10.0)
    assert whole.text == "The quick brown fox jumps over the lazy dog."
    assert whole.complete and whole.missing == () and whole.total == 3
    assert whole.report_ids == ("r7-1", "r7-2", "r7-3")
    assert whole.received_at == 1001.0  # the first part's


def test_a_repeated_part_is_ignored_while_assembling_and_after_the_message_was_emitted():
    state, _ = feed(part(1), part(2))
    again, emitted = add_part(state, part(1, report_id="redelivered"), 5.0)
    assert again == state and emitted == []
    state, (whole,) = add_part(state, part(3), 6.0)
    assert whole.report_ids == ("r7-1", "r7-2", "r7-3")
    # Late duplicates of an emitted message (the SMSC missed our deliver_sm_resp) start nothing.
    for number in (1, 2, 3):
        unchanged, emitted = add_part(state, part(number, report_id="late"), 7.0)
        assert unchanged == state and emitted == []
    assert expire(state, 7.0 + TIMEOUT, TIMEOUT) == (None, [])  # forgotten a timeout later


def test_messages_from_one_sender_are_told_apart_by_reference_destination_and_total():
    state, emitted = feed(
        part(1, reference=1), part(1, reference=2), part(1, to="+14155550001"), part(1, total=2, text="Hello ")
    )
    assert emitted == [] and len(state.assemblies) == 4
    state, (first,) = add_part(state, part(2, total=2, text="there"), 10.0)
    assert first.text == "Hello there" and first.total == 2


def test_an_incomplete_message_times_out_from_its_latest_part_with_the_missing_parts_named():
    state, _ = feed(part(3), part(1), at=100.0)  # latest part at 101
    assert not due(state, 101.0 + TIMEOUT - 0.5, TIMEOUT)
    assert expire(state, 101.0 + TIMEOUT - 0.5, TIMEOUT) == (state, [])
    assert due(state, 101.0 + TIMEOUT, TIMEOUT)
    kept, (partial,) = expire(state, 101.0 + TIMEOUT, TIMEOUT)
    assert partial.text == TEXTS[1] + TEXTS[3] and partial.missing == (2,) and not partial.complete
    assert partial.report_ids == ("r7-1", "r7-3")
    # Remembered for duplicates, then forgotten; expiring again emits nothing twice.
    assert kept is not None and expire(kept, 101.0 + TIMEOUT + 1, TIMEOUT) == (kept, [])
    assert expire(kept, 101.0 + 2 * TIMEOUT, TIMEOUT) == (None, [])


def test_a_part_that_comes_after_its_message_timed_out_is_not_lost():
    state, _ = feed(part(1), part(3))
    state, _ = expire(state, 1.0 + TIMEOUT, TIMEOUT)
    state, emitted = add_part(state, part(2), 2.0 + TIMEOUT)
    assert emitted == []
    _, (late,) = expire(state, 2.0 + 2 * TIMEOUT, TIMEOUT)
    assert late.text == TEXTS[2] and late.missing == (1, 3)


def test_a_reused_reference_pushes_the_unfinished_message_out_and_starts_anew():
    state, _ = feed(part(1), part(2))
    state, (pushed,) = add_part(state, part(1, text="New message "), 5.0)
    assert pushed.text == TEXTS[1] + TEXTS[2] and pushed.missing == (3,)
    state, emitted = feed(part(2, text="goes "), part(3, text="here"), state=state, at=6.0)
    assert [m.text for m in emitted] == ["New message goes here"]


def test_the_record_survives_a_json_round_trip():
    state, _ = feed(part(2), part(1, text="ü 😀 "))
    state, _ = add_part(state, part(1, reference=9), 3.0)
    assert SenderParts.from_json(json.loads(json.dumps(state.to_json()))) == state
    assert SenderParts.from_json(None) == SenderParts()


@pytest.mark.parametrize("number, total", [(0, 3), (4, 3), (1, 1), (1, 0)])
def test_a_part_must_be_one_of_at_least_two(number, total):
    with pytest.raises(ValueError, match="1..total"):
        Part(destination="x", reference=1, total=total, number=number, text="", report_id="r")


# --- the glue in smsgw_receipt.inbound ------------------------------------------------------------


def report(number: int, total: int, text: str = "x", report_id: str = "r") -> cp.CarrierReport:
    report = cp.CarrierReport(
        report_id=report_id,
        carrier="smsc",
        carrier_message_id="mo/+14155550199",
        inbound_received=cp.InboundReceived(
            to="+14155550000",
            content=ev.MessageContent(text=text),
            parts=1,
            concat_reference=300,
            part_number=number,
            total_parts=total,
        ),
    )
    setattr(report.inbound_received, "from", "+14155550199")
    report.received_at.FromSeconds(1_700_000_000)
    return report


def test_a_report_is_a_part_only_with_sane_numbers():
    assert part_of(report(2, 3, "ab")) == Part(
        destination="+14155550000",
        reference=300,
        total=3,
        number=2,
        text="ab",
        report_id="r",
        received_at=1_700_000_000.0,
    )
    for number, total in ((0, 0), (1, 1), (0, 3), (4, 3)):
        assert part_of(report(number, total)) is None


def test_the_joined_message_is_one_inbound_event_with_parts_and_a_stable_id():
    directory = NumberDirectory()
    state, _ = feed(*(part_of(report(n, 3, TEXTS[n], report_id=f"r{n}")) for n in (2, 1)))
    _, (whole,) = add_part(state, part_of(report(3, 3, TEXTS[3], report_id="r3")), 5.0)
    joined = joined_report("smsc", "+14155550199", whole)
    outcome = on_inbound(joined, directory)
    ((received, event_id),) = outcome.events
    assert received.content.text == "The quick brown fox jumps over the lazy dog." and received.parts == 3
    assert getattr(received, "from") == "+14155550199" and received.to == "+14155550000"
    assert list(received.missing_parts) == [] and received.received_at.seconds == 1_700_000_000
    assert event_id == on_inbound(joined_report("smsc", "+14155550199", whole), directory).events[0][1]


def test_an_incomplete_message_is_marked_and_never_read_as_a_keyword():
    state, _ = feed(part_of(report(1, 2, "STOP", report_id="r1")))
    _, (partial,) = expire(state, TIMEOUT, TIMEOUT)
    outcome = on_inbound(joined_report("smsc", "+14155550199", partial), NumberDirectory(), partial.missing)
    ((received, _),) = outcome.events  # no opt-out: we do not know the whole message
    assert received.content.text == "STOP" and list(received.missing_parts) == [2] and received.keyword == ""
