"""Carrier metrics without I/O: the rate window, the snapshot's rules, and what the collector
exposes for each carrier kind, read back with prometheus_client's own text parser."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from smsgw.metrics_endpoint import MetricsEndpoint
from smsgw.recent_rate import RecentRate
from smsgw.v1 import device_gateway_pb2 as dg
from smsgw_carrier_adapter.android.client import AndroidCarrierClient
from smsgw_carrier_adapter.android.config import AndroidCarrier
from smsgw_carrier_adapter.android.registry import DeviceRegistry
from smsgw_carrier_adapter.android.state import AttemptOutcome
from smsgw_carrier_adapter.carrier_metrics import COMMON_COUNTERS, EXTRA_COUNTERS, CarrierMetrics
from smsgw_carrier_adapter.metrics import CarrierCollector
from smsgw_carrier_adapter.smpp.client import SmppCarrierClient
from smsgw_carrier_adapter.smpp.config import SmppCarrier
from smsgw_carrier_adapter.twilio.client import TwilioCarrierClient
from smsgw_carrier_adapter.twilio.config import TwilioCarrier

R = dg.SmsManagerResult
TWILIO = {
    "name": "tw",
    "kind": "twilio",
    "account_sid": "AC" + "0" * 32,
    "auth_token": "token",
    "from_number": "+14155550199",
    "status_callback_base_url": "https://cb.example",
}
ANDROID = {
    "name": "phones",
    "kind": "android",
    "account_id": "acct",
    "device_tokens": [{"token": "a" * 24, "device_id": "pixel-1"}, {"token": "b" * 24, "device_id": "pixel-2"}],
}


def scrape(*clients) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of everything the collector exposes, parsed from the text format
    the endpoint serves (not started: its registry is read directly)."""
    endpoint = MetricsEndpoint([CarrierCollector(clients)], service="carrier-adapter")
    text = generate_latest(endpoint.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def names_for(samples, carrier: str) -> set[str]:
    return {name for name, labels in samples if ("carrier", carrier) in labels}


class Reports:
    async def on_receipt(self, *args, **kwargs) -> None: ...

    async def on_inbound(self, *args, **kwargs) -> None: ...


class Fixed:
    """A client whose snapshot is given: the collector's mapping, value by value."""

    def __init__(self, name: str, metrics: CarrierMetrics):
        self.name, self._metrics = name, metrics

    def metrics(self) -> CarrierMetrics:
        return self._metrics


# --- the rate window -------------------------------------------------------------------------------


def test_recent_rate_averages_the_last_window_and_forgets_older_events():
    rate = RecentRate(window=10.0)
    assert rate.per_second(now=100.0) == 0
    for t in (91.0, 95.0, 99.0, 99.5, 100.0):
        rate.mark(now=t)
    assert rate.per_second(now=100.0) == pytest.approx(0.5)
    assert rate.per_second(now=101.5) == pytest.approx(0.4)  # 91.0 is now older than 10 s
    assert rate.per_second(now=200.0) == 0


def test_recent_rate_refuses_a_window_that_is_not_positive():
    with pytest.raises(ValueError, match="window"):
        RecentRate(window=0)


# --- the snapshot ----------------------------------------------------------------------------------


def test_snapshot_names_an_unknown_kind_or_extra():
    with pytest.raises(ValueError, match="kind must be one of"):
        CarrierMetrics(kind="carrier-pigeon", sessions={}, current_tps=0, in_flight=0)
    with pytest.raises(ValueError, match=r"\['bananas'\] not registered in carrier_metrics.EXTRA_COUNTERS"):
        CarrierMetrics(kind="smpp", sessions={}, current_tps=0, in_flight=0, extra_counters={"bananas": 1})
    with pytest.raises(ValueError, match="EXTRA_GAUGES"):
        CarrierMetrics(kind="smpp", sessions={}, current_tps=0, in_flight=0, extra_gauges={"sends_ok": 1})


# --- the collector ---------------------------------------------------------------------------------


def test_every_field_of_a_snapshot_becomes_its_series():
    snapshot = CarrierMetrics(
        kind="twilio",
        sessions={"api": False},
        current_tps=2.5,
        in_flight=3,
        submits=11,
        submit_failures=2,
        throttled=4,
        reconnects=0,
        receipts=7,
        inbound=5,
        extra_counters={"request_errors": 6, "retry_after_waits": 8, "callbacks_accepted": 9, "callbacks_rejected": 1},
    )
    samples = scrape(Fixed("tw", snapshot))
    assert value(samples, "smsgw_carrier_info", carrier="tw", kind="twilio") == 1
    assert value(samples, "smsgw_carrier_bound", carrier="tw", session="api") == 0
    assert value(samples, "smsgw_carrier_tps", carrier="tw") == 2.5
    assert value(samples, "smsgw_carrier_in_flight", carrier="tw") == 3
    for name in COMMON_COUNTERS:
        assert value(samples, f"smsgw_carrier_{name}_total", carrier="tw") == getattr(snapshot, name), name
    for name, count in snapshot.extra_counters.items():
        assert value(samples, f"smsgw_carrier_{name}_total", carrier="tw") == count, name
    assert not names_for(samples, "tw") & {"smsgw_carrier_window_in_use", "smsgw_carrier_window_size"}


def test_smpp_keeps_its_series_and_labels():
    pair = SmppCarrierClient(
        SmppCarrier(name="smsc", system_id="smsgw", password="secret", window=7, bind_mode="pair"), Reports()
    )
    samples = scrape(pair)
    assert value(samples, "smsgw_carrier_info", carrier="smsc", kind="smpp") == 1
    # Not started: neither bind is up.
    assert value(samples, "smsgw_carrier_bound", carrier="smsc", session="transmitter") == 0
    assert value(samples, "smsgw_carrier_bound", carrier="smsc", session="receiver") == 0
    assert value(samples, "smsgw_carrier_window_size", carrier="smsc") == 7
    assert value(samples, "smsgw_carrier_window_in_use", carrier="smsc") == 0
    # The names the SMPP carriers had before every kind reported metrics, with the same labels.
    for name in (
        "smsgw_carrier_tps",
        "smsgw_carrier_submits_total",
        "smsgw_carrier_submit_failures_total",
        "smsgw_carrier_throttled_total",
        "smsgw_carrier_reconnects_total",
        "smsgw_carrier_receipts_total",
    ):
        assert value(samples, name, carrier="smsc") == 0, name
    assert not names_for(samples, "smsc") & {f"smsgw_carrier_{n}_total" for n in EXTRA_COUNTERS}


async def test_twilio_counts_callbacks_and_inbound_and_is_up_until_a_request_fails():
    client = TwilioCarrierClient(TwilioCarrier.model_validate(TWILIO), Reports())
    client.count_callback(verified=True)
    client.count_callback(verified=True)
    client.count_callback(verified=False)
    await client.handle_inbound({"From": "+14155550100", "To": "+14155550199", "Body": "hi"})
    assert await client.handle_status({"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered"})
    assert not await client.handle_status({"MessageSid": "SM" + "1" * 32, "MessageStatus": "sent"})

    samples = scrape(client)
    assert value(samples, "smsgw_carrier_info", carrier="tw", kind="twilio") == 1
    assert value(samples, "smsgw_carrier_bound", carrier="tw", session="api") == 1  # no request failed yet
    assert value(samples, "smsgw_carrier_callbacks_accepted_total", carrier="tw") == 2
    assert value(samples, "smsgw_carrier_callbacks_rejected_total", carrier="tw") == 1
    assert value(samples, "smsgw_carrier_inbound_total", carrier="tw") == 1
    assert value(samples, "smsgw_carrier_receipts_total", carrier="tw") == 1  # "sent" is no delivery fact
    assert value(samples, "smsgw_carrier_submits_total", carrier="tw") == 0
    assert not names_for(samples, "tw") & {"smsgw_carrier_window_size", "smsgw_carrier_sends_ok_total"}


def test_android_has_a_session_per_configured_phone():
    client = AndroidCarrierClient(AndroidCarrier.model_validate(ANDROID), Reports(), DeviceRegistry())
    samples = scrape(client)
    assert value(samples, "smsgw_carrier_info", carrier="phones", kind="android") == 1
    assert value(samples, "smsgw_carrier_bound", carrier="phones", session="pixel-1") == 0
    assert value(samples, "smsgw_carrier_bound", carrier="phones", session="pixel-2") == 0
    for name in ("commands_accepted", "sends_ok", "commands_lost", "redispatches"):
        assert value(samples, f"smsgw_carrier_{name}_total", carrier="phones") == 0, name
    assert value(samples, "smsgw_carrier_in_flight", carrier="phones") == 0


@pytest.mark.parametrize(
    ("outcome", "counter"),
    [
        (AttemptOutcome("sent", "", part_count=1), "sends_ok"),
        (AttemptOutcome("lost", "phone gone"), "commands_lost"),
        (AttemptOutcome("failed", "", result=R.SMS_MANAGER_RESULT_ERROR_LIMIT_EXCEEDED), "throttled"),
        (AttemptOutcome("failed", "", result=R.SMS_MANAGER_RESULT_ERROR_NO_SERVICE), "send_failures"),
        (AttemptOutcome("rejected", "", reason=dg.SendRejectReason.SEND_REJECT_REASON_BUSY), "throttled"),
        (AttemptOutcome("rejected", "", reason=dg.SendRejectReason.SEND_REJECT_REASON_NO_SIM), "send_failures"),
    ],
)
def test_android_attempt_ends_move_one_counter(outcome, counter):
    assert AndroidCarrierClient._counter_of(outcome) == counter


def test_kinds_side_by_side_and_clients_without_metrics_are_skipped():
    class Legacy:
        name = "old"

    smpp = SmppCarrierClient(SmppCarrier(name="smsc", system_id="smsgw", password="secret"), Reports())
    twilio = TwilioCarrierClient(TwilioCarrier.model_validate(TWILIO), Reports())
    android = AndroidCarrierClient(AndroidCarrier.model_validate(ANDROID), Reports(), DeviceRegistry())
    samples = scrape(smpp, twilio, Legacy(), android)
    kinds = {dict(labels)["carrier"]: dict(labels)["kind"] for name, labels in samples if name == "smsgw_carrier_info"}
    assert kinds == {"smsc": "smpp", "tw": "twilio", "phones": "android"}
    assert not names_for(samples, "old")
    # One family per name, whichever kinds report it: every carrier has every common counter.
    for carrier in kinds:
        assert {f"smsgw_carrier_{n}_total" for n in COMMON_COUNTERS} <= names_for(samples, carrier)
