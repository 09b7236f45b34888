"""How messages move, as OpenTelemetry metrics, from the changes intake's projector commits:
messages entering each status (by carrier once routed), and the time from acceptance to SENT and
from SENT to DELIVERED. Every intake replica reads the whole log, so each reports the whole
platform: query one replica (or `max` over them), never their sum."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation

from smsgw.domain import status as st
from smsgw.domain.message_state import MessageState
from smsgw.projections.store import LoggedEvent

# Seconds: from a carrier answering at once to a receipt that takes minutes.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class MessageFlow:
    def __init__(self) -> None:
        #: (status name, carrier) -> messages that entered it; counted here, reported when scraped.
        self.entered: Counter[tuple[str, str]] = Counter()
        # Created with the service's meter (instrument); until then, and without a metrics port,
        # latencies are not recorded.
        self.accepted_to_sent: Histogram | None = None
        self.sent_to_delivered: Histogram | None = None

    def instrument(self, meter: Meter) -> None:
        meter.create_observable_counter(
            "smsgw_messages_entered_status",
            callbacks=[self._observe_entered],
            description="messages that entered a status (carrier empty until routed)",
        )
        self.accepted_to_sent = meter.create_histogram(
            "smsgw_message_accepted_to_sent_seconds",
            unit="s",
            description="from acceptance (QUEUED) to SENT, by carrier",
            explicit_bucket_boundaries_advisory=BUCKETS,
        )
        self.sent_to_delivered = meter.create_histogram(
            "smsgw_message_sent_to_delivered_seconds",
            unit="s",
            description="from SENT to the DELIVERED receipt, by carrier",
            explicit_bucket_boundaries_advisory=BUCKETS,
        )

    def _observe_entered(self, _: CallbackOptions) -> Iterator[Observation]:
        for (status, carrier), count in sorted(self.entered.items()):
            yield Observation(count, {"status": status, "carrier": carrier})

    def on_committed(self, notice: LoggedEvent) -> None:
        state = notice.state
        if not state.transitions or state.transitions[-1].event_id != notice.envelope.event_id:
            return  # the event changed no status (a copy, a submit attempt)
        status = state.transitions[-1].status
        self.entered[st.status_name(status), state.carrier] += 1
        if status == st.SENT:
            self._observe(self.accepted_to_sent, state, st.QUEUED, st.SENT)
        elif status == st.DELIVERED:
            self._observe(self.sent_to_delivered, state, st.SENT, st.DELIVERED)

    @staticmethod
    def _observe(histogram: Histogram | None, state: MessageState, start: int, end: int) -> None:
        if histogram is None:
            return
        times = {t.status: t.at for t in state.transitions}
        if start in times and end in times:
            histogram.record(max(0.0, (times[end] - times[start]).total_seconds()), {"carrier": state.carrier})
