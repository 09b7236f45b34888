"""Routes with several carriers: a failing carrier is skipped, and gets traffic again once it recovers.

The route table comes from the platform's configuration file (its `routes` and
`carrier_health` sections). A failover route lists twilio-sim first and smsc-sim second; with
the Twilio simulator stopped, its first messages fail their submit attempts (NOT_CONNECTED),
routing reads those events, finds twilio-sim failing and sends the next messages to smsc-sim.
When the simulator is back, the failures age out of the health window and new messages go to
twilio-sim again. Nothing is lost on the way: the first messages wait in the adapter and are
delivered by twilio-sim once it is back.
"""

from __future__ import annotations

import asyncio
import collections

import aiohttp
import grpc
import pytest

from smsgw.domain import status as st
from smsgw.v1 import accounts_pb2 as ac
from smsgw.v1 import accounts_pb2_grpc as ac_grpc
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.conftest import start_platform
from tests.integration.helpers import ACCOUNT, scraped_metrics, send_request, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PAIR = "+1415555077"  # the route under test; +14155550771 is a plain number at the Twilio simulator
ROUTES = [
    {"name": "default", "carrier": "smsc-sim"},
    {"name": "pair", "prefix": PAIR, "carriers": ["twilio-sim", "smsc-sim"]},
    {"name": "by-tag", "tags": ["otp"], "strategy": "weighted", "carriers": [{"carrier": "smsc-sim-nodlr"}]},
    {"name": "twilio-only", "prefix": "+14155550772", "carrier": "twilio-sim"},
]
HEALTH = {"window_seconds": 12, "min_attempts": 3, "max_failure_ratio": 0.5}


async def test_a_failing_carrier_is_skipped_and_gets_traffic_again_once_it_recovers(broker, tmp_path):
    platform = await start_platform(
        broker,
        tmp_path,
        "failover",
        config_sections={"routes": ROUTES, "carrier_health": HEALTH},
        # The messages already with twilio-sim wait for it here (the next test moves them).
        extra_env={"SMSGW_DISPATCH_FAILOVER_AFTER_SECONDS": "0"},
    )
    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            platform.kill("twilio-simulator")
            first = [
                (await stub.SendMessage(send_request(to=f"{PAIR}1", body=f"first {n}"), metadata=ACCOUNT)).message.id
                for n in range(5)
            ]
            for message_id in first:
                message = await wait_for_status(stub, message_id, {st.SENDING}, timeout=30)
                assert message.carrier == "twilio-sim", "healthy until its failures are seen"
            # routing reads each SubmitAttemptFailed; give it a moment past the last one.
            await asyncio.sleep(1.0)

            moved = [
                (await stub.SendMessage(send_request(to=f"{PAIR}1", body=f"moved {n}"), metadata=ACCOUNT)).message.id
                for n in range(10)
            ]
            delivered = await asyncio.gather(*(wait_for_status(stub, m, {st.DELIVERED}, timeout=40) for m in moved))
            assert {m.carrier for m in delivered} == {"smsc-sim"}
            assert await _healthy(platform, "twilio-sim") == 0.0
            # intake's live explanation sees the same: the route skips twilio-sim now.
            admin = ac_grpc.AdminServiceStub(channel)
            explained = await admin.ExplainRoute(ac.ExplainRouteRequest(to=f"{PAIR}1"), metadata=ACCOUNT)
            assert (explained.chosen_route, explained.chosen_carrier) == ("pair", "smsc-sim")
            assert "skipped unhealthy twilio-sim" in explained.why
            twilio = next(c for c in explained.carriers if c.carrier == "twilio-sim")
            assert not twilio.healthy and twilio.failure_ratio == 1.0 and twilio.outcomes >= 5

            platform.start_service("twilio-simulator")
            back = await asyncio.gather(*(wait_for_status(stub, m, {st.DELIVERED}, timeout=60) for m in first))
            assert {m.carrier for m in back} == {"twilio-sim"}, "the first messages waited for their carrier"

            # Once the failures are older than the window, twilio-sim is the route's first carrier again.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + HEALTH["window_seconds"] + 20
            carriers = []
            while loop.time() < deadline:
                sent = await stub.SendMessage(send_request(to=f"{PAIR}1", body="again"), metadata=ACCOUNT)
                message = await wait_for_status(stub, sent.message.id, {st.DELIVERED}, timeout=30)
                carriers.append(message.carrier)
                if message.carrier == "twilio-sim":
                    break
                await asyncio.sleep(1.0)
            assert carriers[-1] == "twilio-sim", carriers
            assert await _healthy(platform, "twilio-sim") == 1.0

            # The table's other conditions: a tag picks its own route, whatever the prefix.
            tagged = await stub.SendMessage(send_request(body="code 1234", tags=["otp"]), metadata=ACCOUNT)
            message = await wait_for_status(stub, tagged.message.id, {st.SENT, st.DELIVERED, st.EXPIRED}, timeout=30)
            assert message.carrier == "smsc-sim-nodlr"
    finally:
        platform.stop()


async def test_messages_a_carrier_cannot_take_move_to_the_next_carrier_of_their_route(broker, tmp_path):
    platform = await start_platform(
        broker,
        tmp_path,
        "reroute",
        config_sections={"routes": ROUTES},
        extra_env={"SMSGW_DISPATCH_FAILOVER_AFTER_SECONDS": "2"},
    )
    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            platform.kill("twilio-simulator")
            moved = [
                (await stub.SendMessage(send_request(to=f"{PAIR}1", body=f"rerouted {n}"), metadata=ACCOUNT)).message.id
                for n in range(5)
            ]
            delivered = await asyncio.gather(*(wait_for_status(stub, m, {st.DELIVERED}, timeout=60) for m in moved))
            assert {m.carrier for m in delivered} == {"smsc-sim"}
            history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=moved[0]), metadata=ACCOUNT)
            kinds = [e.event.WhichOneof("payload") for e in history.entries]
            assert kinds[:2] == ["message_queued", "message_routed"] and kinds[-1] == "delivery_reported"
            rerouted = next(e.event.message_rerouted for e in history.entries if e.event.HasField("message_rerouted"))
            assert (rerouted.from_carrier, rerouted.carrier, rerouted.reason) == (
                "twilio-sim",
                "smsc-sim",
                "NOT_CONNECTED",
            )
            assert kinds.index("message_rerouted") < kinds.index("carrier_accepted")
            # Each went to the SMSC once.
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{platform.smsc_control_port}/submitted") as response:
                    bodies = [bytes.fromhex(s["user_data_hex"]).decode("latin-1") for s in await response.json()]
            assert sorted(b for b in bodies if b.startswith("rerouted")) == [f"rerouted {n}" for n in range(5)]
            # carrier-adapter's /metrics counts the failovers and the retries before them.
            metrics = await scraped_metrics(platform.metrics_port_of("carrier-adapter"))
            assert metrics[("smsgw_carrier_rerouted_total", frozenset())] == 5
            retries = (
                "smsgw_carrier_submit_retries_total",
                frozenset({("carrier", "twilio-sim"), ("reason", "NOT_CONNECTED")}),
            )
            assert metrics[retries] >= 5

            # A route without another carrier: the message waits for its carrier.
            alone = await stub.SendMessage(send_request(to="+14155550772", body="alone"), metadata=ACCOUNT)
            await asyncio.sleep(5)
            waiting = await stub.GetMessage(api.GetMessageRequest(id=alone.message.id), metadata=ACCOUNT)
            assert waiting.status == st.SENDING and waiting.carrier == "twilio-sim"
            platform.start_service("twilio-simulator")
            back = await wait_for_status(stub, alone.message.id, {st.DELIVERED}, timeout=60)
            assert back.carrier == "twilio-sim"
    finally:
        platform.stop()


async def test_a_carrier_adapter_killed_while_it_reroutes_submits_each_message_once(broker, tmp_path):
    platform = await start_platform(
        broker,
        tmp_path,
        "reroute-kill",
        config_sections={"routes": ROUTES},
        extra_env={"SMSGW_DISPATCH_FAILOVER_AFTER_SECONDS": "2"},
    )
    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            platform.kill("twilio-simulator")
            moved = []
            for n in range(10):
                sent = await stub.SendMessage(send_request(to=f"{PAIR}1", body=f"killed {n}"), metadata=ACCOUNT)
                moved.append(sent.message.id)
                await asyncio.sleep(0.3)  # spread over the failover delay: some move before the kill, some after
            await platform.restart("carrier-adapter")  # kill -9, then started again
            # One whose submit to twilio-sim the kill cut off may have reached it: it stays with
            # twilio-sim (a second carrier could make a duplicate) and goes once that is back.
            held = await _delivered_or_in_doubt_with(stub, moved, "twilio-sim", timeout=90)
            if held:
                platform.start_service("twilio-simulator")
            delivered = await asyncio.gather(*(wait_for_status(stub, m, {st.DELIVERED}, timeout=90) for m in moved))
            assert len(held) < len(moved), "the kill left every message in doubt: nothing was rerouted across it"
            assert {m.carrier for m in delivered if m.id not in held} == {"smsc-sim"}
            assert {m.carrier for m in delivered if m.id in held} <= {"twilio-sim"}
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{platform.smsc_control_port}/submitted") as response:
                    bodies = [bytes.fromhex(s["user_data_hex"]).decode("latin-1") for s in await response.json()]
            submitted = collections.Counter(b for b in bodies if b.startswith("killed"))
            if broker.keeps_commit_metadata:
                # Each exactly once, unless the kill cut a submit to smsc-sim off before its answer
                # was recorded: that one is in doubt, and its history must say so (the submit ledger).
                in_doubt = {n for n, m in enumerate(moved) if await _restarted_in_doubt(stub, m)}
                expected = {f"killed {n}" for n, m in enumerate(moved) if m not in held}
                once_or_in_doubt = all(
                    submitted[b] == 1 or (submitted[b] == 2 and int(b.split()[1]) in in_doubt) for b in expected
                )
                assert set(submitted) == expected and once_or_in_doubt, (
                    f"at the SMSC: {dict(submitted)}; in doubt after the kill: {sorted(in_doubt)}"
                )
            else:
                # Tansu drops commit metadata (test_brokers.py): a command finished before the kill
                # may be handled again. Nothing is lost.
                assert set(submitted) >= {f"killed {n}" for n, m in enumerate(moved) if m not in held}
    finally:
        platform.stop()


async def test_messages_of_a_carrier_down_for_long_wait_on_the_delay_topic_through_a_kill_9_and_go_once(
    broker, tmp_path
):
    """twilio-sim, the only carrier of its route, stays down past the adapter's defer delay: its
    messages stop waiting in carrier-adapter and wait on the delay topic (DispatchDeferred in
    their history, still SENDING), carrier-adapter is killed (-9) meanwhile, and once twilio-sim
    is back each message reaches it once and is delivered."""
    platform = await start_platform(
        broker,
        tmp_path,
        "deferral",
        config_sections={"routes": ROUTES},
        extra_env={
            "SMSGW_DISPATCH_DEFER_AFTER_SECONDS": "2",
            "SMSGW_DISPATCH_DEFER_LAP_SECONDS": "1",
            "SMSGW_DISPATCH_DEFER_LONGEST_SECONDS": "2",
        },
    )
    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            platform.kill("twilio-simulator")
            waiting = [
                (
                    await stub.SendMessage(send_request(to="+14155550772", body=f"deferred {n}"), metadata=ACCOUNT)
                ).message.id
                for n in range(8)
            ]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not all([await _deferred(stub, m) for m in waiting]):
                assert loop.time() < deadline, "not every message was deferred"
                await asyncio.sleep(0.5)
            for message_id in waiting:
                message = await stub.GetMessage(api.GetMessageRequest(id=message_id), metadata=ACCOUNT)
                assert (message.status, message.carrier) == (st.SENDING, "twilio-sim")

            await platform.restart("carrier-adapter")  # kill -9, then started again
            platform.start_service("twilio-simulator")
            delivered = await asyncio.gather(*(wait_for_status(stub, m, {st.DELIVERED}, timeout=90) for m in waiting))
            assert {m.carrier for m in delivered} == {"twilio-sim"}
            await asyncio.sleep(2.0)  # a lap: time for a copy to be (wrongly) sent
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{platform.twilio_port}/_sim/messages") as response:
                    bodies = [m["body"] for m in (await response.json())["messages"]]
            sent = collections.Counter(b for b in bodies if b.startswith("deferred"))
            assert set(sent) == {f"deferred {n}" for n in range(8)}, sent
            if broker.keeps_commit_metadata:
                assert set(sent.values()) == {1}, f"each once: {dict(sent)}"
    finally:
        platform.stop()


async def _deferred(stub, message_id: str) -> bool:
    history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=message_id), metadata=ACCOUNT)
    return any(e.event.HasField("dispatch_deferred") for e in history.entries)


async def _delivered_or_in_doubt_with(stub, message_ids: list[str], carrier: str, timeout: float) -> set[str]:
    """Waits until each message is DELIVERED or in doubt with `carrier` after a restart of its
    carrier-adapter (an attempt on its way when the replica was killed); returns the latter."""
    deadline = asyncio.get_running_loop().time() + timeout
    pending, in_doubt = set(message_ids), set()
    while pending and asyncio.get_running_loop().time() < deadline:
        for message_id in list(pending):
            message = await stub.GetMessage(api.GetMessageRequest(id=message_id), metadata=ACCOUNT)
            if message.status == st.DELIVERED:
                pending.discard(message_id)
            elif await _restarted_in_doubt(stub, message_id, carrier):
                pending.discard(message_id)
                in_doubt.add(message_id)
        await asyncio.sleep(0.5)
    assert not pending, f"neither DELIVERED nor in doubt with {carrier}: {sorted(pending)}"
    return in_doubt


async def _restarted_in_doubt(stub, message_id: str, carrier: str = "") -> bool:
    """The message's history says a submit (to `carrier`, or any) was on its way when its
    carrier-adapter was killed."""
    history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=message_id), metadata=ACCOUNT)
    return any(
        e.event.submit_attempt_failed.reason == "ADAPTER_RESTARTED"
        and carrier in ("", e.event.submit_attempt_failed.carrier)
        for e in history.entries
        if e.event.HasField("submit_attempt_failed")
    )


async def _healthy(platform, carrier: str) -> float:
    """routing's smsgw_carrier_healthy{carrier} from its /metrics."""
    url = f"http://127.0.0.1:{platform.metrics_port_of('routing')}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(f'smsgw_carrier_healthy{{carrier="{carrier}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no smsgw_carrier_healthy for {carrier} in routing's /metrics:\n{text[:2000]}")


async def test_a_carrier_whose_receipts_nearly_all_fail_is_skipped(broker, tmp_path):
    """The SMSC simulator takes every message to +1415555068x and reports it UNDELIVERABLE (a grey
    route): its submits all succeed, its receipts all fail. Once routing has read enough of
    those receipts, the route's next messages go to its other carrier."""
    grey = {"name": "grey", "prefix": "+141555506", "carriers": ["smsc-sim", "twilio-sim"]}
    health = {**HEALTH, "min_receipts": 5, "max_undelivered_ratio": 0.9}
    platform = await start_platform(
        broker, tmp_path, "grey", config_sections={"routes": [*ROUTES, grey], "carrier_health": health}
    )
    try:
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            before = await stub.SendMessage(send_request(to="+14155550690", body="before"), metadata=ACCOUNT)
            message = await wait_for_status(stub, before.message.id, {st.DELIVERED}, timeout=30)
            assert message.carrier == "smsc-sim", "the route's first carrier while it is healthy"
            lost = [
                (await stub.SendMessage(send_request(to=f"+1415555068{n}", body=f"grey {n}"), metadata=ACCOUNT))
                for n in range(10)  # with the one delivered before: 10 of 11 failed, over 0.9
            ]
            for sent in lost:
                message = await wait_for_status(stub, sent.message.id, {st.UNDELIVERED}, timeout=30)
                assert message.carrier == "smsc-sim"
            await asyncio.sleep(1.0)  # routing reads the receipts after the statuses are folded
            after = await stub.SendMessage(send_request(to="+14155550690", body="after"), metadata=ACCOUNT)
            message = await wait_for_status(stub, after.message.id, {st.DELIVERED}, timeout=30)
            assert message.carrier == "twilio-sim", "skipped for its receipts"
            assert await _healthy(platform, "smsc-sim") == 0.0
    finally:
        platform.stop()
