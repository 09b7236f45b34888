"""Joining the parts of a long inbound (MO) SMS back into one message (pure).

A long MO reaches carrier-adapter as parts (a concatenation UDH or sar_* TLVs),
each written at once, durably, as its own InboundReceived report keyed
"<carrier>/mo/<sender>". Every part from one sender therefore lands in one
partition and in one ``SenderParts`` record here, whichever bind or adapter
replica took it and whether or not the adapter restarted in between.

A message is identified by (destination, reference, total), as Kannel keys it
(sender and carrier are the record's key). Within a record:

- ``add_part``: a new part joins its message; the message is emitted
  (``Reassembled``) as soon as every part is there, text joined in part order.
- A part already held with the same text is a duplicate (the SMSC redelivered
  it) and is ignored, also for a while after its message was emitted, so a late
  duplicate does not start a second, incomplete message.
- A part already held with *different* text means the sender's handset reused
  the reference while the earlier message was still incomplete: the earlier one
  is emitted as it is (incomplete) and the new part starts a new message.
- ``expire``: a message with no new part for ``timeout`` seconds (counted from
  its latest part, as Kannel and Jasmin do) is emitted with what arrived,
  ``missing`` naming the absent part numbers, so nothing is lost. A part that
  turns up later still is not dropped either: it starts a message of its own,
  which times out in turn.
- An emitted message is remembered (to recognise duplicates) for another
  ``timeout``, then forgotten; a record with nothing left is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Part:
    """One part of a concatenated MO, as a carrier reported it."""

    destination: str
    reference: int
    total: int
    #: 1-based position in the message.
    number: int
    #: The part's text, already decoded by the adapter (it knows the data_coding).
    text: str
    report_id: str
    #: When the adapter received it (epoch seconds); the message's received_at is its first part's.
    received_at: float = 0.0

    def __post_init__(self) -> None:
        if self.total < 2 or not 1 <= self.number <= self.total:
            raise ValueError(f"part number {self.number} of {self.total}: a part is 1..total, and total >= 2")


@dataclass(frozen=True)
class Reassembled:
    """One inbound message made of parts, ready to be recorded."""

    destination: str
    reference: int
    total: int
    #: The parts' texts joined in part order (the missing ones left out).
    text: str
    #: Part numbers that never arrived; empty when the message is complete.
    missing: tuple[int, ...]
    #: Report ids of the parts used, in part order: the message's identity for event ids.
    report_ids: tuple[str, ...]
    received_at: float

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class Assembly:
    """The parts of one message seen so far."""

    destination: str
    reference: int
    total: int
    #: Distinct part numbers, ascending.
    parts: tuple[Part, ...] = ()
    #: The receipt service's clock when the latest new part arrived (the timeout counts from it).
    last_part_at: float = 0.0
    #: Set once the message was emitted (complete or timed out); kept to recognise late duplicates.
    finished_at: float = 0.0

    def identifies(self, part: Part) -> bool:
        return (self.destination, self.reference, self.total) == (part.destination, part.reference, part.total)

    def held(self, number: int) -> Part | None:
        return next((p for p in self.parts if p.number == number), None)

    @property
    def missing(self) -> tuple[int, ...]:
        present = {p.number for p in self.parts}
        return tuple(n for n in range(1, self.total + 1) if n not in present)

    def with_part(self, part: Part, now: float) -> Assembly:
        return replace(self, parts=tuple(sorted(self.parts + (part,), key=lambda p: p.number)), last_part_at=now)

    def reassembled(self) -> Reassembled:
        return Reassembled(
            destination=self.destination,
            reference=self.reference,
            total=self.total,
            text="".join(p.text for p in self.parts),
            missing=self.missing,
            report_ids=tuple(p.report_id for p in self.parts),
            received_at=min((p.received_at for p in self.parts), default=0.0),
        )


@dataclass(frozen=True)
class SenderParts:
    """Everything held for one sender on one carrier: messages being assembled and recently emitted."""

    assemblies: tuple[Assembly, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.assemblies

    def to_json(self) -> dict:
        return {
            "assemblies": [
                {
                    "destination": a.destination,
                    "reference": a.reference,
                    "total": a.total,
                    "last_part_at": a.last_part_at,
                    "finished_at": a.finished_at,
                    "parts": [
                        {"number": p.number, "text": p.text, "report_id": p.report_id, "received_at": p.received_at}
                        for p in a.parts
                    ],
                }
                for a in self.assemblies
            ]
        }

    @classmethod
    def from_json(cls, data: dict | None) -> SenderParts:
        if not data:
            return cls()
        assemblies = []
        for a in data.get("assemblies", ()):
            parts = tuple(
                Part(
                    destination=a["destination"],
                    reference=a["reference"],
                    total=a["total"],
                    number=p["number"],
                    text=p["text"],
                    report_id=p["report_id"],
                    received_at=p.get("received_at", 0.0),
                )
                for p in a.get("parts", ())
            )
            assemblies.append(
                Assembly(
                    destination=a["destination"],
                    reference=a["reference"],
                    total=a["total"],
                    parts=parts,
                    last_part_at=a.get("last_part_at", 0.0),
                    finished_at=a.get("finished_at", 0.0),
                )
            )
        return cls(assemblies=tuple(assemblies))


def add_part(state: SenderParts, part: Part, now: float) -> tuple[SenderParts, list[Reassembled]]:
    """The record after ``part`` arrived at ``now``, and the messages it completes (or pushes out)."""
    assemblies = list(state.assemblies)
    emitted: list[Reassembled] = []
    open_index = next((i for i, a in enumerate(assemblies) if not a.finished_at and a.identifies(part)), None)
    if open_index is not None:
        current = assemblies[open_index]
        held = current.held(part.number)
        if held is None:
            current = current.with_part(part, now)
            if not current.missing:
                emitted.append(current.reassembled())
                current = replace(current, finished_at=now)
            assemblies[open_index] = current
            return SenderParts(tuple(assemblies)), emitted
        if held.text == part.text:
            return state, []  # the SMSC delivered this part again
        # Same reference, same part number, other text: the handset reused the reference
        # before the earlier message was whole. Emit that one as it is; this part starts anew.
        emitted.append(current.reassembled())
        assemblies[open_index] = replace(current, finished_at=now)
    elif _emitted_already(assemblies, part):
        return state, []  # a late duplicate of a message already emitted
    assemblies.append(
        Assembly(
            destination=part.destination, reference=part.reference, total=part.total, parts=(part,), last_part_at=now
        )
    )
    return SenderParts(tuple(assemblies)), emitted


def _emitted_already(assemblies: list[Assembly], part: Part) -> bool:
    for assembly in assemblies:
        held = assembly.held(part.number) if assembly.finished_at and assembly.identifies(part) else None
        if held is not None and held.text == part.text:
            return True
    return False


def _timed_out(assembly: Assembly, now: float, timeout: float) -> bool:
    return not assembly.finished_at and now - assembly.last_part_at >= timeout


def _forgettable(assembly: Assembly, now: float, timeout: float) -> bool:
    return bool(assembly.finished_at) and now - assembly.finished_at >= timeout


def due(state: SenderParts, now: float, timeout: float) -> bool:
    """True when ``expire`` would change something (a cheap check for the timer)."""
    return any(_timed_out(a, now, timeout) or _forgettable(a, now, timeout) for a in state.assemblies)


def due_at(state: SenderParts | None, timeout: float) -> float | None:
    """When ``expire`` will next change something (epoch seconds), None if nothing waits."""
    if state is None or not state.assemblies:
        return None
    return min((a.finished_at or a.last_part_at) + timeout for a in state.assemblies)


def expire(state: SenderParts, now: float, timeout: float) -> tuple[SenderParts | None, list[Reassembled]]:
    """Emits the messages that waited ``timeout`` for a part in vain, forgets the long-finished ones.

    Returns None for the record when nothing is left to keep (delete the key).
    """
    kept: list[Assembly] = []
    emitted: list[Reassembled] = []
    for assembly in state.assemblies:
        if _forgettable(assembly, now, timeout):
            continue
        if _timed_out(assembly, now, timeout):
            emitted.append(assembly.reassembled())
            assembly = replace(assembly, finished_at=now)
        kept.append(assembly)
    return (SenderParts(tuple(kept)) if kept else None), emitted
