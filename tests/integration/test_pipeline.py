"""End to end: the four services as processes, a real broker, real gRPC, real SMPP.

Given the platform is running, when a client sends a message, then it travels
QUEUED -> SENDING -> SENT -> DELIVERED and its history is the event log.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from smsgw.domain import status as st
from smsgw.grpcx.errors import error_info_of
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.integration.helpers import (
    ACCOUNT,
    messages_to,
    scraped_metrics,
    send_request,
    updates_to_expect,
    wait_for_status,
    watch_until_final,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
async def stub(platform):
    async with grpc.aio.insecure_channel(platform.intake_address) as channel:
        yield api_grpc.MessagingServiceStub(channel)


async def test_message_travels_through_all_four_services_to_delivered(stub):
    reply = await stub.SendMessage(send_request(body="hello"), metadata=ACCOUNT)
    assert reply.message.status == st.QUEUED and reply.message.id
    updates = await watch_until_final(stub, reply.message.id)
    # The first update is the state when the watch began (QUEUED, or later if the pipeline was quicker);
    # each later update is one change, and the last carries every transition.
    statuses = [u.status for u in updates]
    assert statuses == sorted(statuses) and statuses[-1] == st.DELIVERED
    assert [t.status for t in updates[-1].transitions] == [st.QUEUED, st.SENDING, st.SENT, st.DELIVERED]
    final = updates[-1]
    assert final.carrier == "smsc-sim" and final.carrier_message_id
    assert (
        final.queued_at.ToDatetime()
        <= final.sending_at.ToDatetime()
        <= final.sent_at.ToDatetime()
        <= final.delivered_at.ToDatetime()
    )

    history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=reply.message.id), metadata=ACCOUNT)
    kinds = [e.event.type.removeprefix("smsgw.v1.") for e in history.entries]
    # A first submit that the carrier answers at once is recorded by its outcome alone
    # (CarrierAccepted); MessageSubmitted appears only for attempts that did not end at once.
    assert kinds == ["MessageQueued", "MessageRouted", "CarrierAccepted", "DeliveryReported"]
    producers = {e.event.producer.split("/")[0] for e in history.entries}
    assert producers == {"intake", "routing", "carrier-adapter", "receipt"}
    # Sequence 3 belongs to the attempt, written only when the attempt is not answered at once.
    assert [e.event.sequence for e in history.entries] == [1, 2, 4, 5]
    assert all(e.event.account_id == "acct-test" and e.event.trace_context.get("traceparent") for e in history.entries)
    assert history.entries[-1].status_after == st.DELIVERED


async def test_the_messages_validity_reaches_the_smsc_as_its_validity_period(platform, stub):
    from google.protobuf import duration_pb2

    request = send_request(body="valid for ten minutes", validity_period=duration_pb2.Duration(seconds=600))
    reply = await stub.SendMessage(request, metadata=ACCOUNT)
    await wait_for_status(stub, reply.message.id, {st.SENT, st.DELIVERED})
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{platform.smsc_control_port}/submitted") as response:
            submitted = [
                s for s in await response.json() if bytes.fromhex(s["user_data_hex"]) == b"valid for ten minutes"
            ]
    assert len(submitted) == 1
    expires = reply.message.expires_at.ToDatetime(tzinfo=UTC)
    # SMPP absolute time in UTC: YYMMDDhhmmss, tenths, 00 quarter-hours, '+'.
    assert submitted[0]["validity_period"] == expires.strftime("%y%m%d%H%M%S") + f"{expires.microsecond // 100_000}00+"


async def test_multipart_unicode_message_is_delivered_when_every_part_is(stub):
    body = "Grüße 😀 " * 12
    reply = await stub.SendMessage(send_request(body=body), metadata=ACCOUNT)
    assert reply.message.segments == 2 and reply.message.encoding == 2  # UCS2
    final = await wait_for_status(stub, reply.message.id, {st.DELIVERED})
    assert len(final.carrier_message_ids) == 2 and final.body == body


async def test_cli_send_prints_id_and_each_status_then_history(platform):
    # The shared platform is plaintext (test_tls.py runs the CLI over TLS, as make run does).
    cli = [sys.executable, "-m", "smsgw.cli", "--server", platform.intake_address, "--plaintext"]
    sent = await asyncio.to_thread(
        subprocess.run,
        cli + ["send", "--to", "+14155550100", "--body", "hi"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    lines = sent.stdout.strip().splitlines()
    message_id = lines[0].split()[0]
    assert [line.split()[1] for line in lines[1:]] == ["QUEUED", "SENDING", "SENT", "DELIVERED"]
    history = await asyncio.to_thread(
        subprocess.run, cli + ["history", message_id], capture_output=True, text=True, timeout=60
    )
    assert history.returncode == 0, history.stderr
    assert [line.split()[2] for line in history.stdout.strip().splitlines()] == [
        "MessageQueued",
        "MessageRouted",
        "CarrierAccepted",
        "DeliveryReported",
    ]
    bad = await asyncio.to_thread(
        subprocess.run, cli + ["send", "--to", "12", "--body", "x"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and "INVALID_PHONE_NUMBER" in bad.stderr and "to:" in bad.stderr


def _unknown_field_request() -> bytes:
    # A valid request plus field 99 (varint 1): what a newer or mistaken client would send.
    return send_request().SerializeToString() + bytes([99 << 3 & 0x7F | 0x80, 99 >> 4, 1])


@pytest.mark.parametrize(
    "request_bytes, field, reason",
    [
        (send_request(to="+1415").SerializeToString(), "to", "INVALID_PHONE_NUMBER"),
        (send_request(to="hello").SerializeToString(), "to", "INVALID_PHONE_NUMBER"),
        (send_request(to="").SerializeToString(), "to", "MISSING_FIELD"),
        (send_request(body="").SerializeToString(), "body", "EMPTY_BODY"),
        (send_request(body="x" * 1531).SerializeToString(), "body", "BODY_TOO_LONG"),
        (_unknown_field_request(), "SendMessageRequest", "UNKNOWN_FIELD"),
    ],
    ids=["short-number", "not-a-number", "missing-to", "empty-body", "body-over-limit", "unknown-field"],
)
async def test_bad_input_gets_invalid_argument_with_field_and_reason(platform, stub, request_bytes, field, reason):
    accepted = await stub.SendMessage(send_request(body="accepted before the bad one"), metadata=ACCOUNT)
    async with grpc.aio.insecure_channel(platform.intake_address) as channel:
        raw = channel.unary_unary(
            "/smsgw.v1.MessagingService/SendMessage",
            request_serializer=lambda b: b,
            response_deserializer=api.SendMessageResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await raw(request_bytes, metadata=ACCOUNT)
    error = failure.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info_of(error)
    assert info.reason == reason and info.domain == "smsgw.io"
    assert info.metadata["field"] == field and info.metadata["error_code"] == "100"
    assert error.details().startswith(field if field != "SendMessageRequest" else "request")
    # What was accepted before is not disturbed.
    assert (await wait_for_status(stub, accepted.message.id, {st.DELIVERED})).status == st.DELIVERED


async def test_repeated_idempotency_key_returns_the_first_result(stub):
    key = f"order-{datetime.now().timestamp()}"
    first = await stub.SendMessage(send_request(body="once", idempotency_key=key), metadata=ACCOUNT)
    again = await stub.SendMessage(send_request(body="once", idempotency_key=key), metadata=ACCOUNT)
    assert again.duplicate and again.message.id == first.message.id
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.SendMessage(send_request(body="different", idempotency_key=key), metadata=ACCOUNT)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info_of(failure.value).reason == "IDEMPOTENCY_KEY_REUSED"
    await wait_for_status(stub, first.message.id, {st.DELIVERED})
    listed = await stub.ListMessages(api.ListMessagesRequest(page_size=1000), metadata=ACCOUNT)
    assert sum(1 for m in listed.messages if m.idempotency_key == key) == 1


async def test_batch_reports_each_item(stub):
    batch = api.SendBatchRequest(messages=[send_request(body="b1"), send_request(to="+1"), send_request(body="b3")])
    reply = await stub.SendBatch(batch, metadata=ACCOUNT)
    outcomes = [r.WhichOneof("outcome") for r in reply.results]
    assert outcomes == ["accepted", "error", "accepted"]
    assert reply.results[1].error.reason == "INVALID_PHONE_NUMBER"
    assert reply.results[1].error.field == "messages[1].to"
    assert reply.results[1].error.grpc_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    for result in (reply.results[0], reply.results[2]):
        await wait_for_status(stub, result.accepted.message.id, {st.DELIVERED})
    with pytest.raises(grpc.aio.AioRpcError) as too_big:
        await stub.SendBatch(api.SendBatchRequest(messages=[send_request()] * 1001), metadata=ACCOUNT)
    assert error_info_of(too_big.value).reason == "BATCH_TOO_LARGE"


async def test_send_stream_answers_each_message_in_order_once_it_is_in_the_log(stub):
    requests = [
        api.SendStreamRequest(message=send_request(body=f"stream {i}"), client_ref=f"ref-{i}") for i in range(60)
    ]
    requests[7] = api.SendStreamRequest(message=send_request(to="+1"), client_ref="bad number")
    requests[9] = api.SendStreamRequest(client_ref="no message")
    key = f"stream-key-{datetime.now().timestamp()}"
    requests[20] = api.SendStreamRequest(message=send_request(body="keyed", idempotency_key=key), client_ref="k1")
    requests[40] = api.SendStreamRequest(message=send_request(body="keyed", idempotency_key=key), client_ref="k2")

    responses = [response async for response in stub.SendStream(iter(requests), metadata=ACCOUNT)]

    assert [r.sequence for r in responses] == list(range(60))
    assert [r.client_ref for r in responses] == [r.client_ref for r in requests]
    # A bad message is answered with its own error; the stream goes on.
    assert responses[7].error.reason == "INVALID_PHONE_NUMBER" and responses[7].error.field == "message.to"
    assert responses[7].error.grpc_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert responses[9].error.reason == "MISSING_FIELD" and responses[9].error.field == "message"
    # The same idempotency key is the same message (the two may be in flight together, so the
    # second is not always flagged `duplicate`; it is never a second message).
    assert responses[40].accepted.message.id == responses[20].accepted.message.id
    accepted = {r.accepted.message.id for r in responses if r.WhichOneof("outcome") == "accepted"}
    assert len(accepted) == 57  # 60, less two errors, less the repeated key
    # Accepted means in the log: every one is delivered.
    await asyncio.gather(*(wait_for_status(stub, message_id, {st.DELIVERED}) for message_id in accepted))


async def test_list_messages_filters_and_pages(stub):
    account = (("x-smsgw-account", f"acct-list-{int(datetime.now().timestamp() * 1000)}"),)
    ids = []
    for i in range(7):
        reply = await stub.SendMessage(send_request(to=f"+1415555010{i % 2}", body=f"m{i}"), metadata=account)
        ids.append(reply.message.id)
    for message_id in ids:
        await wait_for_status(stub, message_id, {st.DELIVERED}, metadata=account)
    seen, token = [], ""
    while True:
        page = await stub.ListMessages(api.ListMessagesRequest(page_size=3, page_token=token), metadata=account)
        seen += [m.id for m in page.messages]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    to_one = await stub.ListMessages(
        api.ListMessagesRequest(to="+14155550101", statuses=[st.DELIVERED]), metadata=account
    )
    assert len(to_one.messages) == 3
    assert (await stub.ListMessages(api.ListMessagesRequest(statuses=[st.FAILED]), metadata=account)).messages == []


async def test_scheduled_message_can_be_canceled_and_a_delivered_one_cannot(stub):
    request = send_request(body="later")
    request.send_at.FromDatetime(datetime.now(UTC) + timedelta(minutes=10))
    scheduled = await stub.SendMessage(request, metadata=ACCOUNT)
    assert scheduled.message.status == st.SCHEDULED
    canceled = await stub.CancelMessage(api.CancelMessageRequest(id=scheduled.message.id), metadata=ACCOUNT)
    assert canceled.status == st.CANCELED and canceled.canceled_at.seconds > 0

    delivered = await stub.SendMessage(send_request(body="now"), metadata=ACCOUNT)
    await wait_for_status(stub, delivered.message.id, {st.DELIVERED})
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.CancelMessage(api.CancelMessageRequest(id=delivered.message.id), metadata=ACCOUNT)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info_of(failure.value).reason == "MESSAGE_NOT_CANCELABLE"


async def test_scheduled_message_is_sent_when_its_time_comes(stub):
    request = send_request(body="soon")
    request.send_at.FromDatetime(datetime.now(UTC) + timedelta(seconds=2))
    reply = await stub.SendMessage(request, metadata=ACCOUNT)
    assert reply.message.status == st.SCHEDULED
    final = await wait_for_status(stub, reply.message.id, {st.DELIVERED}, timeout=30)
    assert final.sending_at.ToDatetime() >= request.send_at.ToDatetime()


async def test_unknown_message_is_not_found(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetMessage(api.GetMessageRequest(id="no-such-id"), metadata=ACCOUNT)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info_of(failure.value).reason == "MESSAGE_NOT_FOUND"


async def test_every_service_exposes_health_and_reflection(platform):
    for name in ("intake", "routing", "carrier-adapter", "receipt"):
        async with grpc.aio.insecure_channel(platform.address(name)) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING, name
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            services = [s.name async for r in responses for s in r.list_services_response.service]
            assert "grpc.health.v1.Health" in services, name
            if name == "intake":
                assert "smsgw.v1.MessagingService" in services


async def test_one_trace_per_message_across_all_services(platform, stub):
    reply = await stub.SendMessage(send_request(body="traced"), metadata=ACCOUNT)
    await wait_for_status(stub, reply.message.id, {st.DELIVERED})
    await asyncio.sleep(0.5)  # spans are written as they end
    spans = [json.loads(line) for line in Path(platform.trace_file).read_text().splitlines() if line.strip()]
    mine = [s for s in spans if s["attributes"].get("smsgw.message_id") == reply.message.id]
    services = {s["resource"]["attributes"]["service.name"] for s in mine}
    assert services == {"intake", "routing", "carrier-adapter", "receipt"}
    assert len({s["context"]["trace_id"] for s in mine}) == 1


async def test_carrier_refusal_is_recorded_on_the_message_as_gateway_error(stub):
    # The simulated SMSC answers ESME_RINVDSTADR for +1415555066x (Platform.fail_pattern).
    reply = await stub.SendMessage(send_request(to="+14155550662", body="refused"), metadata=ACCOUNT)
    final = await wait_for_status(stub, reply.message.id, {st.FAILED})
    assert final.error_code == 500 and final.error_reason == "CARRIER_REJECTED"
    assert "0x0000000B" in final.error_message and final.failed_at.seconds > 0


async def test_content_a_carrier_blocks_fails_at_once_with_its_reason(stub):
    # The simulated SMSC refuses texts with "BLOCKED CONTENT" (ESME_RSUBMITFAIL, 0x45), as a
    # content filter does (Platform.blocked_text_pattern): one attempt, no retry.
    reply = await stub.SendMessage(send_request(body="BLOCKED CONTENT: win a prize"), metadata=ACCOUNT)
    final = await wait_for_status(stub, reply.message.id, {st.FAILED})
    assert final.error_reason == "CARRIER_REJECTED" and "0x00000045" in final.error_message
    history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=reply.message.id), metadata=ACCOUNT)
    kinds = [e.event.WhichOneof("payload") for e in history.entries]
    assert kinds == ["message_queued", "message_routed", "message_failed"], kinds  # no attempt failed, no retry


async def test_a_temporary_fault_at_the_smsc_is_retried_and_the_message_delivered(stub):
    # The simulated SMSC answers ESME_RSYSERR to the first submit of each message to +1415555064x
    # (Platform.flaky_pattern): a fault of the moment, tried again, then taken.
    reply = await stub.SendMessage(send_request(to="+14155550641", body="second time lucky"), metadata=ACCOUNT)
    final = await wait_for_status(stub, reply.message.id, {st.DELIVERED, st.FAILED})
    assert final.status == st.DELIVERED
    history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=reply.message.id), metadata=ACCOUNT)
    failed = [e.event.submit_attempt_failed for e in history.entries if e.event.HasField("submit_attempt_failed")]
    assert [(f.attempt, f.reason, f.in_doubt) for f in failed] == [(1, "SMSC_TEMPORARY_ERROR", False)]
    assert "ESME_RSYSERR" in failed[0].detail
    submitted = [e.event.message_submitted.attempt for e in history.entries if e.event.HasField("message_submitted")]
    assert submitted == [1, 2]


@pytest.mark.parametrize("batched", [False, True], ids=["WatchMessages", "WatchMessageBatches"])
async def test_watch_messages_resumes_from_cursor_without_gap_or_duplicate(stub, batched):
    account = (("x-smsgw-account", f"acct-watch-{'b' if batched else 'u'}{int(datetime.now().timestamp() * 1000)}"),)
    received: list[tuple[str, int]] = []
    batch_sizes: list[int] = []
    starts: list[str] = []
    cursor = ""

    def responses(call):
        """(cursor, updates) per response: an update is one response of WatchMessages; a
        WatchMessageBatches response holds up to max_updates, and only it has a cursor."""
        if not batched:
            return ((update.cursor, [update] if update.event_id else []) async for update in call)
        return ((batch.cursor, list(batch.updates)) async for batch in call)

    def watch(request_cursor: str, statuses=()):
        if batched:
            request = api.WatchMessageBatchesRequest(cursor=request_cursor, statuses=statuses, max_updates=3)
            return stub.WatchMessageBatches(request, metadata=account)
        return stub.WatchMessages(api.WatchMessagesRequest(cursor=request_cursor, statuses=statuses), metadata=account)

    async def read(limit: int, timeout: float) -> None:
        nonlocal cursor
        call = watch(cursor)
        try:
            async with asyncio.timeout(timeout):
                async for position, updates in responses(call):
                    cursor = position
                    if not updates:
                        starts.append(position)  # a stream's starting position
                    else:
                        batch_sizes.append(len(updates))
                        assert not batched or not any(u.cursor for u in updates), "a batch's updates carry no cursor"
                    received.extend((update.message.id, update.message.status) for update in updates)
                    if len(received) >= limit:
                        return
        finally:
            call.cancel()  # cut the stream, as a dropped connection would

    reader = asyncio.create_task(read(limit=5, timeout=30))
    await asyncio.sleep(0.3)  # the stream is open and has its starting cursor
    ids = [(await stub.SendMessage(send_request(body=f"w{i}"), metadata=account)).message.id for i in range(6)]
    await reader
    assert len(received) >= 5 and cursor
    # Everything happens while nobody watches.
    for message_id in ids:
        await wait_for_status(stub, message_id, {st.DELIVERED}, metadata=account)
    expected = await updates_to_expect(stub, ids, metadata=account)
    try:
        await read(limit=expected.total(), timeout=30)
    except TimeoutError:
        raise AssertionError(
            f"resumed stream incomplete after 30 s: {len(received)} of {expected.total()} updates; "
            f"missing {sorted((expected - Counter(received)).elements())}; "
            f"extra {sorted((Counter(received) - expected).elements())}"
        ) from None

    # Every update once: no gap, no duplicate.
    assert Counter(received) == expected
    assert expected.total() >= 6 * 3 and {s for _, s in expected} >= {st.QUEUED, st.SENDING, st.DELIVERED}
    # The resumed read came from the store, where everything was waiting: full batches of 3.
    assert max(batch_sizes) == (3 if batched else 1), batch_sizes

    if batched:
        # max_updates=1: one update a response, and still no cursor but the response's.
        ones = stub.WatchMessageBatches(
            api.WatchMessageBatchesRequest(cursor=starts[0], max_updates=1), metadata=account
        )
        responses = [await ones.read() for _ in range(4)]
        ones.cancel()
        assert [len(r.updates) for r in responses] == [0, 1, 1, 1], responses
        assert all(r.cursor for r in responses) and not any(u.cursor for r in responses for u in r.updates)

    delivered_only = watch("", statuses=[st.DELIVERED])
    first = await delivered_only.read()
    assert first.cursor and not (first.updates if batched else first.event_id)  # the starting position comes first
    delivered_only.cancel()


@pytest.mark.parametrize("max_updates", [-1, -500])
async def test_a_negative_max_updates_is_refused_naming_the_field(stub, max_updates):
    call = stub.WatchMessageBatches(api.WatchMessageBatchesRequest(max_updates=max_updates), metadata=ACCOUNT)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call.read()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info_of(refused.value)
    assert info.reason == "INVALID_ARGUMENT" and info.metadata["field"] == "max_updates", info
    assert f"not {max_updates}" in refused.value.details()


async def _handset_sends(platform, sender: str, to: str, text: str) -> None:
    """The simulated SMSC delivers an SMS from a handset (deliver_sm, no receipt bit)."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{platform.smsc_control_port}/mo", json={"from": sender, "to": to, "text": text}
        ) as response:
            assert response.status == 200


async def _next_inbound(call, timeout: float = 20.0):
    async with asyncio.timeout(timeout):
        while True:
            update = await call.read()
            if update.HasField("message"):
                return update.message


async def test_an_mms_from_a_handset_reaches_the_account_with_its_media(platform, stub):
    # The Twilio simulator posts a signed incoming-message webhook (MediaUrl0, MediaUrl1) to
    # the adapter; the media URLs travel through receipt to intake's inbound view.
    import aiohttp

    account = (("x-smsgw-account", "default"),)
    inbound = stub.WatchInbound(api.WatchInboundRequest(), metadata=account)
    await inbound.read()  # the starting cursor: the stream is live
    media = ["https://media.example.invalid/cat.jpg", "https://media.example.invalid/dog.png"]
    form = aiohttp.FormData(
        [("From", "+14155550178"), ("To", "+14155550770"), ("Body", "look"), *(("MediaUrl", url) for url in media)]
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{platform.twilio_port}/_sim/inbound", data=form) as response:
            assert response.status == 200 and (await response.json())["status"] == 200
    message = await _next_inbound(inbound)
    assert getattr(message, "from") == "+14155550178" and message.body == "look"
    assert message.carrier == "twilio-sim" and list(message.media_urls) == media
    inbound.cancel()


async def test_stop_and_start_from_a_handset_change_what_intake_accepts(platform, stub):
    subscriber = "+14155550177"
    ours = "+14155550000"  # the platform's default sender number
    account = (("x-smsgw-account", "default"),)
    inbound = stub.WatchInbound(api.WatchInboundRequest(), metadata=account)
    await inbound.read()  # the starting cursor: the stream is live

    await _handset_sends(platform, subscriber, ours, "Stop")
    stop = await _next_inbound(inbound)
    assert getattr(stop, "from") == subscriber and stop.to == ours and stop.keyword == "STOP"

    async def send():
        return await stub.SendMessage(send_request(to=subscriber, body="offer", sender=ours), metadata=account)

    for _ in range(50):  # the opt-out reaches intake's read model within moments (bounded wait)
        try:
            await send()
        except grpc.aio.AioRpcError as error:
            refused = error
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("a send to an opted-out recipient was still accepted")
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info_of(refused)
    assert info.reason == "RECIPIENT_OPTED_OUT" and info.metadata["field"] == "to"
    assert "replied STOP" in refused.details() and "START" in refused.details()
    # Another of the account's numbers may still write to them (STOP is per number).
    other = await stub.SendMessage(send_request(to=subscriber, body="x", sender="+14155550001"), metadata=account)
    assert other.message.status == st.QUEUED

    await _handset_sends(platform, subscriber, ours, "START")
    assert (await _next_inbound(inbound)).keyword == "START"
    for _ in range(50):
        try:
            accepted = await send()
            break
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("START did not lift the opt-out")
    assert accepted.message.status == st.QUEUED
    inbound.cancel()


async def test_help_gets_the_accounts_reply_and_ordinary_replies_are_streamed(platform, stub):
    subscriber = "+14155550178"
    account = (("x-smsgw-account", "default"),)
    inbound = stub.WatchInbound(api.WatchInboundRequest(), metadata=account)
    await inbound.read()
    await _handset_sends(platform, subscriber, "+14155550000", "see you at 6")
    ordinary = await _next_inbound(inbound)
    assert ordinary.body == "see you at 6" and ordinary.keyword == "" and ordinary.carrier == "smsc-sim"
    await _handset_sends(platform, subscriber, "+14155550000", "help")
    assert (await _next_inbound(inbound)).keyword == "HELP"
    inbound.cancel()
    listed = await messages_to(stub, subscriber, account)
    (reply,) = listed
    assert "STOP" in reply.body and getattr(reply, "from") == "+14155550000"
    await wait_for_status(stub, reply.id, {st.DELIVERED}, metadata=account)


async def test_undeliverable_receipt_ends_undelivered_with_the_carriers_reason(stub):
    reply = await stub.SendMessage(send_request(to="+14155550681", body="to a dead phone"), metadata=ACCOUNT)
    final = await wait_for_status(stub, reply.message.id, {st.UNDELIVERED})
    assert final.error_reason == "CARRIER_UNDELIVERABLE" and "UNDELIV" in final.error_message
    assert final.sent_at.seconds > 0 and final.undelivered_at.seconds > 0


async def test_a_receipt_that_never_comes_expires_per_carrier_policy(stub):
    # +1415555067x routes to smsc-sim-nodlr, whose receipts never come; its policy expires after 3 s.
    reply = await stub.SendMessage(send_request(to="+14155550671", body="no receipt"), metadata=ACCOUNT)
    await wait_for_status(stub, reply.message.id, {st.SENT}, timeout=20)
    final = await wait_for_status(stub, reply.message.id, {st.EXPIRED}, timeout=30)
    history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=reply.message.id), metadata=ACCOUNT)
    last = history.entries[-1].event
    assert last.delivery_reported.carrier_state == "NO_RECEIPT" and final.carrier == "smsc-sim-nodlr"


async def test_receipt_for_an_unknown_id_is_reported_as_orphan_and_breaks_nothing(platform, stub, broker):
    import aiohttp
    from aiokafka import AIOKafkaConsumer

    from smsgw.events.topics import RECEIPT_ORPHANS
    from smsgw.v1 import carrier_pb2 as cp

    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{platform.smsc_control_port}/dlr", json={"id": "987654321"}) as r:
            assert r.status == 200
    consumer = AIOKafkaConsumer(
        platform.topic_prefix + RECEIPT_ORPHANS.name, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        orphan = None
        async with asyncio.timeout(30):
            while orphan is None:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        report = cp.CarrierReport.FromString(record.value)
                        if report.carrier_message_id == "987654321":
                            orphan = report
    finally:
        await consumer.stop()
    assert orphan.carrier == "smsc-sim" and orphan.receipt_received.carrier_state == "DELIVRD"
    # Counted: held first (its submit might still come), then declared an orphan.
    metrics = await scraped_metrics(platform.metrics_port_of("receipt"))
    carrier = frozenset({("carrier", "smsc-sim")})
    assert metrics[("smsgw_receipts_held_early_total", carrier)] >= 1
    assert metrics[("smsgw_receipts_orphaned_total", carrier)] >= 1
    # The pipeline is unharmed.
    reply = await stub.SendMessage(send_request(body="after the orphan"), metadata=ACCOUNT)
    await wait_for_status(stub, reply.message.id, {st.DELIVERED})


async def test_mms_to_a_carrier_without_mms_is_refused_at_intake_and_tags_filter_lists(stub):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SendMessage(send_request(body="pic", media_urls=["https://example.com/cat.jpg"]), metadata=ACCOUNT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info_of(refused.value)
    assert info.metadata["field"] == "media_urls" and info.metadata["detail"] == "MMS_NOT_SUPPORTED"
    tag = f"campaign-{int(datetime.now().timestamp() * 1000)}"
    tagged = await stub.SendMessage(send_request(body="tagged", tags=[tag]), metadata=ACCOUNT)
    await stub.SendMessage(send_request(body="untagged"), metadata=ACCOUNT)
    listed = await stub.ListMessages(api.ListMessagesRequest(tag=tag), metadata=ACCOUNT)
    assert [m.id for m in listed.messages] == [tagged.message.id] and list(listed.messages[0].tags) == [tag]


async def test_a_message_routed_to_an_android_phone_is_sent_and_delivered_by_it(platform, stub):
    # +1650555xxxx routes to carrier "phones": the simulated Android phone connected over DeviceGatewayService.
    account = (("x-smsgw-account", "default"),)
    reply = await stub.SendMessage(send_request(to="+16505550123", body="via a phone"), metadata=account)
    updates = await watch_until_final(stub, reply.message.id, metadata=account)
    # The stream starts with the state at subscription (maybe already SENDING); the transitions hold all.
    assert [t.status for t in updates[-1].transitions] == [st.QUEUED, st.SENDING, st.SENT, st.DELIVERED]
    assert [u.status for u in updates][-1] == st.DELIVERED
    assert updates[-1].carrier == "phones" and updates[-1].carrier_message_id.startswith("sim-phone-1:")


async def test_signed_status_and_inbound_webhooks_reach_the_account(platform, stub):
    """Per-message URL and the account's default URL; signatures verified with the documented code."""
    from aiohttp import web

    from smsgw_dev.platform import HOOKS_ACCOUNT, HOOKS_NUMBER, WEBHOOK_SECRET
    from smsgw_receipt.webhooks.signing import verify

    received: dict[str, list[dict]] = {"message": [], "account": []}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        verify(WEBHOOK_SECRET, request.headers, body)  # raises on a forgery or a replay
        received[request.match_info["which"]].append(json.loads(body))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{which}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", platform.account_webhook_port).start()
    try:
        account = (("x-smsgw-account", HOOKS_ACCOUNT),)
        url = f"http://127.0.0.1:{platform.account_webhook_port}/message"
        own = await stub.SendMessage(send_request(body="hooked", status_callback_url=url), metadata=account)
        by_account = await stub.SendMessage(send_request(body="account default"), metadata=account)
        await _handset_sends(platform, "+14155550188", HOOKS_NUMBER, "reply to you")

        async with asyncio.timeout(30):
            while not (
                len([h for h in received["message"] if h["message"]["id"] == own.message.id]) >= 4
                and len([h for h in received["account"] if h.get("message", {}).get("id") == by_account.message.id])
                >= 4
                and any(h["type"] == "message.inbound" for h in received["account"])
            ):
                await asyncio.sleep(0.1)
    finally:
        await runner.cleanup()

    mine = [h for h in received["message"] if h["message"]["id"] == own.message.id]
    statuses = [h["message"]["status"] for h in mine]
    assert statuses == ["QUEUED", "SENDING", "SENT", "DELIVERED"]
    assert [h["previous_status"] for h in mine] == [None, "QUEUED", "SENDING", "SENT"]
    assert len({h["event_id"] for h in mine}) == 4 and all(h["type"] == "message.status" for h in mine)
    inbound = [h for h in received["account"] if h["type"] == "message.inbound"]
    assert inbound[0]["inbound"]["body"] == "reply to you" and inbound[0]["inbound"]["to"] == HOOKS_NUMBER


async def test_carrier_adapter_exposes_connection_state_and_traffic_as_metrics(platform, stub):
    import aiohttp

    reply = await stub.SendMessage(send_request(body="counted"), metadata=ACCOUNT)
    await wait_for_status(stub, reply.message.id, {st.DELIVERED})
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{platform.metrics_port}/metrics") as response:
            assert response.status == 200
            text = await response.text()
    assert 'smsgw_carrier_bound{carrier="smsc-sim",session="transceiver"} 1.0' in text
    submits = [line for line in text.splitlines() if line.startswith('smsgw_carrier_submits_total{carrier="smsc-sim"}')]
    assert submits and float(submits[0].split()[-1]) >= 1
    assert 'smsgw_carrier_tps{carrier="smsc-sim"}' in text


async def _smsc_drops_on_the_next_submit(platform, *, accept: bool) -> None:
    """The simulated SMSC cuts the connection on the next submit_sm, after taking it (accept) or not."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{platform.smsc_control_port}/drop", json={"after": 0, "accept": accept}
        ) as response:
            assert response.status == 200


async def _history_payloads(stub, message_id: str) -> list:
    history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=message_id), metadata=ACCOUNT)
    return [getattr(e.event, e.event.WhichOneof("payload")) for e in history.entries]


async def test_a_submit_cut_off_in_doubt_is_recorded_and_retried_to_delivered(platform, stub):
    # The SMSC takes the submit_sm and the connection drops before its answer: in doubt. The
    # default carrier retries (at least once) after reconnecting; the history shows both attempts.
    await _smsc_drops_on_the_next_submit(platform, accept=True)
    reply = await stub.SendMessage(send_request(body="cut off"), metadata=ACCOUNT)
    final = await wait_for_status(stub, reply.message.id, {st.DELIVERED})
    assert final.carrier == "smsc-sim"
    payloads = await _history_payloads(stub, reply.message.id)
    attempts = [
        (type(p).__name__, p.attempt)
        for p in payloads
        if type(p).__name__ in ("MessageSubmitted", "SubmitAttemptFailed")
    ]
    assert attempts[:3] == [("MessageSubmitted", 1), ("SubmitAttemptFailed", 1), ("MessageSubmitted", 2)]
    failed = next(p for p in payloads if type(p).__name__ == "SubmitAttemptFailed")
    assert failed.in_doubt and failed.reason == "CONNECTION_LOST" and failed.carrier == "smsc-sim"
    assert failed.retry_in.ToMilliseconds() > 0


async def test_a_carrier_set_to_at_most_once_fails_an_in_doubt_submit_instead_of_resending(platform, stub):
    # smsc-sim-atmostonce (+1415555069x) has in_doubt: "fail".
    await _smsc_drops_on_the_next_submit(platform, accept=True)
    reply = await stub.SendMessage(send_request(to="+14155550691", body="at most once"), metadata=ACCOUNT)
    final = await wait_for_status(stub, reply.message.id, {st.FAILED})
    assert final.carrier == "smsc-sim-atmostonce"
    assert final.error_code == 500 and final.error_reason == "SUBMIT_IN_DOUBT"
    assert "in_doubt policy is 'fail'" in final.error_message
    payloads = await _history_payloads(stub, reply.message.id)
    assert [type(p).__name__ for p in payloads].count("MessageSubmitted") == 1
    failed = next(p for p in payloads if type(p).__name__ == "SubmitAttemptFailed")
    assert failed.in_doubt and not failed.HasField("retry_in")
