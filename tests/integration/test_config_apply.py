"""`smsgw config apply FILE`: the configuration file's `accounts` (and `routes`) made the running
platform's through the admin API, as an operator runs it. Each change is an audited event; an
unchanged file changes nothing; a customer's key changes nothing. Real processes on each broker."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from smsgw.v1 import accounts_pb2 as ac
from smsgw.v1 import accounts_pb2_grpc as ac_grpc
from tests.conftest import start_platform

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

FILE = """\
accounts:
  - id: cfg-acme
    display_name: ACME Ltd
    limits: {messages_per_second: 50, burst: 100, messages_per_day: 100000}
    senders: [ACME, "+1 415 555 0123"]
    sender_pool: true
    destination_countries: [us, CA]
    smart_encoding: true
  - id: cfg-globex
routes:
  - name: everything
    carrier: smsc-sim
"""


def apply(platform, path, *extra: str, key: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "smsgw.cli",
            "config",
            "apply",
            str(path),
            *extra,
            "--server",
            platform.intake_address,
            "--plaintext",
            "--admin-key",
            key or platform.admin_key,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_config_apply_makes_the_platforms_accounts_match_the_file_and_then_changes_nothing(broker, tmp_path):
    platform = await start_platform(broker, tmp_path, "cfgapply", auth="api-keys", android_phone=False)
    try:
        path = tmp_path / "smsgw.yaml"
        path.write_text(FILE)
        metadata = (("authorization", f"Bearer {platform.admin_key}"),)
        async with platform.intake_channel() as channel:
            admin = ac_grpc.AdminServiceStub(channel)

            async def accounts() -> dict[str, ac.Account]:
                listed = await admin.ListAccounts(ac.ListAccountsRequest(), metadata=metadata)
                return {a.id: a for a in listed.accounts}

            async def audit(account: str) -> list[str]:
                events = await admin.ListAuditEvents(ac.ListAuditEventsRequest(account_id=account), metadata=metadata)
                return [e.type for e in events.events]

            dry = apply(platform, path, "--dry-run")
            assert dry.returncode == 0, dry.stderr
            assert "account cfg-acme: would be created (ACME Ltd)" in dry.stdout
            assert "routes: would apply a new version (1 routes)" in dry.stdout
            assert "cfg-acme" not in await accounts(), "a dry run changes nothing"

            done = apply(platform, path)
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            assert lines[:6] == [
                "account cfg-acme: created (ACME Ltd)",
                "account cfg-acme: set limits 50/s, burst 100, 100000 a day",
                "account cfg-acme: set senders ACME, +14155550123 (pool)",
                "account cfg-acme: set destination countries US, CA",
                "account cfg-acme: set smart encoding on",
                "account cfg-globex: created (no display name)",
            ], lines
            assert "routes: version 1 applied (1 routes)" in lines
            acme = (await accounts())["cfg-acme"]
            assert acme.display_name == "ACME Ltd"
            assert (acme.limits.messages_per_second, acme.limits.burst, acme.limits.messages_per_day) == (
                50,
                100,
                100000,
            )
            assert list(acme.senders) == ["ACME", "+14155550123"] and acme.sender_pool
            assert list(acme.destination_countries) == ["US", "CA"] and acme.smart_encoding
            history = await audit("cfg-acme")
            assert len(history) == 5, history  # one audited event per change

            again = apply(platform, path)
            assert again.returncode == 0, again.stderr
            assert "account cfg-acme: unchanged" in again.stdout and "account cfg-globex: unchanged" in again.stdout
            assert "routes: unchanged (version 1)" in again.stdout
            assert "account operator: not in the file (left as it is)" in again.stdout
            assert await audit("cfg-acme") == history, "an unchanged file appends nothing"

            path.write_text(FILE.replace("messages_per_second: 50", "messages_per_second: 20"))
            changed = apply(platform, path)
            assert changed.returncode == 0, changed.stderr
            assert "account cfg-acme: set limits 20/s, burst 100, 100000 a day" in changed.stdout
            assert (await accounts())["cfg-acme"].limits.messages_per_second == 20
            assert len(await audit("cfg-acme")) == 6

            # A customer's key changes nothing; a bad file is refused at its line before any call.
            customer = apply(platform, path, key=await platform.api_key("default"))
            assert customer.returncode == 1 and "PERMISSION_DENIED" in customer.stderr
            path.write_text(textwrap.dedent(FILE).replace("[us, CA]", "[us, XX]").replace("20", "30"))
            bad = apply(platform, path)
            assert bad.returncode == 1 and "smsgw.yaml:7:" in bad.stderr and "'XX'" in bad.stderr
            assert (await accounts())["cfg-acme"].limits.messages_per_second == 20
        # Every service stops on SIGTERM by itself, exit code 0 (not killed after the grace period:
        # a watched task that never ended once held intake's shutdown for 10 s).
        codes = platform.stop()
        assert {name: codes[name] for name in platform.service_processes} == dict.fromkeys(
            platform.service_processes, 0
        )
    finally:
        platform.stop()
