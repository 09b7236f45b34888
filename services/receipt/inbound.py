"""What an inbound (MO) message means (pure): which account, which keyword, which facts.

Keywords follow the CTIA/carrier conventions gateways apply: the whole message,
case-insensitive, surrounding spaces and trailing punctuation ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, field_validator

from smsgw.events.envelope import derived_id
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev

from .mo_reassembly import Part, Reassembled

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})
_OUR_NUMBER = re.compile(r"\+[1-9][0-9]{6,14}|[0-9]{3,8}")
DEFAULT_HELP = "smsgw: reply STOP to unsubscribe, START to resubscribe. Msg&data rates may apply."


@dataclass(frozen=True)
class NumberOwner:
    account_id: str
    help_reply: str = DEFAULT_HELP


#: Where inbound SMS to a number assigned to no account are recorded when no `default_account`
#: is configured. Not a valid account id (smsgw.domain.credentials.ACCOUNT_ID), so no API key
#: can read them: a number nobody owns must not hand its senders' messages to some tenant.
UNASSIGNED = "@unassigned"


@dataclass(frozen=True)
class NumberDirectory:
    """Which account owns each of our numbers. Unlisted numbers belong to `default_account` when
    one is configured (a development platform's single account), else to nobody (UNASSIGNED:
    recorded, never shown to an account, no HELP reply)."""

    owners: dict[str, NumberOwner] = field(default_factory=dict)
    default_account: str | None = None
    default_help: str = DEFAULT_HELP

    def owner_of(self, number: str) -> NumberOwner:
        owner = self.owners.get(number)
        if owner is not None:
            return owner
        if self.default_account is None:
            return NumberOwner(UNASSIGNED, help_reply="")
        return NumberOwner(self.default_account, self.default_help)

    @classmethod
    def parse(cls, text: str) -> NumberDirectory:
        """SMSGW_NUMBERS, JSON: {"default_account": "dev", "numbers": {"+14155550000": {"account": "a", "help": "..."}}}."""
        return load_number_section(json.loads(text) if text else {})


class _NumberEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str = Field(min_length=1, max_length=64)
    help: str = Field(DEFAULT_HELP, max_length=1600, description="the reply to HELP or INFO sent to this number")


class NumbersSection(BaseModel):
    """The configuration file's `numbers` section (the same document as SMSGW_NUMBERS)."""

    model_config = ConfigDict(extra="forbid")

    default_account: str | None = Field(None, description="owner of numbers not listed; none: nobody")
    help: str = Field(DEFAULT_HELP, max_length=1600)
    numbers: dict[str, _NumberEntry] = {}

    @field_validator("numbers")
    @classmethod
    def _our_numbers(cls, numbers: dict[str, _NumberEntry]) -> dict[str, _NumberEntry]:
        wrong = [number for number in numbers if not _OUR_NUMBER.fullmatch(str(number))]
        if wrong:
            raise ValueError(
                f'{wrong}: our numbers are E.164 ("+14155550000", quoted in YAML) or 3-8 digit short codes'
            )
        return numbers


def load_number_section(value: object) -> NumberDirectory:
    section = NumbersSection.model_validate(value or {})
    return NumberDirectory(
        owners={n: NumberOwner(o.account, o.help) for n, o in section.numbers.items()},
        default_account=section.default_account,
        default_help=section.help,
    )


def keyword_of(text: str) -> str:
    word = text.strip().rstrip(".!").strip().upper()
    return word if word in STOP_WORDS | START_WORDS | HELP_WORDS else ""


@dataclass(frozen=True)
class InboundOutcome:
    account_id: str
    inbound_id: str
    partition_key: str
    events: list = field(default_factory=list)  # (payload, event_id)
    help_reply: str = ""  # text to send back, when the subscriber asked for HELP
    subscriber: str = ""
    our_number: str = ""


def part_of(report: cp.CarrierReport) -> Part | None:
    """The part of a long SMS this report carries, or None when it is a whole message.

    A part whose numbers make no sense (0 of 3, 4 of 3) is treated as a whole message:
    shown as it came rather than held for parts that cannot exist.
    """
    inbound = report.inbound_received
    if inbound.total_parts < 2 or not 1 <= inbound.part_number <= inbound.total_parts:
        return None
    received_at = report.received_at.ToNanoseconds() / 1e9 if report.HasField("received_at") else 0.0
    return Part(
        destination=inbound.to,
        reference=inbound.concat_reference,
        total=inbound.total_parts,
        number=inbound.part_number,
        text=inbound.content.text,
        report_id=report.report_id,
        received_at=received_at,
    )


def joined_report(carrier: str, subscriber: str, message: Reassembled) -> cp.CarrierReport:
    """The parts of a long SMS as one report. Its id derives from the parts' report ids, so
    reading the same parts again (a restart before the commit) yields the same event ids."""
    report = cp.CarrierReport(
        report_id=derived_id(message.report_ids[0], "reassembled", ",".join(message.report_ids)),
        carrier=carrier,
        carrier_message_id=f"mo/{subscriber}",
        inbound_received=cp.InboundReceived(
            to=message.destination,
            content=ev.MessageContent(text=message.text),
            parts=message.total,
            concat_reference=message.reference,
        ),
    )
    setattr(report.inbound_received, "from", subscriber)
    if message.received_at:
        report.received_at.FromNanoseconds(int(message.received_at * 1e9))
    return report


def on_inbound(
    report: cp.CarrierReport, directory: NumberDirectory, missing_parts: tuple[int, ...] = ()
) -> InboundOutcome:
    """The facts one inbound message makes; ``missing_parts`` marks a long SMS that never became whole."""
    inbound = report.inbound_received
    subscriber, our_number = getattr(inbound, "from"), inbound.to
    owner = directory.owner_of(our_number)
    inbound_id = derived_id(report.report_id, "inbound")
    # A keyword is the whole message; with parts missing we do not know the whole message.
    keyword = "" if missing_parts else keyword_of(inbound.content.text)
    received = ev.InboundMessageReceived(
        carrier=report.carrier,
        to=our_number,
        content=inbound.content,
        parts=inbound.parts or 1,
        keyword=keyword,
        missing_parts=missing_parts,
        media_urls=inbound.media_urls,
    )
    setattr(received, "from", subscriber)
    if report.HasField("received_at"):
        received.received_at.CopyFrom(report.received_at)
    events = [(received, derived_id(report.report_id, "received"))]
    if keyword in STOP_WORDS:
        sender = "" if keyword == "STOPALL" else our_number
        events.append(
            (
                ev.RecipientOptedOut(recipient=subscriber, sender=sender, keyword=keyword, inbound_id=inbound_id),
                derived_id(report.report_id, "opt"),
            )
        )
    elif keyword in START_WORDS:
        events.append(
            (
                ev.RecipientOptedIn(recipient=subscriber, sender=our_number, keyword=keyword, inbound_id=inbound_id),
                derived_id(report.report_id, "opt"),
            )
        )
    return InboundOutcome(
        account_id=owner.account_id,
        inbound_id=inbound_id,
        partition_key=f"{owner.account_id}/{subscriber}",
        events=events,
        help_reply=owner.help_reply if keyword in HELP_WORDS else "",
        subscriber=subscriber,
        our_number=our_number,
    )
