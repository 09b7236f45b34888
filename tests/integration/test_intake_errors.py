"""The error table's server-side rows, in process: real gRPC over loopback, a real broker.

300 queue full -> RESOURCE_EXHAUSTED; 500 gateway error -> UNAVAILABLE (event log
unreachable, nothing accepted); 400 server-side error -> INTERNAL.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import grpc
import pytest
from aiokafka import TopicPartition

from smsgw.brokers import start_tansu
from smsgw.domain.credentials import Directory
from smsgw.events.envelope import decode_event
from smsgw.events.topics import MESSAGE_EVENTS
from smsgw.grpcx.errors import error_info_of
from smsgw.grpcx.server import ServiceServer
from smsgw.kafka.clients import ensure_topics, make_producer, wait_for_partitions
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


@asynccontextmanager
async def _intake(bootstrap: str, tag: str, *, max_in_flight: int, store=None, **overrides):
    """Intake's MessagingService alone on loopback, over topics of its own on `bootstrap`: yields
    (server, settings); stopped on the way out."""
    settings = ServiceSettings(
        kafka_bootstrap=bootstrap, kafka_idempotence=False, topic_prefix=unique_prefix(tag), **overrides
    )
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix)
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
    try:
        yield server, settings
    finally:
        await server.stop(0)
        await producer.stop()


@pytest.fixture
def own_broker(tmp_path):
    broker = start_tansu(log_path=tmp_path / "tansu.log")
    yield broker
    broker.stop()


async def test_queue_full_is_resource_exhausted_and_accepted_ones_are_in_the_log(own_broker):
    async with _intake(own_broker.bootstrap, "qfull", max_in_flight=2) as (server, settings):
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


async def test_unreachable_event_log_is_unavailable_in_doubt_then_refused_at_once(tmp_path):
    broker = start_tansu(log_path=tmp_path / "tansu.log")
    async with _intake(broker.bootstrap, "down", max_in_flight=100, kafka_request_timeout_ms=2000) as (
        server,
        settings,
    ):
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


async def _queued_in_log(settings: ServiceSettings) -> list[str]:
    """The message id of every MessageQueued in the events topic, in log order per partition."""
    consumer = make_consumer(settings.kafka_bootstrap)
    await consumer.start()
    try:
        topic = settings.topic(MESSAGE_EVENTS)
        numbers = sorted(await wait_for_partitions(settings.kafka_bootstrap, topic))
        partitions = [TopicPartition(topic, p) for p in numbers]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        ids: list[str] = []
        async with asyncio.timeout(30):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    ids.extend(decode_event(r.value).message_id for r in records)
        return ids
    finally:
        await consumer.stop()


async def test_a_batch_larger_than_the_queue_takes_what_fits_and_refuses_each_of_the_rest(own_broker):
    """SendBatch appends its messages together: an invalid item fails alone with its field, the
    valid ones up to the room left are appended and acknowledged, each one beyond is QUEUE_FULL;
    the log holds exactly the accepted ones, once each."""
    async with _intake(own_broker.bootstrap, "bfull", max_in_flight=5) as (server, settings):
        items = [send_request(to=f"+1415555{i:04d}", body=f"b{i}") for i in range(12)]
        items[3].to = "not a number"
        async with grpc.aio.insecure_channel(server.address) as channel:
            reply = await api_grpc.MessagingServiceStub(channel).SendBatch(
                api.SendBatchRequest(messages=items), metadata=ACCOUNT, timeout=30
            )
        outcomes = [r.WhichOneof("outcome") for r in reply.results]
        assert [r.index for r in reply.results] == list(range(12))
        assert reply.results[3].error.reason == "INVALID_PHONE_NUMBER", reply.results[3].error
        assert reply.results[3].error.field == "messages[3].to"
        # the room (5) goes to the first five valid items, in request order
        assert outcomes == ["accepted"] * 3 + ["error"] + ["accepted"] * 2 + ["error"] * 6
        full = [r.error for r in reply.results[6:]]
        assert {(e.reason, e.error_code, e.grpc_code) for e in full} == {
            ("QUEUE_FULL", 300, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
        }
        accepted = [r.accepted.message for r in reply.results if r.WhichOneof("outcome") == "accepted"]
        assert [m.to for m in accepted] == [items[i].to for i in (0, 1, 2, 4, 5)]
        in_log = await _queued_in_log(settings)
        assert sorted(in_log) == sorted(m.id for m in accepted)


async def test_a_batch_to_an_unreachable_log_is_in_doubt_item_by_item_then_refused_at_once(tmp_path):
    broker = start_tansu(log_path=tmp_path / "tansu.log")
    async with _intake(broker.bootstrap, "bdown", max_in_flight=100, kafka_request_timeout_ms=2000) as (
        server,
        settings,
    ):
        broker.stop()
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            batch = api.SendBatchRequest(messages=[send_request(body=f"void {i}") for i in range(3)])
            reply = await stub.SendBatch(batch, metadata=ACCOUNT, timeout=30)
            errors = [r.error for r in reply.results]
            assert [r.WhichOneof("outcome") for r in reply.results] == ["error"] * 3
            assert {e.reason for e in errors} == {"ACCEPTANCE_IN_DOUBT"}, errors
            assert all("same idempotency_key" in e.message for e in errors)
            # each names its own message, to retry or look up
            ids = {e.message.split("message ")[1].split(" ")[0] for e in errors}
            assert len(ids) == 3
            # the batch opened the breaker: the next one is refused at once, nothing sent
            started = time.monotonic()
            reply = await stub.SendBatch(batch, metadata=ACCOUNT, timeout=30)
            assert time.monotonic() - started < 0.5
            assert {r.error.reason for r in reply.results} == {"EVENT_LOG_UNAVAILABLE"}
            assert all("NOT accepted" in r.error.message for r in reply.results)


class _BrokenStore(SqliteMessageStore):
    """A defect inside intake: the read model fails unexpectedly."""

    async def load_states(self, message_ids):
        raise RuntimeError("simulated defect")


async def test_unexpected_server_fault_is_internal_with_reason(own_broker):
    async with _intake(own_broker.bootstrap, "internal", max_in_flight=10, store=_BrokenStore(":memory:")) as (
        server,
        settings,
    ):
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.GetMessage(api.GetMessageRequest(id="anything"), metadata=ACCOUNT)
        assert failure.value.code() == grpc.StatusCode.INTERNAL
        info = error_info_of(failure.value)
        assert info.reason == "SERVER_ERROR" and info.metadata["error_code"] == "400"
        assert "simulated defect" not in failure.value.details()  # internals are logged, not leaked


async def test_a_batch_whose_admission_faults_appends_none_of_its_items(own_broker):
    """An unexpected fault while a batch is admitted (here the store, read for an idempotency
    key) fails the call as INTERNAL and appends nothing of it, not even the items admitted before."""
    async with _intake(own_broker.bootstrap, "bfault", max_in_flight=10, store=_BrokenStore(":memory:")) as (
        server,
        settings,
    ):
        items = [
            send_request(body="first"),
            send_request(body="second"),
            send_request(body="keyed", idempotency_key="k"),
        ]
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.SendBatch(api.SendBatchRequest(messages=items), metadata=ACCOUNT, timeout=30)
            assert failure.value.code() == grpc.StatusCode.INTERNAL
            # the same intake still takes a batch that needs no store read
            reply = await stub.SendBatch(api.SendBatchRequest(messages=items[:1]), metadata=ACCOUNT, timeout=30)
        assert reply.results[0].WhichOneof("outcome") == "accepted"
        assert await _queued_in_log(settings) == [reply.results[0].accepted.message.id]
