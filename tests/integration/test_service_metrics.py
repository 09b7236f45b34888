"""Every service serves Prometheus metrics on SMSGW_METRICS_PORT, and they say what happened: a
message sent through the shared platform is counted into each status with its latencies, the
consumer groups report their lag, receipt its webhooks; and every series the alert rules
(deploy/prometheus/smsgw-alerts.yaml) and the dashboard (deploy/grafana/smsgw-dashboard.json)
read is one a service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from smsgw.domain import status as st
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.integration.helpers import ACCOUNT, send_request, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "smsgw-alerts.yaml"
DASHBOARD = DEPLOY / "grafana" / "smsgw-dashboard.json"
SERVICES = ("intake", "routing", "carrier-adapter", "receipt")
AFTER_AN_EVENT = {
    "smsgw_carrier_submit_retries_total": "test_dispatcher_parking.py, test_route_failover.py",
}


async def scrape(port: int) -> dict[str, list]:
    """Sample name -> samples (counters as their _total, histograms as _bucket/_sum/_count)."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


async def test_each_service_reports_what_happened_and_the_alerts_read_real_series(platform):
    async with platform.intake_channel() as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        sent = await stub.SendMessage(send_request(body="counted"), metadata=ACCOUNT)
        await wait_for_status(stub, sent.message.id, {st.DELIVERED})
    scraped = {name: await scrape(platform.metrics_port_of(name)) for name in SERVICES}

    intake = scraped["intake"]
    delivered = [s for s in intake["smsgw_messages_entered_status_total"] if s.labels["status"] == "DELIVERED"]
    assert sum(s.value for s in delivered) >= 1 and all(s.labels["carrier"] for s in delivered)
    assert sum(s.value for s in intake["smsgw_message_accepted_to_sent_seconds_count"]) >= 1
    assert sum(s.value for s in intake["smsgw_message_sent_to_delivered_seconds_count"]) >= 1

    for service, group in (("routing", "smsgw-routing"), ("receipt", "smsgw-receipt")):
        lag = scraped[service]["smsgw_consumer_lag"]
        assert {s.labels["group"] for s in lag} == {group}
        assert all(s.value >= 0 for s in lag) and len(lag) == 12  # one member: every partition
        (dead,) = scraped[service]["smsgw_dead_lettered_total"]
        assert dead.labels["group"] == group and dead.value == 0  # nothing it could not process
    # carrier-adapter reports the partitions it has read from (the delivered message's, at least).
    dispatch_lag = scraped["carrier-adapter"]["smsgw_consumer_lag"]
    assert dispatch_lag and {s.labels["group"] for s in dispatch_lag} == {"carrier-adapter"}
    assert {s.labels["topic"] for s in dispatch_lag} == {f"{platform.topic_prefix}smsgw.carrier-dispatch.v1"}
    assert all(s.value >= 0 for s in dispatch_lag)
    healthy = {s.labels["carrier"]: s.value for s in scraped["routing"]["smsgw_carrier_healthy"]}
    assert healthy["smsc-sim"] == 1.0 and set(healthy) >= {"smsc-sim", "twilio-sim", "phones"}
    assert "smsgw_webhooks_delivered_total" in scraped["receipt"]
    assert "smsgw_carrier_bound" in scraped["carrier-adapter"]
    calls = {s.labels["method"]: s.value for s in intake["smsgw_grpc_requests_total"]}
    assert calls["/smsgw.v1.MessagingService/SendMessage"] >= 1
    assert not any(method.startswith("/grpc.health.") for method in calls)  # probes are not traffic

    # Series with a label that only an event gives (a retry's reason) have no sample before one:
    # each is asserted where that event happens, named here.
    exported = {name for samples in scraped.values() for name in samples} | set(AFTER_AN_EVENT)
    queries = {
        f"alert {rule['alert']}": rule["expr"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    scaling = DEPLOY.parent / "k8s" / "components" / "keda-lag-scaling" / "scaled-objects.yaml"
    for scaled in yaml.safe_load_all(scaling.read_text()):
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] == "prometheus":
                queries[f"KEDA {scaled['metadata']['name']}"] = trigger["metadata"]["query"]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            queries[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for where, query in queries.items():
        for name in re.findall(r"\bsmsgw_[a-z_]+", query):
            assert name in exported, f"{where} reads {name}, which no service exports"
