"""An inbound message receipt cannot record is retried, never skipped.

By the time receipt reads an inbound report, the carrier-adapter has told the SMSC (or the
phone) that we have the message: the SMSC forgets it. So a failure to record it must hold
the partition and retry, not log and move on. The failure here comes from the number
directory (the first lookups raise), a real receipt app on a real broker around it.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from smsgw.events.envelope import decode_event
from smsgw.events.topics import CARRIER_REPORTS, INBOUND_EVENTS
from smsgw.kafka.clients import ensure_topics
from smsgw.settings import ServiceSettings
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev
from smsgw_dev.platform import broker_env
from smsgw_receipt.app import ReceiptWorker
from smsgw_receipt.inbound import NumberDirectory, NumberOwner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class DirectoryFailingFirst(NumberDirectory):
    """Raises on its first `failures` lookups, as a store that is briefly unreachable would."""

    left: int
    lookups: int

    def __init__(self, failures: int) -> None:
        super().__init__()
        object.__setattr__(self, "left", failures)
        object.__setattr__(self, "lookups", 0)

    def owner_of(self, number: str) -> NumberOwner:
        object.__setattr__(self, "lookups", self.lookups + 1)
        if self.left:
            object.__setattr__(self, "left", self.left - 1)
            raise ConnectionError("number directory unreachable")
        return NumberOwner("acct-retry")


def _inbound_report(text: str) -> cp.CarrierReport:
    report = cp.CarrierReport(
        report_id=str(uuid.uuid4()),
        carrier="smsc-sim",
        carrier_message_id="mo/+15550001",
        inbound_received=cp.InboundReceived(to="+14155550000", content=ev.MessageContent(text=text)),
    )
    setattr(report.inbound_received, "from", "+15550001")
    return report


async def test_an_inbound_message_that_fails_to_record_is_retried_not_skipped(broker, tmp_path, monkeypatch):
    for name, value in broker_env(broker.kind).items():
        monkeypatch.setenv(name, value)
    settings = ServiceSettings(
        kafka_bootstrap=broker.bootstrap, topic_prefix=f"rr{uuid.uuid4().hex[:8]}.", state_dir=str(tmp_path / "state")
    )
    await ensure_topics(broker.bootstrap, settings.topic_prefix)
    directory = DirectoryFailingFirst(failures=3)
    worker = ReceiptWorker(settings, directory)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(worker.ready.wait(), 60)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    consumer = AIOKafkaConsumer(
        settings.topic(INBOUND_EVENTS),
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await producer.start()
    await consumer.start()
    try:
        first, second = _inbound_report("first, met a failing directory"), _inbound_report("second")
        for report in (first, second):
            await producer.send_and_wait(
                settings.topic(CARRIER_REPORTS), key=b"smsc-sim/mo/+15550001", value=report.SerializeToString()
            )
        texts: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(texts) < 2 and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    envelope = decode_event(record.value)
                    if envelope.WhichOneof("payload") == "inbound_message_received":
                        assert envelope.account_id == "acct-retry"
                        texts.append(envelope.inbound_message_received.content.text)
        # Both recorded, in order: the first waited for the directory instead of being dropped.
        assert texts == ["first, met a failing directory", "second"]
        assert directory.lookups == 5 and directory.left == 0
    finally:
        await consumer.stop()
        await producer.stop()
        stop.set()
        await running
