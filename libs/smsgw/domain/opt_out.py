"""Opt-out list: who asked not to be messaged from which of an account's numbers.

A pure fold over RecipientOptedOut / RecipientOptedIn events, so every intake
replica rebuilds the same list from the inbound log and refuses the same sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smsgw.v1 import events_pb2 as ev

ALL_NUMBERS = ""  # STOPALL: every number of the account


@dataclass
class OptOutList:
    # account -> {(recipient, sender or ALL_NUMBERS)}
    entries: dict[str, set[tuple[str, str]]] = field(default_factory=dict)

    def apply(self, envelope: ev.EventEnvelope) -> None:
        kind = envelope.WhichOneof("payload")
        account = self.entries.setdefault(envelope.account_id, set())
        if kind == "recipient_opted_out":
            event = envelope.recipient_opted_out
            account.add((event.recipient, event.sender))
        elif kind == "recipient_opted_in":
            event = envelope.recipient_opted_in
            # START lifts the stop for that number, and a STOPALL as well: the subscriber
            # has just written to us and asked to hear from us again.
            account.discard((event.recipient, event.sender))
            account.discard((event.recipient, ALL_NUMBERS))

    def blocks(self, account_id: str, recipient: str, sender: str) -> str | None:
        """The opt-out that forbids this send ('' for STOPALL, else the number), or None."""
        account = self.entries.get(account_id, ())
        if (recipient, sender) in account:
            return sender
        if (recipient, ALL_NUMBERS) in account:
            return ALL_NUMBERS
        return None
