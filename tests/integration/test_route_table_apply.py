"""The route table changed at run time: `smsgw routes apply FILE` makes a file's routes the table
routing uses, through the admin API, as an admin event every routing replica reads (kept, with
who and why). Real processes on each broker, routing as two replicas sharing the partitions (so
each applied table must reach both); the CLI as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import grpc
import pytest

from smsgw.domain import status as st
from smsgw.grpcx.errors import error_info_of
from smsgw.v1 import accounts_pb2 as ac
from smsgw.v1 import accounts_pb2_grpc as ac_grpc
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.conftest import start_platform
from tests.integration.helpers import scraped_metrics, send_request, smsc_submitted, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NEW_TABLE = """\
# every number to the carrier without receipts, except the Twilio simulator's
routes:
  - name: everything-else
    carrier: smsc-sim-nodlr
  - name: twilio
    prefix: "+1415555077"
    carrier: twilio-sim
"""


@pytest.fixture(scope="module")
async def platform(broker, tmp_path_factory):
    running = await start_platform(
        broker,
        tmp_path_factory.mktemp(f"routes-apply-{broker.kind}"),
        "rtapply",
        auth="api-keys",
        android_phone=False,
        replicas={"routing": 2},
    )
    yield running
    running.stop()


def cli(platform, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "smsgw.cli",
            "routes",
            *args,
            "--server",
            platform.intake_address,
            "--plaintext",
            "--admin-key",
            platform.admin_key,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def carrier_of_a_new_message(platform, stub, key: str) -> str:
    """The carrier new messages go to, the same for all of them: sixteen messages, spread over the
    partitions by their ids and so over both routing replicas (both would have to miss for all
    sixteen to land on one: 2 in 65,536)."""
    metadata = (("authorization", f"Bearer {key}"),)
    sent = await asyncio.gather(
        *(stub.SendMessage(send_request(body=f"which carrier? {n}"), metadata=metadata) for n in range(16))
    )
    carriers = set()
    for answer in sent:
        message = await wait_for_status(stub, answer.message.id, {st.SENT, st.DELIVERED}, timeout=30, metadata=metadata)
        carriers.add(message.carrier)
    assert len(carriers) == 1, f"the routing replicas routed alike messages apart: {carriers}"
    return carriers.pop()


async def test_an_applied_table_is_used_at_once_kept_and_survives_a_routing_restart(platform, tmp_path):
    key = await platform.api_key("default")
    async with platform.intake_channel() as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        admin = ac_grpc.AdminServiceStub(channel)
        admin_metadata = (("authorization", f"Bearer {platform.admin_key}"),)
        assert await carrier_of_a_new_message(platform, stub, key) == "smsc-sim", "the configuration's table"
        # Both routing replicas hold partitions of the events topic (so both route the messages above).
        for name in platform.replica_names("routing"):
            owned = {
                dict(labels)["partition"]
                for (metric, labels), _ in (await scraped_metrics(platform.metrics_port_of(name))).items()
                if metric == "smsgw_consumer_lag" and dict(labels)["topic"].endswith("smsgw.message-events.v1")
            }
            assert 0 < len(owned) < 12, (name, owned)
        before = (await admin.GetRouteTable(ac.GetRouteTableRequest(), metadata=admin_metadata)).versions
        assert not before
        assert "no route table applied" in cli(platform, "show").stdout

        table = tmp_path / "routes.yaml"
        table.write_text(NEW_TABLE)
        applied = cli(platform, "apply", str(table), "--comment", "SMSC maintenance")
        assert applied.returncode == 0, applied.stderr
        assert "route table version 1 applied (2 routes)" in applied.stdout
        assert await carrier_of_a_new_message(platform, stub, key) == "smsc-sim-nodlr"

        shown = cli(platform, "show", "--history")
        assert "version 1" in shown.stdout and "from routes.yaml  SMSC maintenance" in shown.stdout
        assert "everything-else  [prefix (any); failover: smsc-sim-nodlr]" in shown.stdout
        audit = await admin.ListAuditEvents(ac.ListAuditEventsRequest(), metadata=admin_metadata)
        kinds = [e.WhichOneof("payload") for e in audit.events]
        assert "route_table_applied" in kinds

        # Restarted routing replicas read the applied table before they route anything.
        for name in platform.replica_names("routing"):
            await platform.restart(name)
        assert await carrier_of_a_new_message(platform, stub, key) == "smsc-sim-nodlr"

        # Back to the configuration's routes: apply them as version 2.
        table.write_text('routes:\n  - {carrier: smsc-sim}\n  - {prefix: "+1415555077", carrier: twilio-sim}\n')
        again = cli(platform, "apply", str(table), "--expected-version", "1")
        assert again.returncode == 0 and "version 2 applied" in again.stdout, again.stderr
        assert await carrier_of_a_new_message(platform, stub, key) == "smsc-sim"


async def test_a_bad_table_a_stale_version_or_a_customer_key_change_nothing(platform, tmp_path):
    key = await platform.api_key("default")
    async with platform.intake_channel() as channel:
        admin = ac_grpc.AdminServiceStub(channel)
        admin_metadata = (("authorization", f"Bearer {platform.admin_key}"),)
        current = (await admin.GetRouteTable(ac.GetRouteTableRequest(), metadata=admin_metadata)).versions
        version = current[-1].version if current else 0

        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await admin.ApplyRouteTable(
                ac.ApplyRouteTableRequest(routes_json=json.dumps({"routes": [{"prefix": "44", "carrier": "x"}]})),
                metadata=admin_metadata,
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "routes_json: routes[0].prefix: '44' must be '+' followed by" in bad.value.details()
        info = error_info_of(bad.value)
        assert info is not None and info.metadata["field"] == "routes_json"

        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await admin.ApplyRouteTable(
                ac.ApplyRouteTableRequest(
                    routes_json=json.dumps({"routes": [{"carrier": "smsc-sim"}]}), expected_version=version + 5
                ),
                metadata=admin_metadata,
            )
        assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = error_info_of(stale.value)
        assert info is not None and info.reason == "ROUTE_TABLE_CHANGED"

        with pytest.raises(grpc.aio.AioRpcError) as customer:
            await admin.ApplyRouteTable(
                ac.ApplyRouteTableRequest(routes_json=json.dumps({"routes": [{"carrier": "smsc-sim"}]})),
                metadata=(("authorization", f"Bearer {key}"),),
            )
        assert customer.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # A file with a problem is refused by the CLI with its line, before anything is sent.
        table = tmp_path / "bad.yaml"
        table.write_text('routes:\n  - {prefix: "44", carrier: smsc-sim}\n')
        refused = cli(platform, "apply", str(table))
        assert refused.returncode == 1 and f"{table}:2:" in refused.stderr and "routes[0].prefix" in refused.stderr

        after = (await admin.GetRouteTable(ac.GetRouteTableRequest(), metadata=admin_metadata)).versions
        assert (after[-1].version if after else 0) == version, "nothing was applied"


async def test_two_tables_applied_at_once_get_distinct_versions_or_one_is_refused(platform):
    async with platform.intake_channel() as channel:
        admin = ac_grpc.AdminServiceStub(channel)
        admin_metadata = (("authorization", f"Bearer {platform.admin_key}"),)

        async def apply(carrier: str):
            request = ac.ApplyRouteTableRequest(
                routes_json=json.dumps({"routes": [{"carrier": carrier}]}), comment=carrier
            )
            try:
                return await admin.ApplyRouteTable(request, metadata=admin_metadata)
            except grpc.aio.AioRpcError as error:
                info = error_info_of(error)
                assert info is not None and info.reason == "ROUTE_TABLE_CHANGED", error.details()
                return None

        results = await asyncio.gather(apply("smsc-sim"), apply("smsc-sim-nodlr"), apply("smsc-sim"))
        won = [r.table for r in results if r is not None]
        assert won, "at least one applies"
        history = (await admin.GetRouteTable(ac.GetRouteTableRequest(history=True), metadata=admin_metadata)).versions
        versions = [v.version for v in history]
        assert versions == sorted(set(versions)), "one version per number, in order"
        by_version = {v.version: v for v in history}
        for table in won:
            # What each caller was told is what every reader of the log holds for that version.
            assert by_version[table.version].comment == table.comment


async def test_a_route_that_rewrites_senders_sends_from_its_sender_and_says_so(platform):
    key = await platform.api_key("default")
    metadata = (("authorization", f"Bearer {key}"),)
    rewriting = {
        "routes": [
            {"carrier": "smsc-sim", "name": "rewrite-all", "rewrite_sender": {"to": "+14155550199"}},
            {"prefix": "+1415555077", "carrier": "twilio-sim"},
        ]
    }
    async with platform.intake_channel() as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        admin = ac_grpc.AdminServiceStub(channel)
        admin_metadata = (("authorization", f"Bearer {platform.admin_key}"),)
        await admin.ApplyRouteTable(
            ac.ApplyRouteTableRequest(routes_json=json.dumps(rewriting), comment="rewrite"), metadata=admin_metadata
        )
        try:
            sent = await stub.SendMessage(send_request(to="+14155550142", body="rewritten sender"), metadata=metadata)
            asked = getattr(sent.message, "from")
            assert asked != "+14155550199"
            message = await wait_for_status(
                stub, sent.message.id, {st.SENT, st.DELIVERED}, timeout=30, metadata=metadata
            )
            assert getattr(message, "from") == "+14155550199", "the message shows the sender the recipient sees"
            history = await stub.GetMessageHistory(api.GetMessageHistoryRequest(id=sent.message.id), metadata=metadata)
            [routed] = [e.event.message_routed for e in history.entries if e.event.HasField("message_routed")]
            assert routed.sender == "+14155550199" and routed.route == "rewrite-all"
            [queued] = [e.event.message_queued for e in history.entries if e.event.HasField("message_queued")]
            assert getattr(queued, "from") == asked, "the request's sender stays in the log"
            submits = [
                s for s in await smsc_submitted(platform) if bytes.fromhex(s["user_data_hex"]) == b"rewritten sender"
            ]
            assert [s["source"] for s in submits] == ["14155550199"], submits
        finally:
            await admin.ApplyRouteTable(
                ac.ApplyRouteTableRequest(
                    routes_json=json.dumps(
                        {"routes": [{"carrier": "smsc-sim"}, {"prefix": "+1415555077", "carrier": "twilio-sim"}]}
                    ),
                    comment="back",
                ),
                metadata=admin_metadata,
            )


async def test_routes_explain_live_shows_the_table_in_use_and_the_carriers_health(platform):
    async with platform.intake_channel() as channel:
        admin = ac_grpc.AdminServiceStub(channel)
        admin_metadata = (("authorization", f"Bearer {platform.admin_key}"),)
        current = (await admin.GetRouteTable(ac.GetRouteTableRequest(), metadata=admin_metadata)).versions
        applied = await admin.ApplyRouteTable(
            ac.ApplyRouteTableRequest(
                routes_json=json.dumps(
                    {
                        "routes": [
                            {"name": "live", "carrier": "smsc-sim"},
                            {"prefix": "+1415555077", "carrier": "twilio-sim"},
                        ]
                    }
                ),
                expected_version=current[-1].version if current else 0,
            ),
            metadata=admin_metadata,
        )
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await admin.ExplainRoute(ac.ExplainRouteRequest(to="12"), metadata=admin_metadata)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "to:" in bad.value.details()
        key = await platform.api_key("default")
        with pytest.raises(grpc.aio.AioRpcError) as customer:
            await admin.ExplainRoute(
                ac.ExplainRouteRequest(to="+14155550100"), metadata=(("authorization", f"Bearer {key}"),)
            )
        assert customer.value.code() == grpc.StatusCode.PERMISSION_DENIED
    shown = cli(platform, "explain", "+14155550100", "--from", "ACME", "--live")
    assert shown.returncode == 0, shown.stderr
    version = applied.table.version
    assert f"routes from route table version {version} (smsgw routes apply)" in shown.stdout, shown.stdout
    assert "-> 2. live  [prefix (any); failover: smsc-sim]  matches" in shown.stdout  # after +1415555077
    assert "chosen: route live, carrier smsc-sim" in shown.stdout
    assert "carrier smsc-sim: healthy (submits failed 0% of" in shown.stdout
