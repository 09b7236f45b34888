"""The webhook dispatcher's counters as OpenTelemetry counters: what was delivered, retried, refused by
an open circuit and given up (dead-lettered), read from the counts it keeps (DispatcherStats)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .delivery import WebhookDispatcher

SERIES = {
    "enqueued": "webhooks handed to the dispatcher (copies of one already pending not counted)",
    "attempts": "POSTs made, plus attempts an open circuit refused",
    "delivered": "webhooks the receiver acknowledged (2xx)",
    "retries_scheduled": "failed attempts that will be tried again",
    "refused_by_circuit": "attempts not made because the endpoint's circuit was open",
    "dead_lettered": "webhooks given up after their last attempt (smsgw webhooks dead-letters)",
    "overflow_resent": "dead letters that had found their endpoint's queue full, sent again once it took webhooks",
}


class WebhookCounters:
    def __init__(self, dispatcher: WebhookDispatcher) -> None:
        self.dispatcher = dispatcher

    def instrument(self, meter: Meter) -> None:
        for name, help_text in SERIES.items():
            meter.create_observable_counter(
                f"smsgw_webhooks_{name}", callbacks=[self._observer(name)], description=help_text
            )

    def _observer(self, name: str) -> Callable[[CallbackOptions], Iterator[Observation]]:
        def observe(_: CallbackOptions) -> Iterator[Observation]:
            yield Observation(getattr(self.dispatcher.stats, name))

        return observe
