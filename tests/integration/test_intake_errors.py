"""The error table's server-side rows, in process: real gRPC over loopback, a real broker.

300 queue full -> RESOURCE_EXHAUSTED; 500 gateway error -> UNAVAILABLE (event log
unreachable, nothing accepted); 400 server-side error -> INTERNAL.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from smsgw.brokers import start_tansu
from smsgw.domain.credentials import Directory
from smsgw.events.topics import MESSAGE_EVENTS
from smsgw.grpcx.errors import error_info_of
from smsgw.grpcx.server import ServiceServer
from smsgw.kafka.clients import ensure_topics, make_producer
from smsgw.projections.projector import Projector, make_consumer
from smsgw.projections.sqlite import SqliteMessageStore
from smsgw.settings import ServiceSettings
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_intake.admission import AdmissionPolicy
from smsgw_intake.auth import Authenticator
from smsgw_intake.live import LiveMessages
from smsgw_intake.servicer import Intake, MessagingServicer
from tests.conftest import unique_prefix
from tests.integration.helpers import ACCOUNT, send_request

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def _serve_intake(settings: ServiceSettings, *, max_in_flight: int, store=None):
    producer = make_producer(settings)
    await producer.start()
    store = store if store is not None else SqliteMessageStore(":memory:")
    await store.open()
    # The projector is not run: these tests look at what intake answers before anything is read back.
    projector = Projector(
        store,
        make_consumer(settings.kafka_bootstrap),
        settings.topic(MESSAGE_EVENTS),
        kafka=settings.kafka_bootstrap,
    )
    intake = Intake(
        producer=producer,
        topic=settings.topic(MESSAGE_EVENTS),
        store=store,
        projector=projector,
        live=LiveMessages(),
        producer_name="intake/test",
        policy=AdmissionPolicy(),
        max_in_flight=max_in_flight,
    )
    server = ServiceServer(host="127.0.0.1", port=0, service_names=["smsgw.v1.MessagingService"])
    server.add(
        lambda s: api_grpc.add_MessagingServiceServicer_to_server(
            MessagingServicer(intake, Authenticator(Directory(), "trusted-header")), s
        )
    )
    await server.start()
    await server.set_serving(True)
    return server, producer


@pytest.fixture
def own_broker(tmp_path):
    broker = start_tansu(log_path=tmp_path / "tansu.log")
    yield broker
    broker.stop()


async def test_queue_full_is_resource_exhausted_and_accepted_ones_are_in_the_log(own_broker):
    settings = ServiceSettings(
        kafka_bootstrap=own_broker.bootstrap, kafka_idempotence=False, topic_prefix=unique_prefix("qfull")
    )
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix)
    server, producer = await _serve_intake(settings, max_in_flight=2)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            results = await asyncio.gather(
                *(stub.SendMessage(send_request(body=f"q{i}"), metadata=ACCOUNT) for i in range(60)),
                return_exceptions=True,
            )
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        accepted = [r for r in results if not isinstance(r, Exception)]
        assert refused and accepted
        assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        info = error_info_of(refused[0])
        assert info.reason == "QUEUE_FULL" and info.metadata["error_code"] == "300"
        assert "retry" in refused[0].details()
    finally:
        await server.stop(0)
        await producer.stop()


async def test_unreachable_event_log_is_unavailable_in_doubt_then_refused_at_once(tmp_path):
    broker = start_tansu(log_path=tmp_path / "tansu.log")
    settings = ServiceSettings(
        kafka_bootstrap=broker.bootstrap,
        kafka_idempotence=False,
        topic_prefix=unique_prefix("down"),
        kafka_request_timeout_ms=2000,
    )
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix)
    server, producer = await _serve_intake(settings, max_in_flight=100)
    try:
        broker.stop()
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.SendMessage(send_request(body="into the void"), metadata=ACCOUNT, timeout=30)
            # The producer had the record and retried it until it gave up: whether an attempt
            # reached the log is not known, so the caller is told to retry with the same key.
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
            info = error_info_of(failure.value)
            assert info.reason == "ACCEPTANCE_IN_DOUBT" and info.metadata["error_code"] == "500"
            assert info.metadata["message_id"] in failure.value.details()
            assert "same idempotency_key" in failure.value.details()
            # From then on nothing is sent: refused at once, truthfully not accepted.
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.SendMessage(send_request(body="into the void"), metadata=ACCOUNT, timeout=30)
            assert time.monotonic() - started < 0.5
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            info = error_info_of(refused.value)
            assert info.reason == "EVENT_LOG_UNAVAILABLE" and info.metadata["error_code"] == "500"
            assert "NOT accepted" in refused.value.details()
    finally:
        await server.stop(0)
        await producer.stop()


class _BrokenStore(SqliteMessageStore):
    """A defect inside intake: the read model fails unexpectedly."""

    async def load_states(self, message_ids):
        raise RuntimeError("simulated defect")


async def test_unexpected_server_fault_is_internal_with_reason(own_broker):
    settings = ServiceSettings(
        kafka_bootstrap=own_broker.bootstrap, kafka_idempotence=False, topic_prefix=unique_prefix("internal")
    )
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix)
    server, producer = await _serve_intake(settings, max_in_flight=10, store=_BrokenStore(":memory:"))
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.GetMessage(api.GetMessageRequest(id="anything"), metadata=ACCOUNT)
        assert failure.value.code() == grpc.StatusCode.INTERNAL
        info = error_info_of(failure.value)
        assert info.reason == "SERVER_ERROR" and info.metadata["error_code"] == "400"
        assert "simulated defect" not in failure.value.details()  # internals are logged, not leaked
    finally:
        await server.stop(0)
        await producer.stop()
