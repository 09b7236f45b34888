"""Every service's /metrics is OpenTelemetry instruments on a MeterProvider of the service's own,
rendered for Prometheus: series keep their names and labels (counters `_total`, histograms with
their buckets), each endpoint shows only its own sources, and none reaches a global registry."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import prometheus_client
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from smsgw.metrics_endpoint import MetricsEndpoint
from smsgw_intake.flow_metrics import MessageFlow


class Calls:
    """A source with one observable counter, read when scraped."""

    def __init__(self, name: str) -> None:
        self.name, self.count = name, 0

    def instrument(self, meter: Meter) -> None:
        meter.create_observable_counter(self.name, callbacks=[self._observe], description="calls")

    def _observe(self, _: CallbackOptions) -> Iterator[Observation]:
        yield Observation(self.count, {"method": "/x"})


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_each_endpoint_serves_its_own_sources_read_when_scraped_and_nothing_global():
    intake_calls, routing_calls = Calls("smsgw_test_intake_calls"), Calls("smsgw_test_routing_calls")
    intake = MetricsEndpoint([intake_calls], service="intake")
    routing = MetricsEndpoint([routing_calls], service="routing")
    intake_calls.count = 3
    first = samples(generate_latest(intake.registry).decode())
    assert first[("smsgw_test_intake_calls_total", frozenset({("method", "/x")}))] == 3
    assert not any(name.startswith("smsgw_test_routing") for name, _ in first)
    info = [labels for name, labels in first if name == "target_info"]
    assert info and ("service_name", "intake") in info[0]
    intake_calls.count = 5  # the callback reads the state again at the next scrape
    assert (
        samples(generate_latest(intake.registry).decode())[
            ("smsgw_test_intake_calls_total", frozenset({("method", "/x")}))
        ]
        == 5
    )
    assert ("smsgw_test_routing_calls_total", frozenset({("method", "/x")})) in samples(
        generate_latest(routing.registry).decode()
    )
    global_names = {name for family in prometheus_client.REGISTRY.collect() for name in [family.name]}
    assert not any(name.startswith("smsgw") for name in global_names)


def test_message_flow_latencies_are_histograms_with_the_documented_buckets():
    flow = MessageFlow()
    endpoint = MetricsEndpoint([flow], service="intake")
    assert flow.accepted_to_sent is not None and flow.sent_to_delivered is not None
    flow.accepted_to_sent.record(0.3, {"carrier": "smsc"})
    flow.accepted_to_sent.record(7.0, {"carrier": "smsc"})
    flow.entered["SENT", "smsc"] += 2
    scraped = samples(generate_latest(endpoint.registry).decode())
    bucket = "smsgw_message_accepted_to_sent_seconds_bucket"
    assert scraped[(bucket, frozenset({("carrier", "smsc"), ("le", "0.25")}))] == 0
    assert scraped[(bucket, frozenset({("carrier", "smsc"), ("le", "0.5")}))] == 1
    assert scraped[(bucket, frozenset({("carrier", "smsc"), ("le", "10.0")}))] == 2
    assert scraped[(bucket, frozenset({("carrier", "smsc"), ("le", "+Inf")}))] == 2
    assert scraped[("smsgw_message_accepted_to_sent_seconds_sum", frozenset({("carrier", "smsc")}))] == 7.3
    assert scraped[("smsgw_messages_entered_status_total", frozenset({("carrier", "smsc"), ("status", "SENT")}))] == 2


async def test_the_endpoint_answers_prometheus_text_or_openmetrics_as_asked():
    calls = Calls("smsgw_test_calls")
    calls.count = 1
    endpoint = MetricsEndpoint([calls], service="intake")
    await endpoint.start()
    try:
        url = f"http://127.0.0.1:{endpoint.port}/metrics"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as plain:
                assert plain.headers["Content-Type"].startswith("text/plain")
                assert 'smsgw_test_calls_total{method="/x"} 1.0' in await plain.text()
            async with session.get(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}) as om:
                assert om.headers["Content-Type"].startswith("application/openmetrics-text")
                assert (await om.text()).rstrip().endswith("# EOF")
    finally:
        await endpoint.stop()
