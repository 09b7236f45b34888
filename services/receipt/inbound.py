"""What an inbound (MO) message means (pure): which account, which keyword, which facts.

Keywords follow the CTIA/carrier conventions gateways apply: the whole message,
case-insensitive, surrounding spaces and trailing punctuation ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from smsgw.events.envelope import derived_id
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})
DEFAULT_HELP = "smsgw: reply STOP to unsubscribe, START to resubscribe. Msg&data rates may apply."


@dataclass(frozen=True)
class NumberOwner:
    account_id: str
    help_reply: str = DEFAULT_HELP


@dataclass(frozen=True)
class NumberDirectory:
    """Which account owns each of our numbers. Unlisted numbers belong to `default_account`."""

    owners: dict[str, NumberOwner] = field(default_factory=dict)
    default_account: str = "default"
    default_help: str = DEFAULT_HELP

    def owner_of(self, number: str) -> NumberOwner:
        return self.owners.get(number, NumberOwner(self.default_account, self.default_help))

    @classmethod
    def parse(cls, text: str) -> "NumberDirectory":
        """JSON: {"default_account": "default", "numbers": {"+14155550000": {"account": "a", "help": "..."}}}."""
        data = json.loads(text) if text else {}
        owners = {n: NumberOwner(o["account"], o.get("help", DEFAULT_HELP)) for n, o in data.get("numbers", {}).items()}
        return cls(owners=owners, default_account=data.get("default_account", "default"),
                   default_help=data.get("help", DEFAULT_HELP))


def keyword_of(text: str) -> str:
    word = text.strip().rstrip(".!").strip().upper()
    return word if word in STOP_WORDS | START_WORDS | HELP_WORDS else ""


@dataclass(frozen=True)
class InboundOutcome:
    account_id: str
    inbound_id: str
    partition_key: str
    events: list = field(default_factory=list)   # (payload, event_id)
    help_reply: str = ""                          # text to send back, when the subscriber asked for HELP
    subscriber: str = ""
    our_number: str = ""


def on_inbound(report: cp.CarrierReport, directory: NumberDirectory) -> InboundOutcome:
    inbound = report.inbound_received
    subscriber, our_number = getattr(inbound, "from"), inbound.to
    owner = directory.owner_of(our_number)
    inbound_id = derived_id(report.report_id, "inbound")
    keyword = keyword_of(inbound.content.text)
    received = ev.InboundMessageReceived(carrier=report.carrier, to=our_number, content=inbound.content,
                                         parts=inbound.parts or 1, keyword=keyword)
    setattr(received, "from", subscriber)
    if report.HasField("received_at"):
        received.received_at.CopyFrom(report.received_at)
    events = [(received, derived_id(report.report_id, "received"))]
    if keyword in STOP_WORDS:
        sender = "" if keyword == "STOPALL" else our_number
        events.append((ev.RecipientOptedOut(recipient=subscriber, sender=sender, keyword=keyword,
                                            inbound_id=inbound_id), derived_id(report.report_id, "opt")))
    elif keyword in START_WORDS:
        events.append((ev.RecipientOptedIn(recipient=subscriber, sender=our_number, keyword=keyword,
                                           inbound_id=inbound_id), derived_id(report.report_id, "opt")))
    return InboundOutcome(
        account_id=owner.account_id, inbound_id=inbound_id, partition_key=f"{owner.account_id}/{subscriber}",
        events=events, help_reply=owner.help_reply if keyword in HELP_WORDS else "",
        subscriber=subscriber, our_number=our_number,
    )
