"""How messages move, as Prometheus series, from the changes intake's projector commits: messages
entering each status (by carrier once routed), and the time from acceptance to SENT and from
SENT to DELIVERED. Every intake replica reads the whole log, so each reports the whole platform:
query one replica (or `max` over them), never their sum."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from smsgw.domain import status as st
from smsgw.domain.message_state import MessageState
from smsgw.projections.store import LoggedEvent

# Seconds: from a carrier answering at once to a receipt that takes minutes.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class MessageFlow:
    def __init__(self) -> None:
        # Their own registry: MetricsEndpoint serves it, nothing global is touched.
        self.registry = CollectorRegistry(auto_describe=True)
        self.entered = Counter(
            "smsgw_messages_entered_status",
            "messages that entered a status (carrier empty until routed)",
            ["status", "carrier"],
            registry=self.registry,
        )
        self.accepted_to_sent = Histogram(
            "smsgw_message_accepted_to_sent_seconds",
            "from acceptance (QUEUED) to SENT, by carrier",
            ["carrier"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.sent_to_delivered = Histogram(
            "smsgw_message_sent_to_delivered_seconds",
            "from SENT to the DELIVERED receipt, by carrier",
            ["carrier"],
            buckets=BUCKETS,
            registry=self.registry,
        )

    def collect(self):
        yield from self.registry.collect()

    def on_committed(self, notice: LoggedEvent) -> None:
        state = notice.state
        if not state.transitions or state.transitions[-1].event_id != notice.envelope.event_id:
            return  # the event changed no status (a copy, a submit attempt)
        status = state.transitions[-1].status
        self.entered.labels(st.status_name(status), state.carrier).inc()
        if status == st.SENT:
            self._observe(self.accepted_to_sent, state, st.QUEUED, st.SENT)
        elif status == st.DELIVERED:
            self._observe(self.sent_to_delivered, state, st.SENT, st.DELIVERED)

    @staticmethod
    def _observe(histogram: Histogram, state: MessageState, start: int, end: int) -> None:
        times = {t.status: t.at for t in state.transitions}
        if start in times and end in times:
            histogram.labels(state.carrier).observe(max(0.0, (times[end] - times[start]).total_seconds()))
