"""API keys on the running platform: the account comes from the key, scopes, tenant isolation,
revocation and rotation, the admin audit trail, and a directory that survives a kill -9.

The platform runs as `make run` runs it (SMSGW_AUTH=api-keys, a bootstrap admin key, receipt's
own service key), on each broker; real gRPC over loopback.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from smsgw.domain import status as st
from smsgw.grpcx.errors import error_info_of
from smsgw.v1 import accounts_pb2 as ac
from smsgw.v1 import accounts_pb2_grpc as ac_grpc
from smsgw.v1 import message_pb2 as mp
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_dev.platform import SMPP_ACCOUNTS
from smsgw_dev.simulators.twilio import DEFAULT_AUTH_TOKEN as TWILIO_AUTH_TOKEN
from tests.conftest import start_platform
from tests.integration.helpers import messages_to, send_request, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
STREAM_CAP = 6


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture(scope="module")
async def keyed(broker, tmp_path_factory):
    platform = await start_platform(
        broker,
        tmp_path_factory.mktemp(f"auth-{broker.kind}"),
        "auth",
        auth="api-keys",
        extra_env={"SMSGW_MAX_STREAMS_PER_ACCOUNT": str(STREAM_CAP)},
    )
    yield platform
    platform.stop()


@pytest.fixture
async def channel(keyed):
    async with grpc.aio.insecure_channel(keyed.intake_address) as channel:
        yield channel


async def _refusal(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


async def _stream_refusal(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    return raised.value


async def test_every_call_without_a_valid_key_is_unauthenticated_and_says_the_same(keyed, channel):
    stub = api_grpc.MessagingServiceStub(channel)
    admin = ac_grpc.AdminServiceStub(channel)
    real_id = (
        (await admin.ListApiKeys(ac.ListApiKeysRequest(account_id="operator"), metadata=bearer(keyed.admin_key)))
        .keys[0]
        .id
    )
    for metadata in ((), bearer("nonsense"), bearer(f"sgw_{real_id}_" + "x" * 43), (("x-smsgw-account", "default"),)):
        refusals = [
            await _refusal(stub.SendMessage(send_request(), metadata=metadata)),
            await _refusal(stub.SendBatch(api.SendBatchRequest(messages=[send_request()]), metadata=metadata)),
            await _refusal(stub.GetMessage(api.GetMessageRequest(id="x"), metadata=metadata)),
            await _refusal(stub.ListMessages(api.ListMessagesRequest(), metadata=metadata)),
            await _refusal(stub.GetMessageHistory(api.GetMessageHistoryRequest(id="x"), metadata=metadata)),
            await _refusal(stub.CancelMessage(api.CancelMessageRequest(id="x"), metadata=metadata)),
            await _stream_refusal(stub.WatchMessage(api.WatchMessageRequest(id="x"), metadata=metadata)),
            await _stream_refusal(stub.WatchMessages(api.WatchMessagesRequest(), metadata=metadata)),
            # The key is checked before the request: a bad max_updates is not an answer to a stranger.
            await _stream_refusal(
                stub.WatchMessageBatches(api.WatchMessageBatchesRequest(max_updates=-1), metadata=metadata)
            ),
            await _stream_refusal(stub.WatchInbound(api.WatchInboundRequest(), metadata=metadata)),
            # No request written: the refusal comes before the server reads any (a write racing
            # the server's abort fails on the client side, as INTERNAL, which is not the point here).
            await _stream_refusal(stub.SendStream(metadata=metadata)),
            await _refusal(admin.ListAccounts(ac.ListAccountsRequest(), metadata=metadata)),
        ]
        for error in refusals:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_info_of(error).reason == "UNAUTHENTICATED"
            assert "authorization: Bearer" in error.details() and real_id not in error.details()
        assert len({e.details() for e in refusals}) == 1


async def test_the_account_is_the_keys_and_scopes_limit_what_a_key_does(keyed, channel):
    stub = api_grpc.MessagingServiceStub(channel)
    admin = ac_grpc.AdminServiceStub(channel)
    operator = bearer(keyed.admin_key)
    await admin.CreateAccount(ac.CreateAccountRequest(id="acme", display_name="ACME"), metadata=operator)
    again = await _refusal(admin.CreateAccount(ac.CreateAccountRequest(id="acme"), metadata=operator))
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS and error_info_of(again).reason == "ACCOUNT_EXISTS"
    send_only = await admin.CreateApiKey(
        ac.CreateApiKeyRequest(account_id="acme", scopes=[ac.API_KEY_SCOPE_SEND], name="sender"), metadata=operator
    )
    assert send_only.secret.startswith(f"sgw_{send_only.key.id}_")

    reply = await stub.SendMessage(send_request(body="from acme"), metadata=bearer(send_only.secret))
    assert reply.message.account_id == "acme"
    # The header cannot move a customer key to another account.
    spoofed = await _refusal(
        stub.SendMessage(send_request(), metadata=bearer(send_only.secret) + (("x-smsgw-account", "default"),))
    )
    assert spoofed.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info_of(spoofed).metadata["field"] == "x-smsgw-account"
    # Reading needs the read scope; the message names it.
    denied = await _refusal(
        stub.GetMessage(api.GetMessageRequest(id=reply.message.id), metadata=bearer(send_only.secret))
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'read' scope" in denied.details() and error_info_of(denied).metadata["required_scope"] == "read"
    for watch in (
        stub.WatchMessages(api.WatchMessagesRequest(), metadata=bearer(send_only.secret)),
        stub.WatchMessageBatches(api.WatchMessageBatchesRequest(), metadata=bearer(send_only.secret)),
    ):
        denied = await _stream_refusal(watch)
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info_of(denied).metadata["required_scope"] == "read"
    # A customer key is no admin key.
    not_admin = await _refusal(admin.ListAccounts(ac.ListAccountsRequest(), metadata=bearer(send_only.secret)))
    assert not_admin.code() == grpc.StatusCode.PERMISSION_DENIED and "'admin' scope" in not_admin.details()

    reader = await admin.CreateApiKey(
        ac.CreateApiKeyRequest(account_id="acme", scopes=[ac.API_KEY_SCOPE_READ]), metadata=operator
    )
    final = await wait_for_status(stub, reply.message.id, {st.DELIVERED}, metadata=bearer(reader.secret))
    assert final.account_id == "acme"


async def test_one_account_never_sees_another_accounts_messages(keyed, channel):
    stub = api_grpc.MessagingServiceStub(channel)
    alice = bearer(await keyed.api_key("tenant-a"))
    mallory = bearer(await keyed.api_key("tenant-b"))
    watching = stub.WatchMessages(api.WatchMessagesRequest(), metadata=mallory)
    start = await watching.read()  # the live cursor
    assert start.cursor
    sent = await stub.SendMessage(send_request(body="alice's secret"), metadata=alice)
    message_id = sent.message.id
    await wait_for_status(stub, message_id, {st.DELIVERED}, metadata=alice)

    for call in (
        stub.GetMessage(api.GetMessageRequest(id=message_id), metadata=mallory),
        stub.GetMessageHistory(api.GetMessageHistoryRequest(id=message_id), metadata=mallory),
        stub.CancelMessage(api.CancelMessageRequest(id=message_id), metadata=mallory),
    ):
        error = await _refusal(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND and "alice" not in error.details()
    error = await _stream_refusal(stub.WatchMessage(api.WatchMessageRequest(id=message_id), metadata=mallory))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListMessages(api.ListMessagesRequest(page_size=100), metadata=mallory)
    assert message_id not in {m.id for m in listed.messages}
    # Replaying mallory's stream from the very start of the log (an empty cursor of every
    # partition) shows none of alice's updates either.
    replay = stub.WatchMessages(api.WatchMessagesRequest(cursor=start.cursor), metadata=mallory)
    await replay.read()
    mine = await stub.SendMessage(send_request(body="mallory's own"), metadata=mallory)
    seen = set()
    async with asyncio.timeout(30):
        while mine.message.id not in seen:
            update = await replay.read()
            seen.add(update.message.id)
    assert message_id not in seen
    replay.cancel()
    # The same by batches.
    batches = stub.WatchMessageBatches(api.WatchMessageBatchesRequest(cursor=start.cursor), metadata=mallory)
    seen = set()
    async with asyncio.timeout(30):
        while mine.message.id not in seen:
            seen |= {update.message.id for update in (await batches.read()).updates}
    assert message_id not in seen
    batches.cancel()
    watching.cancel()

    # Cursors are signed for the account they were issued to: alice's is refused to mallory on
    # both streams (before anything is read), and a cursor with its positions rewritten too.
    alices = stub.WatchMessages(api.WatchMessagesRequest(), metadata=alice)
    alices_cursor = (await alices.read()).cursor
    alices.cancel()
    inbound = stub.WatchInbound(api.WatchInboundRequest(), metadata=alice)
    alices_inbound_cursor = (await inbound.read()).cursor
    inbound.cancel()
    payload, _, signature = start.cursor.partition(".")
    rewritten = f"eyIwIjowfQ.{signature}"  # {"0":0} under the signature of mallory's own cursor
    for call in (
        stub.WatchMessages(api.WatchMessagesRequest(cursor=alices_cursor), metadata=mallory),
        stub.WatchMessageBatches(api.WatchMessageBatchesRequest(cursor=alices_cursor), metadata=mallory),
        stub.WatchInbound(api.WatchInboundRequest(cursor=alices_inbound_cursor), metadata=mallory),
        stub.WatchMessages(api.WatchMessagesRequest(cursor=rewritten), metadata=mallory),
        stub.WatchMessages(api.WatchMessagesRequest(cursor=payload), metadata=mallory),
    ):
        error = await _stream_refusal(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert "not a cursor this API issued to this account" in error.details()
        assert error_info_of(error).metadata["field"] == "cursor"


async def test_revoked_and_rotated_keys_stop_at_once_and_the_audit_trail_says_who(keyed, channel):
    stub = api_grpc.MessagingServiceStub(channel)
    admin = ac_grpc.AdminServiceStub(channel)
    operator = bearer(keyed.admin_key)
    await admin.CreateAccount(ac.CreateAccountRequest(id="rotating"), metadata=operator)
    first = await admin.CreateApiKey(ac.CreateApiKeyRequest(account_id="rotating", name="v1"), metadata=operator)
    await stub.SendMessage(send_request(body="v1"), metadata=bearer(first.secret))

    rotated = await admin.RotateApiKey(ac.RotateApiKeyRequest(key_id=first.key.id), metadata=operator)
    assert rotated.revoked.id == first.key.id and rotated.revoked.HasField("revoked_at")
    assert rotated.key.name == "v1" and list(rotated.key.scopes) == list(first.key.scopes)
    refused = await _refusal(stub.SendMessage(send_request(), metadata=bearer(first.secret)))
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    await stub.SendMessage(send_request(body="v2"), metadata=bearer(rotated.secret))

    await admin.RevokeApiKey(ac.RevokeApiKeyRequest(key_id=rotated.key.id, reason="leaked"), metadata=operator)
    refused = await _refusal(stub.SendMessage(send_request(), metadata=bearer(rotated.secret)))
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    keys = (await admin.ListApiKeys(ac.ListApiKeysRequest(account_id="rotating"), metadata=operator)).keys
    assert {k.id for k in keys} == {first.key.id, rotated.key.id} and all(k.HasField("revoked_at") for k in keys)

    audit = (await admin.ListAuditEvents(ac.ListAuditEventsRequest(account_id="rotating"), metadata=operator)).events
    assert [e.type.removeprefix("smsgw.v1.") for e in audit] == [
        "AccountCreated",
        "ApiKeyCreated",
        "ApiKeyCreated",
        "ApiKeyRevoked",
        "ApiKeyRevoked",
    ]
    admin_key_id = keyed.admin_key.split("_")[1]
    assert {e.actor for e in audit} == {admin_key_id}
    assert audit[-1].api_key_revoked.reason == "leaked"
    # The bootstrap key itself is changed in configuration, not through the API.
    refused = await _refusal(admin.RevokeApiKey(ac.RevokeApiKeyRequest(key_id=admin_key_id), metadata=operator))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT and "bootstrap key" in refused.details()


async def test_keys_survive_a_kill_9_of_intake_and_a_revoked_key_stays_revoked(keyed):
    live = await keyed.api_key("survivor")
    async with grpc.aio.insecure_channel(keyed.intake_address) as channel:
        admin = ac_grpc.AdminServiceStub(channel)
        doomed = await admin.CreateApiKey(
            ac.CreateApiKeyRequest(account_id="survivor"), metadata=bearer(keyed.admin_key)
        )
        await admin.RevokeApiKey(ac.RevokeApiKeyRequest(key_id=doomed.key.id), metadata=bearer(keyed.admin_key))
    await keyed.restart("intake", hard=True)
    async with grpc.aio.insecure_channel(keyed.intake_address) as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        reply = await stub.SendMessage(send_request(body="after the restart"), metadata=bearer(live))
        assert reply.message.account_id == "survivor"
        refused = await _refusal(stub.SendMessage(send_request(), metadata=bearer(doomed.secret)))
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_receipts_help_replies_go_out_with_its_own_service_key(keyed, channel):
    # receipt answers HELP through intake's public API like any client: with its service key
    # (send + act-as-any-account), naming the account the number belongs to.
    from tests.integration.test_pipeline import _handset_sends, _next_inbound

    stub = api_grpc.MessagingServiceStub(channel)
    account = bearer(await keyed.api_key("default"))
    subscriber = "+14155550179"
    inbound = stub.WatchInbound(api.WatchInboundRequest(), metadata=account)
    await inbound.read()
    await _handset_sends(keyed, subscriber, "+14155550000", "help")
    assert (await _next_inbound(inbound)).keyword == "HELP"
    inbound.cancel()
    listed = await messages_to(stub, subscriber, account)
    (reply,) = listed
    assert reply.account_id == "default" and "STOP" in reply.body
    await wait_for_status(stub, reply.id, {st.DELIVERED}, metadata=account)


async def test_account_limits_refuse_what_is_over_and_hold_after_a_restart(keyed):
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    key = await keyed.api_key("limited")
    metadata = bearer(key)
    async with grpc.aio.insecure_channel(keyed.intake_address) as channel:
        admin = ac_grpc.AdminServiceStub(channel)
        stub = api_grpc.MessagingServiceStub(channel)
        reply = await admin.SetAccountLimits(
            ac.SetAccountLimitsRequest(
                account_id="limited", limits=ac.AccountLimits(messages_per_second=2, burst=3, messages_per_day=5)
            ),
            metadata=bearer(keyed.admin_key),
        )
        assert reply.account.limits.messages_per_day == 5
        batch = await stub.SendBatch(
            api.SendBatchRequest(messages=[send_request(body=f"b{i}") for i in range(5)]), metadata=metadata
        )
        outcomes = [r.WhichOneof("outcome") for r in batch.results]
        assert outcomes == ["accepted"] * 3 + ["error"] * 2
        assert {r.error.reason for r in batch.results[3:]} == {"RATE_LIMITED"}
        assert batch.results[3].error.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        accepted = [r.accepted.message.id for r in batch.results[:3]]

        limited = await _refusal(stub.SendMessage(send_request(body="too soon"), metadata=metadata))
        assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info_of(limited).reason == "RATE_LIMITED" and "2 messages a second" in limited.details()
        status = rpc_status.from_call(limited)
        retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        assert len(retry) == 1
        info = error_details_pb2.RetryInfo()
        retry[0].Unpack(info)
        wait = info.retry_delay.ToTimedelta().total_seconds()
        assert 0 < wait <= 0.5 + 0.01
        await asyncio.sleep(wait)
        accepted.append((await stub.SendMessage(send_request(body="after the wait"), metadata=metadata)).message.id)
        await asyncio.sleep(0.5)
        accepted.append((await stub.SendMessage(send_request(body="fifth"), metadata=metadata)).message.id)
        await asyncio.sleep(0.5)
        over = await _refusal(stub.SendMessage(send_request(body="sixth today"), metadata=metadata))
        assert error_info_of(over).reason == "DAILY_QUOTA_EXCEEDED" and "5 of 5" in over.details()

    # Today's count is rebuilt from the log: a restarted intake still says no.
    await keyed.restart("intake", hard=True)
    async with grpc.aio.insecure_channel(keyed.intake_address) as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        over = await _refusal(stub.SendMessage(send_request(body="after the restart"), metadata=metadata))
        assert error_info_of(over).reason == "DAILY_QUOTA_EXCEEDED"
        for message_id in accepted:  # nothing accepted before the refusals is touched
            await wait_for_status(stub, message_id, {st.DELIVERED}, metadata=metadata)


async def test_server_limits_an_oversized_request_and_an_accounts_open_streams(keyed, channel):
    stub = api_grpc.MessagingServiceStub(channel)
    metadata = bearer(await keyed.api_key("streamer"))
    # 4 MiB per request: a batch of 5 MiB never reaches intake's code.
    huge = api.SendBatchRequest(messages=[send_request(body="x" * 1_000_000) for _ in range(5)])
    too_big = await _refusal(stub.SendBatch(huge, metadata=metadata))
    assert too_big.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    streams = [stub.WatchMessages(api.WatchMessagesRequest(), metadata=metadata) for _ in range(STREAM_CAP)]
    for call in streams:
        assert (await call.read()).cursor  # each one open and live
    one_more = stub.WatchMessages(api.WatchMessagesRequest(), metadata=metadata)
    refused = await _stream_refusal(one_more)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info_of(refused).reason == "TOO_MANY_STREAMS" and f"{STREAM_CAP} streams open" in refused.details()
    # Another account is not held back by this one's streams.
    other = stub.WatchInbound(api.WatchInboundRequest(), metadata=bearer(await keyed.api_key("bystander")))
    assert (await other.read()).cursor
    other.cancel()
    # A closed stream frees its slot.
    streams.pop().cancel()
    for _ in range(50):
        again = stub.WatchMessages(api.WatchMessagesRequest(), metadata=metadata)
        try:
            assert (await again.read()).cursor
            break
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("the slot of the closed stream never came back")
    again.cancel()
    for call in streams:
        call.cancel()


async def test_an_account_sends_only_from_senders_assigned_to_it(keyed, channel):
    stub = api_grpc.MessagingServiceStub(channel)
    admin = ac_grpc.AdminServiceStub(channel)
    acme = bearer(await keyed.api_key("brand-a"))
    globex = bearer(await keyed.api_key("brand-b"))
    # No senders assigned: the server's default sender only.
    plain = await stub.SendMessage(send_request(body="no from"), metadata=acme)
    assert getattr(plain.message, "from") == "+14155550000"
    refused = await _refusal(stub.SendMessage(send_request(body="spoof", sender="BANK"), metadata=acme))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info_of(refused).reason == "SENDER_NOT_ASSIGNED" and error_info_of(refused).metadata["field"] == "from"

    reply = await admin.SetAccountSenders(
        ac.SetAccountSendersRequest(account_id="brand-a", senders=["ACME", "+1 (415) 555-0123"]),
        metadata=bearer(keyed.admin_key),
    )
    assert list(reply.account.senders) == ["ACME", "+14155550123"]
    default = await stub.SendMessage(send_request(body="default sender"), metadata=acme)
    assert getattr(default.message, "from") == "ACME"
    by_number = await stub.SendMessage(send_request(body="by number", sender="+14155550123"), metadata=acme)
    assert getattr(by_number.message, "from") == "+14155550123"
    # Another account cannot send as brand-a, in a batch either (per item).
    batch = await stub.SendBatch(
        api.SendBatchRequest(messages=[send_request(body="mine"), send_request(body="theirs", sender="ACME")]),
        metadata=globex,
    )
    assert batch.results[0].WhichOneof("outcome") == "accepted"
    assert batch.results[1].error.reason == "SENDER_NOT_ASSIGNED"
    assert batch.results[1].error.field == "messages[1].from"
    invalid = await _refusal(
        admin.SetAccountSenders(
            ac.SetAccountSendersRequest(account_id="brand-a", senders=["ACME", "no good!!"]),
            metadata=bearer(keyed.admin_key),
        )
    )
    assert (
        invalid.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info_of(invalid).metadata["field"] == "senders[1]"
    )


async def test_an_account_with_a_sender_pool_sends_from_a_local_number_sticky_per_recipient(keyed, channel):
    stub = api_grpc.MessagingServiceStub(channel)
    admin = ac_grpc.AdminServiceStub(channel)
    pooled = bearer(await keyed.api_key("pooled"))
    pool = ["ACME", "+14155550123", "+14155550124", "+442079460123"]
    reply = await admin.SetAccountSenders(
        ac.SetAccountSendersRequest(account_id="pooled", senders=pool, pool=True), metadata=bearer(keyed.admin_key)
    )
    assert reply.account.sender_pool and list(reply.account.senders) == pool
    uk = await stub.SendMessage(send_request(to="+447911123456", body="uk"), metadata=pooled)
    assert getattr(uk.message, "from") == "+442079460123"
    us = [await stub.SendMessage(send_request(to="+14155550177", body=f"us {n}"), metadata=pooled) for n in range(3)]
    assert len({getattr(m.message, "from") for m in us}) == 1, "the same recipient keeps its number"
    assert getattr(us[0].message, "from") in {"+14155550123", "+14155550124"}
    elsewhere = await stub.SendMessage(send_request(to="+33612345678", body="fr"), metadata=pooled)
    assert getattr(elsewhere.message, "from") == "ACME", "no local number: the default"
    named = await stub.SendMessage(send_request(to="+447911123456", body="x", sender="ACME"), metadata=pooled)
    assert getattr(named.message, "from") == "ACME", "a named sender is kept"


async def test_an_account_with_smart_encoding_sends_look_alikes_in_gsm7_and_says_what_it_saved(keyed, channel):
    stub = api_grpc.MessagingServiceStub(channel)
    admin = ac_grpc.AdminServiceStub(channel)
    smart = bearer(await keyed.api_key("smart-enc"))
    typed = "Your code: \u201c4829\u201d \u2014 valid 10 min. " + "x" * 50  # 2 UCS-2 parts as typed
    before = await stub.SendMessage(send_request(body=typed), metadata=smart)
    assert before.message.body == typed and before.message.segments == 2
    reply = await admin.SetAccountEncoding(
        ac.SetAccountEncodingRequest(account_id="smart-enc", smart_encoding=True), metadata=bearer(keyed.admin_key)
    )
    assert reply.account.smart_encoding
    after = await stub.SendMessage(send_request(body=typed), metadata=smart)
    assert after.message.body.startswith('Your code: "4829" - valid') and after.message.segments == 1
    assert after.message.segments_before_smart_encoding == 2
    stored = await wait_for_status(stub, after.message.id, {st.SENT, st.DELIVERED}, metadata=smart)
    assert stored.segments_before_smart_encoding == 2 and stored.encoding == mp.Encoding.GSM7
    audit = await admin.ListAuditEvents(
        ac.ListAuditEventsRequest(account_id="smart-enc"), metadata=bearer(keyed.admin_key)
    )
    assert "account_encoding_set" in [e.WhichOneof("payload") for e in audit.events]


async def test_an_account_sends_only_to_its_allowed_countries(keyed, channel):
    stub = api_grpc.MessagingServiceStub(channel)
    admin = ac_grpc.AdminServiceStub(channel)
    metadata = bearer(await keyed.api_key("us-only"))
    abroad = send_request(to="+447400123456", body="to the UK")
    await stub.SendMessage(abroad, metadata=metadata)  # no list, no server default: every country
    reply = await admin.SetAccountDestinations(
        ac.SetAccountDestinationsRequest(account_id="us-only", countries=["us", "CA"]), metadata=bearer(keyed.admin_key)
    )
    assert list(reply.account.destination_countries) == ["US", "CA"]
    refused = await _refusal(stub.SendMessage(abroad, metadata=metadata))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info_of(refused)
    assert (info.reason, info.metadata["field"], info.metadata["country"]) == ("DESTINATION_NOT_ALLOWED", "to", "GB")
    home = await stub.SendMessage(send_request(body="at home"), metadata=metadata)
    assert home.message.status == st.QUEUED


async def test_no_service_log_holds_a_key_a_password_a_body_or_a_whole_number(keyed, channel):
    # Every key this platform knows, the SMPP passwords it binds with, a body sent through it and
    # the number of a subscriber it talked with never appear in the services' logs (the
    # simulators play the network and may print what they carry).
    from tests.integration.test_pipeline import _handset_sends

    stub = api_grpc.MessagingServiceStub(channel)
    secret_key = await keyed.api_key("quiet")
    body = "the secret body 7f3a9c"
    reply = await stub.SendMessage(send_request(body=body), metadata=bearer(secret_key))
    await wait_for_status(stub, reply.message.id, {st.DELIVERED}, metadata=bearer(secret_key))
    # A refused call with a key-shaped credential, whose text must not be echoed either.
    wrong = secret_key[:-6] + "AAAAAA"
    await _refusal(stub.SendMessage(send_request(body=body), metadata=bearer(wrong)))

    # A subscriber whose number reaches a log at INFO and above: sent to, then STOP, then HELP,
    # whose reply intake refuses with a detail naming them, which receipt logs as a warning.
    subscriber, ours = "+14155550143", "+14155550000"
    account = bearer(await keyed.api_key("default"))
    sent = await stub.SendMessage(send_request(to=subscriber, sender=ours), metadata=account)
    await wait_for_status(stub, sent.message.id, {st.DELIVERED}, metadata=account)
    await _handset_sends(keyed, subscriber, ours, "STOP")
    for _ in range(100):  # until intake's read model has the opt-out (bounded wait)
        try:
            await stub.SendMessage(send_request(to=subscriber, sender=ours), metadata=account)
        except grpc.aio.AioRpcError as refused:
            assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("STOP never reached intake")
    await _handset_sends(keyed, subscriber, ours, "HELP")

    def logs() -> dict[str, str]:
        return {name: (keyed.run_dir / f"{name}.log").read_text() for name in keyed.service_processes}

    for _ in range(200):
        if any("HELP reply to +1415*****43 refused" in text for text in logs().values()):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("receipt never logged the refused HELP reply: the check below would prove less")

    secrets = [
        keyed.admin_key,
        keyed.service_key,
        secret_key,
        wrong,
        *(k.split("_", 2)[2] for k in (keyed.admin_key, keyed.service_key, secret_key)),
        *SMPP_ACCOUNTS.values(),
        TWILIO_AUTH_TOKEN,
    ]
    for name, text in logs().items():
        assert text, f"{name}.log is empty: the check would prove nothing"
        assert body not in text, f"{name}.log holds a message body"
        # Without country code or '+': also as SMPP addresses write it.
        for number in ("4155550100", "4155550143"):
            assert number not in text, f"{name}.log holds a recipient's whole number"
        for secret in secrets:
            assert secret not in text, f"{name}.log holds a secret"
