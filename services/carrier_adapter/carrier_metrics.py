"""What every carrier client reports for metrics, whatever its kind: one frozen snapshot.

Each client (SMPP, Twilio-compatible HTTP, Android phones) answers ``metrics()`` with a
CarrierMetrics built from the counters it keeps anyway; metrics.py reports the snapshots
through OpenTelemetry instruments. The common fields mean the same on every kind (see
docs/metrics.md for what each counts per kind); what only one kind has goes in
``extra_counters`` / ``extra_gauges``, under a name registered here so that each name has
one meaning and one help text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: Counters every kind has (fields of CarrierMetrics): name -> help text. Exposed as smsgw_carrier_<name>_total.
COMMON_COUNTERS: Mapping[str, str] = MappingProxyType(
    {
        "submits": "submits handed to the carrier (SMPP: submit_sm PDUs, parts and retries; HTTP: create-message "
        "requests; Android: send commands written to a phone)",
        "submit_failures": "submits the carrier refused for good or left unanswered (per kind: docs/metrics.md)",
        "throttled": "submits the carrier answered with 'slow down' (SMPP throttling status, HTTP 429, phone "
        "send limit or busy)",
        "reconnects": "sessions re-established after a loss (SMPP rebinds, phones attaching again)",
        "receipts": "delivery receipts received (redeliveries included)",
        "inbound": "mobile-originated messages received (redeliveries included)",
    }
)

#: Counters only some kinds have: name -> help text. Exposed as smsgw_carrier_<name>_total.
EXTRA_COUNTERS: Mapping[str, str] = MappingProxyType(
    {
        # twilio
        "request_errors": "HTTP carrier: requests without a usable answer (network fault, 5xx, credentials or "
        "account refused, temporary error); the message is retried",
        "retry_after_waits": "HTTP carrier: submits that waited out a Retry-After pause before going out",
        "callbacks_accepted": "HTTP carrier: status and inbound callbacks whose signature and account verified",
        "callbacks_rejected": "HTTP carrier: callbacks refused (missing or bad signature, another account's)",
        # android
        "commands_accepted": "Android carrier: send commands a phone accepted",
        "sends_ok": "Android carrier: messages a phone reported sent (every part OK)",
        "commands_lost": "Android carrier: send commands that ended unanswered (not accepted in time, the stream "
        "dropped before the phone accepted, the carrier closed)",
        "redispatches": "Android carrier: messages taken back from a phone whose stream dropped (or was replaced) "
        "before it accepted them, to be dispatched again",
    }
)

#: Gauges only some kinds have: name -> help text. Exposed as smsgw_carrier_<name>.
EXTRA_GAUGES: Mapping[str, str] = MappingProxyType(
    {
        "window_in_use": "SMPP carrier: submit_sm sent and not answered yet",
        "window_size": "SMPP carrier: submit_sm that may await an answer at once (the configured window)",
    }
)

KINDS = ("smpp", "twilio", "android")


@dataclass(frozen=True)
class CarrierMetrics:
    """A snapshot of one carrier client. Counters only grow over the client's life."""

    kind: str
    #: Connection state per session: SMPP bind role, phone device id, "api" for an HTTP provider.
    sessions: Mapping[str, bool]
    #: Per second over the last 10 s (smsgw.recent_rate): what each kind counts is in docs/metrics.md.
    current_tps: float
    #: Submits handed to the carrier and not answered yet.
    in_flight: int
    submits: int = 0
    submit_failures: int = 0
    throttled: int = 0
    reconnects: int = 0
    receipts: int = 0
    inbound: int = 0
    extra_counters: Mapping[str, int] = field(default_factory=dict)
    extra_gauges: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"CarrierMetrics.kind must be one of {KINDS}, got {self.kind!r}")
        for names, registry, where in (
            (self.extra_counters, EXTRA_COUNTERS, "EXTRA_COUNTERS"),
            (self.extra_gauges, EXTRA_GAUGES, "EXTRA_GAUGES"),
        ):
            unknown = sorted(set(names) - set(registry))
            if unknown:
                raise ValueError(f"{unknown} not registered in carrier_metrics.{where}; known: {sorted(registry)}")
