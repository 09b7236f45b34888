import pytest

from smsgw.domain.credentials import ACCOUNT_ID
from smsgw.domain.opt_out import OptOutList
from smsgw.events.envelope import new_event
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev
from smsgw_receipt.inbound import UNASSIGNED, NumberDirectory, keyword_of, on_inbound

DIRECTORY = NumberDirectory.parse('{"numbers": {"+14155550000": {"account": "acme", "help": "ACME help"}}}')


def mo(text, to="+14155550000", sender="+14155550199", report_id="r1"):
    report = cp.CarrierReport(
        report_id=report_id,
        carrier="smsc",
        inbound_received=cp.InboundReceived(to=to, content=ev.MessageContent(text=text), parts=1),
    )
    setattr(report.inbound_received, "from", sender)
    return report


@pytest.mark.parametrize(
    "text, keyword",
    [
        ("STOP", "STOP"),
        (" stop ", "STOP"),
        ("Stop.", "STOP"),
        ("unsubscribe", "UNSUBSCRIBE"),
        ("StopAll", "STOPALL"),
        ("cancel", "CANCEL"),
        ("end", "END"),
        ("QUIT!", "QUIT"),
        ("start", "START"),
        ("Yes", "YES"),
        ("unstop", "UNSTOP"),
        ("help", "HELP"),
        ("please stop", ""),
        ("stop it", ""),
        ("hello", ""),
    ],
)
def test_keywords_are_whole_message_and_case_insensitive(text, keyword):
    assert keyword_of(text) == keyword


def fold(*reports):
    opt_outs = OptOutList()
    for report in reports:
        outcome = on_inbound(report, DIRECTORY)
        for payload, event_id in outcome.events:
            opt_outs.apply(
                new_event(
                    payload,
                    service="receipt",
                    producer="t",
                    message_id=outcome.inbound_id,
                    account_id=outcome.account_id,
                    sequence=1,
                    event_id=event_id,
                )
            )
    return opt_outs


def test_stop_blocks_that_number_only_and_start_lifts_it():
    opt_outs = fold(mo("STOP"))
    assert opt_outs.blocks("acme", "+14155550199", "+14155550000") == "+14155550000"
    assert opt_outs.blocks("acme", "+14155550199", "+14155550001") is None
    assert opt_outs.blocks("other", "+14155550199", "+14155550000") is None
    assert fold(mo("STOP"), mo("START", report_id="r2")).blocks("acme", "+14155550199", "+14155550000") is None


def test_stopall_blocks_every_number_of_the_account():
    opt_outs = fold(mo("STOPALL"))
    assert opt_outs.blocks("acme", "+14155550199", "+14155559999") == ""


def test_help_asks_for_the_accounts_reply_and_unknown_numbers_go_to_no_account():
    assert on_inbound(mo("help"), DIRECTORY).help_reply == "ACME help"
    other = on_inbound(mo("hi", to="+442071838750"), DIRECTORY)
    assert other.account_id == UNASSIGNED and other.help_reply == "" and len(other.events) == 1
    # Not even HELP is answered from a number nobody owns (whose brand would the reply speak for?).
    assert on_inbound(mo("help", to="+442071838750"), DIRECTORY).help_reply == ""
    # No API key can be that account: account ids are [A-Za-z0-9_-]{1,64}.
    assert not ACCOUNT_ID.match(UNASSIGNED)


def test_a_development_directory_may_give_unknown_numbers_to_one_account():
    directory = NumberDirectory.parse('{"default_account": "dev", "numbers": {}}')
    other = on_inbound(mo("help", to="+442071838750"), directory)
    assert other.account_id == "dev" and other.help_reply


def test_ids_are_deterministic_per_report():
    assert on_inbound(mo("STOP"), DIRECTORY).events[1][1] == on_inbound(mo("STOP"), DIRECTORY).events[1][1]
    assert on_inbound(mo("STOP"), DIRECTORY).partition_key == "acme/+14155550199"


def test_an_mms_keeps_its_media_and_its_keyword():
    report = mo("STOP")
    report.inbound_received.media_urls.extend(["https://media.example/1.jpg", "https://media.example/2.png"])
    received = on_inbound(report, DIRECTORY).events[0][0]
    assert list(received.media_urls) == ["https://media.example/1.jpg", "https://media.example/2.png"]
    assert received.keyword == "STOP"
    assert list(on_inbound(mo("hi"), DIRECTORY).events[0][0].media_urls) == []
