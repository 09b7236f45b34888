"""The webhook dispatcher's counters as Prometheus series: what was delivered, retried, refused by
an open circuit and given up (dead-lettered), read from the counts it keeps (DispatcherStats)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from .delivery import WebhookDispatcher

SERIES = {
    "enqueued": "webhooks handed to the dispatcher (copies of one already pending not counted)",
    "attempts": "POSTs made, plus attempts an open circuit refused",
    "delivered": "webhooks the receiver acknowledged (2xx)",
    "retries_scheduled": "failed attempts that will be tried again",
    "refused_by_circuit": "attempts not made because the endpoint's circuit was open",
    "dead_lettered": "webhooks given up after their last attempt (smsgw webhooks dead-letters)",
}


class WebhookCounters:
    def __init__(self, dispatcher: WebhookDispatcher) -> None:
        self.dispatcher = dispatcher

    def collect(self) -> Iterator[Metric]:
        stats = self.dispatcher.stats
        for name, help_text in SERIES.items():
            yield CounterMetricFamily(f"smsgw_webhooks_{name}", help_text, value=getattr(stats, name))
