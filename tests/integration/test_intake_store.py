"""intake answers from the message store, fed by its projector (its one reader of the events
topic): what it keeps in memory is bounded, and what the store holds survives a restart."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import grpc
import pytest

from smsgw.domain import status as st
from smsgw.grpcx.errors import error_info_of
from smsgw.grpcx.resume import fell_behind_cursor, resuming
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.conftest import start_platform
from tests.integration.helpers import send_request, updates_to_expect, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def _ended_for_falling_behind(call, take) -> str:
    """Reads `call` (handing each update to `take`) until the server ends it; asserts it ended for
    falling behind, with a clear status, and returns the cursor it carried."""
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async with asyncio.timeout(60):
            while (update := await call.read()) is not grpc.aio.EOF:
                take(update)
    error = ended.value
    info = error_info_of(error)
    assert info is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert info.reason == "WATCH_FELL_BEHIND" and info.metadata["error_code"] == "300"
    assert info.metadata["queue_size"] and "open it again with metadata.cursor" in error.details()
    assert fell_behind_cursor(error) == info.metadata["cursor"] != ""
    return info.metadata["cursor"]


async def test_a_watch_that_falls_behind_is_ended_with_its_cursor_and_resumes_missing_nothing(broker, tmp_path):
    # A queue of 4 updates per stream: a batch of 30 messages overflows it at once. WatchMessages
    # first, then WatchMessageBatches on the same platform: the same end, the same resumption.
    platform = await start_platform(broker, tmp_path, "behind", extra_env={"SMSGW_WATCH_QUEUE_SIZE": "4"})
    account = (("x-smsgw-account", "acct-behind"),)

    async def overflow_then_resume(stub, method: str, open_watch, updates_of) -> None:
        ends: list[str] = []
        received: list[tuple[str, int]] = []

        def take(response) -> None:
            received.extend((u.message.id, u.message.status) for u in updates_of(response))

        call = open_watch("")
        assert (await call.read()).cursor  # open, at the end of the log
        batch = await stub.SendBatch(
            api.SendBatchRequest(messages=[send_request(body=f"b{i}") for i in range(30)]), metadata=account
        )
        ids = [r.accepted.message.id for r in batch.results]
        assert all(ids)
        cursor = await _ended_for_falling_behind(call, take)
        before_the_end = len(received)

        def finished() -> set[str]:
            return {i for i, s in received if st.is_final(s)}

        # Opened again from that cursor (by the client library's `resuming`, which does so
        # each time the server ends the stream this way): the rest, each update once.
        responses = resuming(open_watch, cursor, on_fell_behind=ends.append)
        wanted: Counter[tuple[str, int]] = Counter()
        try:
            async with asyncio.timeout(90):
                async for response in responses:
                    take(response)
                    if finished() == set(ids):
                        break
                # Every message final: what the watch sends in all is known now, and the rest of
                # it (a CarrierAccepted folded after the receipt that overtook it) is read too.
                wanted = await updates_to_expect(stub, ids, metadata=account)
                while len(received) < wanted.total():
                    take(await anext(responses))
        except TimeoutError:
            raise AssertionError(
                f"{method}: after 90 s, not final: {sorted(set(ids) - finished())}; received "
                f"{len(received)} of {wanted.total() or '?'} updates, resumed {len(ends)} more times"
            ) from None
        finally:
            await responses.aclose()
        assert {s for _, s in wanted} >= {st.QUEUED, st.SENDING, st.DELIVERED}
        assert before_the_end < wanted.total()  # it was ended before the end of the traffic
        # Every update once: none missing, none twice.
        got = Counter(received)
        assert got == wanted, f"missing {sorted((wanted - got).elements())}, extra {sorted((got - wanted).elements())}"
        # Each end the client saw, it resumed from; the server logged each. The last stream may
        # be ended too, after it sent the client everything it waited for (its queue filled
        # meanwhile): one end more in the log than the client saw, never fewer.
        logged = (
            platform.processes["intake"]
            .log_path.read_text()
            .count(f"{method} of acct-behind fell behind; ended with the cursor to resume from")
        )
        assert 1 + len(ends) <= logged <= 2 + len(ends), (logged, len(ends))

    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            await overflow_then_resume(
                stub,
                "WatchMessages",
                lambda c: stub.WatchMessages(api.WatchMessagesRequest(cursor=c), metadata=account),
                lambda update: [update] if update.event_id else [],
            )
            await overflow_then_resume(
                stub,
                "WatchMessageBatches",
                lambda c: stub.WatchMessageBatches(api.WatchMessageBatchesRequest(cursor=c), metadata=account),
                lambda response: response.updates,
            )
    finally:
        platform.stop()


async def test_a_watch_inbound_that_falls_behind_is_ended_with_its_cursor_and_resumes_missing_nothing(broker, tmp_path):
    # The same bounded queue for WatchInbound (1 here): 24 inbound SMS sent at once overflow it.
    import aiohttp

    platform = await start_platform(broker, tmp_path, "behind-mo", extra_env={"SMSGW_WATCH_QUEUE_SIZE": "1"})
    account = (("x-smsgw-account", "default"),)  # receives the SMS of numbers no account was given
    received: list[str] = []

    def take(update) -> None:
        if update.HasField("message"):
            received.append(update.message.body)

    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            call = stub.WatchInbound(api.WatchInboundRequest(), metadata=account)
            assert (await call.read()).cursor  # open, at the end of the inbound log
            texts = [f"mo {i}" for i in range(24)]
            async with aiohttp.ClientSession() as http:

                async def handset_sends(text: str) -> None:
                    body = {"from": "+14155550190", "to": "+14155550000", "text": text}
                    async with http.post(f"http://127.0.0.1:{platform.smsc_control_port}/mo", json=body) as response:
                        assert response.status == 200

                # All at once: they reach intake's inbound reader in a few batches, each handed to
                # the stream's queue in one go.
                await asyncio.gather(*(handset_sends(text) for text in texts))
            cursor = await _ended_for_falling_behind(call, take)
            assert len(received) < len(texts)
            ends: list[str] = []
            updates = resuming(
                lambda c: stub.WatchInbound(api.WatchInboundRequest(cursor=c), metadata=account),
                cursor,
                on_fell_behind=ends.append,
            )
            async with asyncio.timeout(60):
                async for update in updates:
                    take(update)
                    if len(received) >= len(texts):
                        break
            await updates.aclose()
        assert sorted(received) == sorted(texts), received
        assert len(received) == len(set(received)), "a message was delivered twice"
        # As above: the last stream may be ended after it sent the client all it waited for.
        logged = (
            platform.processes["intake"]
            .log_path.read_text()
            .count("WatchInbound of default fell behind; ended with the cursor")
        )
        assert 1 + len(ends) <= logged <= 2 + len(ends), (logged, len(ends))
    finally:
        platform.stop()


async def test_watch_inbound_resumes_from_its_cursor_after_intake_restarts_reading_the_log(broker, tmp_path):
    # intake keeps no inbound message in memory: what a cursor missed is read from the log.
    import aiohttp

    platform = await start_platform(broker, tmp_path, "resume-mo")
    account = (("x-smsgw-account", "default"),)
    texts = [f"while away {i}" for i in range(3)]
    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            call = stub.WatchInbound(api.WatchInboundRequest(), metadata=account)
            cursor = (await call.read()).cursor  # at the end of the inbound log
            async with aiohttp.ClientSession() as http:
                for text in texts:
                    body = {"from": "+14155550191", "to": "+14155550000", "text": text}
                    async with http.post(f"http://127.0.0.1:{platform.smsc_control_port}/mo", json=body) as response:
                        assert response.status == 200
            seen = []
            async with asyncio.timeout(60):
                while len(seen) < len(texts):  # the first stream sees them live: they are in the log
                    update = await call.read()
                    if update.HasField("message"):
                        seen.append(update.message.body)
            call.cancel()
        await platform.restart("intake", hard=True, timeout=120)
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            resumed = stub.WatchInbound(api.WatchInboundRequest(cursor=cursor), metadata=account)
            assert (await resumed.read()).cursor
            replayed = []
            async with asyncio.timeout(60):
                while len(replayed) < len(texts):
                    update = await resumed.read()
                    if update.HasField("message"):
                        replayed.append(update.message.body)
            resumed.cancel()
        # Each once, in the order the log has them (one subscriber: one partition), as seen live;
        # the SMSC and the adapter may reorder three SMS sent at once, so not necessarily as sent.
        assert replayed == seen and sorted(seen) == sorted(texts)
    finally:
        platform.stop()


async def test_after_a_restart_intake_answers_from_its_store_and_still_counts_todays_messages(broker, tmp_path):
    platform = await start_platform(
        broker, tmp_path, "restart-store", extra_env={"SMSGW_DEFAULT_MESSAGES_PER_DAY": "3"}
    )
    account = (("x-smsgw-account", "acct-quota"),)
    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            ids = [(await stub.SendMessage(send_request(body=f"q{i}"), metadata=account)).message.id for i in range(3)]
            # Time-ordered ids (UUIDv7): one after another, they sort as they were accepted.
            assert [uuid.UUID(i).version for i in ids] == [7, 7, 7] and ids == sorted(ids)
            for message_id in ids:
                await wait_for_status(stub, message_id, {st.DELIVERED}, metadata=account)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.SendMessage(send_request(body="fourth"), metadata=account)
            assert error_info_of(refused.value).reason == "DAILY_QUOTA_EXCEEDED"

        # kill -9: the store (SQLite in intake's state directory) stays, the projector resumes
        # from its checkpoint; today's three messages are read back from the store, not the log.
        await platform.restart("intake", hard=True, timeout=120)
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            for message_id in ids:
                message = await stub.GetMessage(api.GetMessageRequest(id=message_id), metadata=account)
                assert message.status == st.DELIVERED
                history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=message_id), metadata=account)
                assert [h.status_after for h in history.entries][-1] == st.DELIVERED
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.SendMessage(send_request(body="fourth, after the restart"), metadata=account)
            assert error_info_of(refused.value).reason == "DAILY_QUOTA_EXCEEDED"
        log = platform.processes["intake"].log_path.read_text()
        assert "3 messages accepted today (UTC) counted against limits" in log
    finally:
        platform.stop()
