"""While no broker takes writes, intake answers at once and truthfully: the call whose append was
sent and not confirmed is ACCEPTANCE_IN_DOUBT (naming its message), the calls after it are refused
before anything is sent (EVENT_LOG_UNAVAILABLE, with a RetryInfo), and sends are accepted again as
soon as the broker is back. Apache Kafka of its own, frozen with SIGSTOP (a hung broker: its
connections stay open and nothing answers)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from smsgw.brokers import start_apache_kafka
from smsgw.domain import status as st
from smsgw.grpcx.errors import error_info_of
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.conftest import start_platform
from tests.integration.helpers import ACCOUNT, scraped_metrics, send_request, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

APPEND_TIMEOUT = 1.5


def retry_delay_of(error: grpc.aio.AioRpcError) -> float | None:
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToMilliseconds() / 1000
    return None


async def timed_send(stub, key: str) -> tuple[float, api.SendMessageResponse | grpc.aio.AioRpcError]:
    started = time.monotonic()
    try:
        reply = await stub.SendMessage(send_request(body=key, idempotency_key=key), metadata=ACCOUNT, timeout=10)
    except grpc.aio.AioRpcError as error:
        return time.monotonic() - started, error
    return time.monotonic() - started, reply


async def test_a_hung_broker_gets_sends_answered_at_once_and_accepted_again_when_it_is_back(tmp_path):
    broker = start_apache_kafka(log_path=tmp_path / "broker.log")
    assert broker.pid is not None
    platform = await start_platform(
        broker, tmp_path, "log-unavailable", extra_env={"SMSGW_APPEND_TIMEOUT_MS": str(int(APPEND_TIMEOUT * 1000))}
    )
    frozen = False
    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            _, before = await timed_send(stub, "before")
            assert isinstance(before, api.SendMessageResponse)
            await wait_for_status(stub, before.message.id, {st.DELIVERED})

            os.kill(broker.pid, signal.SIGSTOP)
            frozen = True
            # Sent, never confirmed: in doubt, answered after intake's bound, not the client's 10 s.
            took, doubt = await timed_send(stub, "in-doubt")
            assert isinstance(doubt, grpc.aio.AioRpcError), doubt
            assert doubt.code() == grpc.StatusCode.UNAVAILABLE, doubt
            info = error_info_of(doubt)
            assert info is not None and info.reason == "ACCEPTANCE_IN_DOUBT", doubt.details()
            assert "idempotency_key" in doubt.details()
            doubtful_id = info.metadata["message_id"]
            assert APPEND_TIMEOUT - 0.1 <= took < APPEND_TIMEOUT + 2.0, took

            # The breaker is open: refused before anything is sent, at once, with when to retry.
            took, refused = await timed_send(stub, "refused")
            assert isinstance(refused, grpc.aio.AioRpcError), refused
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
            info = error_info_of(refused)
            assert info is not None and info.reason == "EVENT_LOG_UNAVAILABLE", refused.details()
            assert "NOT accepted" in refused.details()
            delay = retry_delay_of(refused)
            assert delay is not None and 0 < delay <= 8.0
            assert took < 0.5, took
            metrics = await scraped_metrics(platform.metrics_port_of("intake"))
            assert metrics[("smsgw_intake_event_log_breaker_open", frozenset())] == 1
            assert metrics[("smsgw_intake_appends_refused_total", frozenset())] >= 1

            os.kill(broker.pid, signal.SIGCONT)
            frozen = False
            # Back: a client that follows RetryInfo is accepted within seconds.
            started = time.monotonic()
            while True:
                took, after = await timed_send(stub, "after")
                if isinstance(after, api.SendMessageResponse):
                    break
                assert after.code() == grpc.StatusCode.UNAVAILABLE, after
                assert time.monotonic() - started < 30, "not accepted again 30 s after the broker came back"
                await asyncio.sleep(retry_delay_of(after) or 0.5)
            assert time.monotonic() - started < 30
            await wait_for_status(stub, after.message.id, {st.DELIVERED})

            # The in-doubt append did land (the producer still had it): the same key names it.
            await wait_for_status(stub, doubtful_id, {st.DELIVERED})
            _, again = await timed_send(stub, "in-doubt")
            assert isinstance(again, api.SendMessageResponse)
            assert again.duplicate and again.message.id == doubtful_id
            # The refused one was never accepted: its key makes a new message now.
            _, resent = await timed_send(stub, "refused")
            assert isinstance(resent, api.SendMessageResponse)
            assert not resent.duplicate
            await wait_for_status(stub, resent.message.id, {st.DELIVERED})
            metrics = await scraped_metrics(platform.metrics_port_of("intake"))
            assert metrics[("smsgw_intake_event_log_breaker_open", frozenset())] == 0
    finally:
        if frozen:
            os.kill(broker.pid, signal.SIGCONT)
        platform.stop()
        broker.stop()
