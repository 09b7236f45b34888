"""Small client helpers for the end-to-end tests (real gRPC over loopback)."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import grpc
from prometheus_client.parser import text_string_to_metric_families

from smsgw.domain import status as st
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_dev.platform import Platform

ACCOUNT = (("x-smsgw-account", "acct-test"),)


def send_request(to="+14155550100", body="hello", **kwargs) -> api.SendMessageRequest:
    sender = kwargs.pop("sender", None)
    request = api.SendMessageRequest(to=to, body=body, **kwargs)
    if sender:
        setattr(request, "from", sender)
    return request


async def watch_until_final(
    stub: api_grpc.MessagingServiceStub, message_id: str, timeout: float = 30.0, metadata=ACCOUNT
) -> list:
    statuses = []
    async with asyncio.timeout(timeout):
        async for update in stub.WatchMessage(api.WatchMessageRequest(id=message_id), metadata=metadata):
            statuses.append(update.message)
    return statuses


async def wait_for_status(stub, message_id: str, wanted: set[int], timeout: float = 60.0, metadata=ACCOUNT):
    """Polls GetMessage until the status is one of `wanted` (bounded by `timeout`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    message = None
    while loop.time() < deadline:
        try:
            message = await stub.GetMessage(api.GetMessageRequest(id=message_id), metadata=metadata, timeout=5)
            if message.status in wanted:
                return message
        except grpc.aio.AioRpcError as error:
            if error.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ):
                raise
        await asyncio.sleep(0.2)
    raise AssertionError(f"{message_id} did not reach {sorted(map(st.status_name, wanted))}; last: {message}")


async def updates_to_expect(stub, message_ids, metadata=ACCOUNT, tries: int = 100) -> Counter[tuple[str, int]]:
    """(message id, status after it) of every event in the histories of delivered messages,
    counted: the updates a watch of them must send, each exactly once (an event that changes a
    message is one update). Usually QUEUED, SENDING, SENT, DELIVERED; but a receipt that
    overtakes the submit's result goes from SENDING to DELIVERED (never SENT), and the
    CarrierAccepted folded after it is a second update at DELIVERED, as CI's load showed. So
    each history is read once it holds its CarrierAccepted (polled: tries × 0.1 s at most)."""
    expected: Counter[tuple[str, int]] = Counter()
    for message_id in message_ids:
        for _ in range(tries):
            request = api.GetMessageHistoryRequest(id=message_id)
            history = await stub.GetMessageHistory(request, metadata=metadata)
            if any(entry.event.HasField("carrier_accepted") for entry in history.entries):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{message_id}: no CarrierAccepted in its history after {tries * 0.1:.0f} s")
        expected.update((message_id, entry.status_after) for entry in history.entries)
    return expected


async def messages_to(stub, to: str, metadata=ACCOUNT, tries: int = 100) -> list:
    """ListMessages for `to`, polled until something is there (bounded: tries × 0.1 s); [] if never."""
    for _ in range(tries):
        listed = await stub.ListMessages(api.ListMessagesRequest(to=to, page_size=10), metadata=metadata)
        if listed.messages:
            return list(listed.messages)
        await asyncio.sleep(0.1)
    return []


def smsc_carrier_at(max_tps: float, **settings: object) -> type[Platform]:
    """A Platform whose SMSC simulator carrier (smsc-sim) has a contracted rate of `max_tps`
    (and any other of its settings given, e.g. `window`)."""

    class Throttled(Platform):
        def carriers(self) -> list[dict]:
            return [dict(c, max_tps=max_tps, **settings) if c["name"] == "smsc-sim" else c for c in super().carriers()]

    return Throttled


async def smsc_submitted(platform: Platform) -> list[dict]:
    """Every submit_sm the SMSC simulator received, in order (its control API's /submitted)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{platform.smsc_control_port}/submitted") as response:
            return await response.json()


async def scraped_metrics(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of a service's /metrics, read with prometheus_client's parser."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
