"""The carrier-adapter's metrics: each carrier's connection state and traffic, and the dispatcher's.

Read from the carrier clients when scraped: every client answers ``metrics()`` with a
CarrierMetrics snapshot of the counters it keeps anyway (carrier_metrics.py), so there is
no second bookkeeping to drift from them; observable OpenTelemetry instruments served by
smsgw.metrics_endpoint. What each metric counts per carrier kind: docs/metrics.md.

Every series is labelled by ``carrier``; ``smsgw_carrier_info{carrier, kind}`` (always 1)
gives each carrier's kind, to join on (``* on(carrier) group_left(kind) smsgw_carrier_info``)
without changing the label sets the SMPP series have always had.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .carrier_metrics import COMMON_COUNTERS, EXTRA_COUNTERS, EXTRA_GAUGES, CarrierMetrics

log = logging.getLogger(__name__)

__all__ = ["CarrierCollector", "DispatchCollector"]

PREFIX = "smsgw_carrier_"

Callback = Callable[[CallbackOptions], Iterator[Observation]]


class CarrierCollector:
    """Instruments over every client that has ``metrics()``."""

    def __init__(self, clients: Iterable) -> None:
        self.clients = list(clients)

    def snapshots(self) -> list[tuple[str, CarrierMetrics]]:
        return [(client.name, client.metrics()) for client in self.clients if hasattr(client, "metrics")]

    def instrument(self, meter: Meter) -> None:
        gauge, counter = meter.create_observable_gauge, meter.create_observable_counter
        gauge(
            f"{PREFIX}info",
            callbacks=[self._each(lambda carrier, m: [(1.0, {"carrier": carrier, "kind": m.kind})])],
            description="always 1: the carrier's kind (smpp, twilio, android)",
        )
        gauge(
            f"{PREFIX}bound",
            callbacks=[
                self._each(
                    lambda carrier, m: [
                        (1.0 if up else 0.0, {"carrier": carrier, "session": session})
                        for session, up in m.sessions.items()
                    ]
                )
            ],
            description="1 when the carrier session is up: SMPP bind bound, phone "
            "stream attached, HTTP provider answering its last request",
        )
        gauge(
            f"{PREFIX}tps",
            callbacks=[self._each(lambda carrier, m: [(m.current_tps, {"carrier": carrier})])],
            description="per second over the last 10 s: submit_sm admitted (SMPP), "
            "submits accepted (HTTP), messages sent by phones (Android)",
        )
        gauge(
            f"{PREFIX}in_flight",
            callbacks=[self._each(lambda carrier, m: [(m.in_flight, {"carrier": carrier})])],
            description="submits handed to the carrier and not answered yet",
        )
        for name, help_text in EXTRA_GAUGES.items():
            gauge(f"{PREFIX}{name}", callbacks=[self._extra(name, "extra_gauges")], description=help_text)
        for name, help_text in COMMON_COUNTERS.items():
            counter(f"{PREFIX}{name}", callbacks=[self._common(name)], description=help_text)
        for name, help_text in EXTRA_COUNTERS.items():
            counter(f"{PREFIX}{name}", callbacks=[self._extra(name, "extra_counters")], description=help_text)

    def _each(self, points: Callable[[str, CarrierMetrics], list[tuple[float, dict[str, str]]]]) -> Callback:
        """A callback observing ``points(carrier, snapshot)`` for every carrier."""

        def observe(_: CallbackOptions) -> Iterator[Observation]:
            for carrier, snapshot in self.snapshots():
                for value, labels in points(carrier, snapshot):
                    yield Observation(value, labels)

        return observe

    def _common(self, name: str) -> Callback:
        """A callback observing a field every snapshot has, for every carrier."""
        return self._each(lambda carrier, m: [(getattr(m, name), {"carrier": carrier})])

    def _extra(self, name: str, field: str) -> Callback:
        """A callback observing a kind's own series, for the carriers whose snapshot has it."""
        return self._each(
            lambda carrier, m: [(getattr(m, field)[name], {"carrier": carrier})] if name in getattr(m, field) else []
        )


#: The dispatcher's plain counts: series name (after smsgw_carrier_), Dispatcher attribute, help text.
DISPATCHER_COUNTS = (
    ("rerouted", "rerouted", "messages this replica handed to the next carrier of their route (failover)"),
    (
        "command_outcomes_found",
        "outcomes_found",
        "dispatch commands not submitted again after a crash or a rebalance because their "
        "outcome was already in the message's events (their commit had been lost)",
    ),
    (
        "command_copies_skipped",
        "copies_skipped",
        "dispatch commands read a second time under the same id (routing published them again "
        "after a crash) and not submitted again",
    ),
    (
        "parked_rereads",
        "parked_rereads",
        "times a dispatch partition was read again from the topic for parked commands not kept in "
        "memory (SMSGW_DISPATCH_PARKED_IN_MEMORY)",
    ),
)


class DispatchCollector:
    """How many commands each carrier has running and parked on this replica (the dispatcher's
    CarrierParking): a carrier at its share with a growing parked count is down or slower than
    its traffic."""

    def __init__(self, dispatcher, delayed=None) -> None:
        self.dispatcher = dispatcher
        self.delayed = delayed  # DelayedCommands, the delay topic's reader on this replica

    def instrument(self, meter: Meter) -> None:
        meter.create_observable_gauge(
            f"{PREFIX}commands_running",
            callbacks=[self._per_carrier(lambda parking, carrier: parking.active(carrier))],
            description="dispatch commands being submitted or retried now (at most the carrier's share per lane)",
        )
        meter.create_observable_gauge(
            f"{PREFIX}commands_parked",
            callbacks=[self._per_carrier(lambda parking, carrier: parking.parked(carrier))],
            description="dispatch commands waiting for a place in the carrier's share; "
            "read again from the topic once it drains",
        )
        meter.create_observable_counter(
            f"{PREFIX}submit_retries",
            callbacks=[self._retries],
            description="submits tried again after the carrier could not take them (down, throttling, timeout, "
            "5xx), by the reason of the failed attempt",
        )
        meter.create_observable_counter(
            f"{PREFIX}restart_in_doubt",
            callbacks=[self._restart_doubts],
            description="submit attempts a carrier-adapter replica that stopped left without the carrier's answer "
            "(the submit ledger's intent without an outcome), found by the replica that took the command over; "
            "policy retry: submitted again (the carrier may have it twice), fail: the message failed SUBMIT_IN_DOUBT",
        )
        meter.create_observable_counter(
            f"{PREFIX}deferred",
            callbacks=[self._deferred],
            description="messages this replica sent to wait on the delay topic because their carrier could not take "
            "them for SMSGW_DISPATCH_DEFER_AFTER_SECONDS (DispatchDeferred), by carrier",
        )
        if self.delayed is not None:
            meter.create_observable_counter(
                f"{PREFIX}delayed_returned",
                callbacks=[self._of_delayed("dispatched")],
                description="deferred commands this replica's reader of the delay topic put back on the dispatch topic",
            )
            meter.create_observable_counter(
                f"{PREFIX}delayed_laps",
                callbacks=[self._of_delayed("lapped")],
                description="deferred commands written to the delay topic again for another lap of their wait",
            )
            meter.create_observable_counter(
                f"{PREFIX}delayed_held",
                callbacks=[self._of_delayed("held")],
                description="due deferred commands kept on the delay topic for another wait, their carrier still down "
                "(one a lap goes back as a probe)",
            )
        for name, attribute, help_text in DISPATCHER_COUNTS:
            meter.create_observable_counter(
                f"{PREFIX}{name}", callbacks=[self._count_of(attribute)], description=help_text
            )

    def _per_carrier(self, count: Callable) -> Callback:
        def observe(_: CallbackOptions) -> Iterator[Observation]:
            parking = self.dispatcher.parking
            for carrier in sorted(set(self.dispatcher.carriers) | parking.carriers()):
                yield Observation(count(parking, carrier), {"carrier": carrier})

        return observe

    def _restart_doubts(self, _: CallbackOptions) -> Iterator[Observation]:
        for (carrier, policy), count in sorted(self.dispatcher.restart_doubts.items()):
            yield Observation(count, {"carrier": carrier, "policy": policy})

    def _deferred(self, _: CallbackOptions) -> Iterator[Observation]:
        for carrier, count in sorted(self.dispatcher.deferred.items()):
            yield Observation(count, {"carrier": carrier})

    def _of_delayed(self, attribute: str) -> Callback:
        def observe(_: CallbackOptions) -> Iterator[Observation]:
            yield Observation(getattr(self.delayed, attribute))

        return observe

    def _retries(self, _: CallbackOptions) -> Iterator[Observation]:
        for (carrier, reason), count in sorted(self.dispatcher.retries.items()):
            yield Observation(count, {"carrier": carrier, "reason": reason})

    def _count_of(self, attribute: str) -> Callback:
        def observe(_: CallbackOptions) -> Iterator[Observation]:
            yield Observation(getattr(self.dispatcher, attribute))

        return observe
