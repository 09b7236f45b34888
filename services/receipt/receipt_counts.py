"""What the receipt worker saw of carriers' receipts that did not simply match, as OpenTelemetry
counters: receipts that came before their submit was known (held until it is), and receipts no
message claimed within the carrier's wait (orphaned: published to the orphans topic). Counted by
this member since it started, for its partitions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from opentelemetry.metrics import CallbackOptions, Meter, Observation


class ReceiptCounts:
    def __init__(self) -> None:
        self.held_early: Counter[str] = Counter()  # carrier -> receipts
        self.orphaned: Counter[str] = Counter()

    @staticmethod
    def carrier_of(key: str) -> str:
        """A correlation key is "<carrier>/<carrier's message id>"."""
        return key.partition("/")[0]

    def instrument(self, meter: Meter) -> None:
        meter.create_observable_counter(
            "smsgw_receipts_held_early",
            callbacks=[lambda options: self._observe(self.held_early, options)],
            description="receipts that arrived before the submit that tells their message, held until it came",
        )
        meter.create_observable_counter(
            "smsgw_receipts_orphaned",
            callbacks=[lambda options: self._observe(self.orphaned, options)],
            description="receipts no message claimed within the carrier's wait (the orphans topic has them)",
        )

    @staticmethod
    def _observe(counts: Counter[str], _: CallbackOptions) -> Iterator[Observation]:
        for carrier, count in sorted(counts.items()):
            yield Observation(count, {"carrier": carrier})
