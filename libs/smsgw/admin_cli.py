"""`smsgw admin ...`: accounts and API keys through intake's AdminService.

  smsgw admin create-account acme --name "ACME Ltd"
  smsgw admin create-key --account acme [--scopes send,read] [--name "billing backend"]
  smsgw admin list-accounts | list-keys --account acme | audit [--account acme]
  smsgw admin revoke-key KEY_ID [--reason "..."] | rotate-key KEY_ID
  smsgw admin set-limits acme --per-second 50 --burst 100 --per-day 100000
  smsgw admin set-senders acme ACME +14155550123 [--pool]
  smsgw admin set-destinations acme US CA GB
  smsgw admin set-encoding acme --smart | --exact
  smsgw admin issue-device-token acme --carrier acme-phones --device-id pixel-1 [--sim-slot 0]
  smsgw admin list-device-tokens --account acme | revoke-device-token TOKEN_ID [--reason "..."]
  smsgw admin bootstrap-key --account operator --scopes admin   (offline: a key for the bootstrap file)

The admin key comes from --admin-key, else $SMSGW_ADMIN_API_KEY, else the file
$SMSGW_ADMIN_API_KEY_FILE (default .run/admin-api-key, which `make run` writes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict

from smsgw.domain.credentials import SCOPES_BY_NAME, configured_entry, new_key, parse_scopes, scope_names
from smsgw.grpcx.errors import error_info_of
from smsgw.v1 import accounts_pb2 as ac
from smsgw.v1 import accounts_pb2_grpc as ac_grpc


def key_from(explicit: str | None, variable: str, file_variable: str, default_file: str) -> str:
    """A key given on the command line, in an environment variable, or in a file (in that order)."""
    if explicit:
        return explicit
    if os.environ.get(variable):
        return os.environ[variable]
    path = Path(os.environ.get(file_variable, default_file))
    return path.read_text().strip() if path.is_file() else ""


def open_channel(server: str, ca_file: str | None, plaintext: bool) -> grpc.aio.Channel:
    """A channel to intake: TLS trusting `ca_file` (default .run/tls/ca.crt when make run made one,
    else the system's roots), or plaintext when asked."""
    if plaintext:
        return grpc.aio.insecure_channel(server)
    path = Path(ca_file or os.environ.get("SMSGW_CA_FILE", ".run/tls/ca.crt"))
    roots = path.read_bytes() if path.is_file() else None
    return grpc.aio.secure_channel(server, grpc.ssl_channel_credentials(roots))


def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=os.environ.get("SMSGW_SERVER", "127.0.0.1:16051"))
    p.add_argument(
        "--ca-file",
        help="PEM CA to trust for intake's certificate (default: $SMSGW_CA_FILE, else "
        ".run/tls/ca.crt if make run made it, else the system's roots)",
    )
    p.add_argument(
        "--plaintext",
        action="store_true",
        default=os.environ.get("SMSGW_PLAINTEXT") == "true",
        help="no TLS (an intake started with SMSGW_GRPC_PLAINTEXT=true)",
    )


def _scopes(text: str) -> list[int]:
    try:
        return sorted(parse_scopes(s.strip() for s in text.split(",") if s.strip()))
    except Exception as error:  # noqa: BLE001 - shown to the person typing
        raise SystemExit(f"error: --scopes: {error}") from None


def _device_token_line(token: ac.DeviceToken) -> str:
    state = (
        f"revoked {token.revoked_at.ToDatetime().isoformat(timespec='seconds')}"
        if token.HasField("revoked_at")
        else "live"
    )
    slot = f" sim {token.sim_slot}" if token.HasField("sim_slot") else ""
    return f"{token.id}  {token.account_id:<16} {token.carrier}/{token.device_id}{slot}  {state}"


def _key_line(key: ac.ApiKey) -> str:
    state = (
        "revoked " + key.revoked_at.ToDatetime().isoformat(timespec="seconds") if key.HasField("revoked_at") else "live"
    )
    return (
        f"{key.id}  {key.account_id:<16} {','.join(scope_names(key.scopes)):<28} {state:<27} "
        f"by {key.created_by:<16} {key.name}"
    )


async def run(args) -> int:
    if args.command == "bootstrap-key":
        _, key = new_key()
        entry = configured_entry(key, args.account, scope_names(_scopes(args.scopes)), args.name)
        print("key (give it to its holder; it is not stored anywhere):")
        print(f"  {key}")
        print('entry for SMSGW_BOOTSTRAP_KEYS_FILE\'s "keys" list:')
        print(f"  {json.dumps(entry)}")
        return 0
    admin_key = key_from(args.admin_key, "SMSGW_ADMIN_API_KEY", "SMSGW_ADMIN_API_KEY_FILE", ".run/admin-api-key")
    if not admin_key:
        print(
            "error: no admin key: pass --admin-key, set SMSGW_ADMIN_API_KEY, or run `make run` "
            "(it writes .run/admin-api-key)",
            file=sys.stderr,
        )
        return 1
    metadata = (("authorization", f"Bearer {admin_key}"),)
    async with open_channel(args.server, args.ca_file, args.plaintext) as channel:
        admin = ac_grpc.AdminServiceStub(channel)
        if args.command == "create-account":
            reply = await admin.CreateAccount(
                ac.CreateAccountRequest(id=args.id, display_name=args.name), metadata=metadata, timeout=30
            )
            print(f"account {reply.account.id} created")
        elif args.command == "list-accounts":
            reply = await admin.ListAccounts(ac.ListAccountsRequest(), metadata=metadata, timeout=30)
            for account in reply.accounts:
                print(f"{account.id:<24} {account.display_name}")
        elif args.command == "create-key":
            reply = await admin.CreateApiKey(
                ac.CreateApiKeyRequest(
                    account_id=args.account,
                    scopes=_scopes(args.scopes),  # type: ignore[arg-type]  # enum values are ints
                    name=args.name,
                ),
                metadata=metadata,
                timeout=30,
            )
            print(_key_line(reply.key))
            print(f"secret (shown once; send it as 'authorization: Bearer <secret>'):\n  {reply.secret}")
        elif args.command == "list-keys":
            reply = await admin.ListApiKeys(
                ac.ListApiKeysRequest(account_id=args.account), metadata=metadata, timeout=30
            )
            for key in reply.keys:
                print(_key_line(key))
        elif args.command == "revoke-key":
            reply = await admin.RevokeApiKey(
                ac.RevokeApiKeyRequest(key_id=args.key_id, reason=args.reason), metadata=metadata, timeout=30
            )
            print(_key_line(reply.key))
        elif args.command == "rotate-key":
            reply = await admin.RotateApiKey(ac.RotateApiKeyRequest(key_id=args.key_id), metadata=metadata, timeout=30)
            print(_key_line(reply.revoked))
            print(_key_line(reply.key))
            print(f"secret of the new key (shown once):\n  {reply.secret}")
        elif args.command == "set-limits":
            reply = await admin.SetAccountLimits(
                ac.SetAccountLimitsRequest(
                    account_id=args.account,
                    limits=ac.AccountLimits(
                        messages_per_second=args.per_second, burst=args.burst, messages_per_day=args.per_day
                    ),
                ),
                metadata=metadata,
                timeout=30,
            )
            limits = reply.account.limits
            print(
                f"account {reply.account.id}: {limits.messages_per_second:g}/s (burst {limits.burst}), "
                f"{limits.messages_per_day}/day (0: the server's default)"
            )
        elif args.command == "set-senders":
            reply = await admin.SetAccountSenders(
                ac.SetAccountSendersRequest(account_id=args.account, senders=args.senders, pool=args.pool),
                metadata=metadata,
                timeout=30,
            )
            senders = list(reply.account.senders)
            print(
                f"account {reply.account.id} sends from: {', '.join(senders) if senders else 'the default sender only'}"
                f"{f' (default {senders[0]})' if senders else ''}"
                f"{'; a pool: a local number by destination, sticky per recipient' if reply.account.sender_pool else ''}"
            )
        elif args.command == "set-encoding":
            reply = await admin.SetAccountEncoding(
                ac.SetAccountEncodingRequest(account_id=args.account, smart_encoding=args.smart),
                metadata=metadata,
                timeout=30,
            )
            print(
                f"account {reply.account.id}: "
                + (
                    "smart encoding (look-alike characters replaced when that keeps a message GSM-7)"
                    if reply.account.smart_encoding
                    else "texts sent exactly as given"
                )
            )
        elif args.command == "set-destinations":
            reply = await admin.SetAccountDestinations(
                ac.SetAccountDestinationsRequest(account_id=args.account, countries=args.countries),
                metadata=metadata,
                timeout=30,
            )
            countries = list(reply.account.destination_countries)
            print(f"account {reply.account.id} sends to: {', '.join(countries) if countries else 'the default list'}")
        elif args.command == "issue-device-token":
            request = ac.IssueDeviceTokenRequest(
                account_id=args.account, carrier=args.carrier, device_id=args.device_id
            )
            if args.sim_slot is not None:
                request.sim_slot = args.sim_slot
            reply = await admin.IssueDeviceToken(request, metadata=metadata, timeout=30)
            print(_device_token_line(reply.token))
            print(f"token for the phone's app (shown once):\n  {reply.secret}")
        elif args.command == "list-device-tokens":
            reply = await admin.ListDeviceTokens(
                ac.ListDeviceTokensRequest(account_id=args.account), metadata=metadata, timeout=30
            )
            for token in reply.tokens:
                print(_device_token_line(token))
        elif args.command == "revoke-device-token":
            reply = await admin.RevokeDeviceToken(
                ac.RevokeDeviceTokenRequest(token_id=args.token_id, reason=args.reason), metadata=metadata, timeout=30
            )
            print(_device_token_line(reply.token))
        elif args.command == "audit":
            reply = await admin.ListAuditEvents(
                ac.ListAuditEventsRequest(account_id=args.account or ""), metadata=metadata, timeout=30
            )
            for event in reply.events:
                kind = event.WhichOneof("payload")
                detail = MessageToDict(getattr(event, kind), preserving_proto_field_name=True) if kind else {}
                detail.pop("secret_sha256", None)
                print(
                    f"{event.occurred_at.ToDatetime().isoformat(timespec='seconds')}  {event.account_id:<16} "
                    f"{event.type.removeprefix('smsgw.v1.'):<15} by {event.actor:<16} {detail}"
                )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smsgw admin", description="accounts and API keys (needs an admin key)")
    add_connection_arguments(p)
    p.add_argument(
        "--admin-key", help="an API key with the admin scope (default: $SMSGW_ADMIN_API_KEY or .run/admin-api-key)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    account = sub.add_parser("create-account")
    account.add_argument("id")
    account.add_argument("--name", default="")
    sub.add_parser("list-accounts")
    scopes_help = f"comma-separated: {', '.join(sorted(SCOPES_BY_NAME))}"
    key = sub.add_parser("create-key")
    key.add_argument("--account", required=True)
    key.add_argument("--scopes", default="send,read", help=scopes_help)
    key.add_argument("--name", default="")
    sub.add_parser("list-keys").add_argument("--account", required=True)
    revoke = sub.add_parser("revoke-key")
    revoke.add_argument("key_id")
    revoke.add_argument("--reason", default="")
    sub.add_parser("rotate-key").add_argument("key_id")
    sub.add_parser("audit").add_argument("--account")
    senders = sub.add_parser(
        "set-senders",
        help="the numbers and sender ids the account may send from "
        "(the first is its default; none: the server's default only)",
    )
    senders.add_argument("account")
    senders.add_argument("senders", nargs="*")
    senders.add_argument(
        "--pool",
        action="store_true",
        help="a message without a sender gets one of these numbers in the destination's country, the same "
        "one for the same recipient (else the default)",
    )
    encoding = sub.add_parser("set-encoding", help="smart encoding on (--smart) or off (--exact) for the account")
    encoding.add_argument("account")
    choice = encoding.add_mutually_exclusive_group(required=True)
    choice.add_argument("--smart", action="store_true", help="replace look-alikes (curly quotes, dashes, ...)")
    choice.add_argument("--exact", action="store_true", help="send every text exactly as given (the default)")
    destinations = sub.add_parser(
        "set-destinations", help="the countries the account may send to (ISO codes; none: the server's default list)"
    )
    destinations.add_argument("account")
    destinations.add_argument("countries", nargs="*")
    limits = sub.add_parser("set-limits", help="an account's sending rate, burst and daily quota (0: the default)")
    limits.add_argument("account")
    limits.add_argument("--per-second", type=float, default=0.0)
    limits.add_argument("--burst", type=int, default=0)
    limits.add_argument("--per-day", type=int, default=0)
    device = sub.add_parser(
        "issue-device-token", help="a token for one Android gateway phone of the account's Android carrier"
    )
    device.add_argument("account")
    device.add_argument("--carrier", required=True, help="the account's Android carrier (carrier-adapter's list)")
    device.add_argument("--device-id", required=True, help="the id the phone's app says in its hello")
    device.add_argument("--sim-slot", type=int, default=None, help="preferred SIM slot (0-7); unset: the phone's own")
    sub.add_parser("list-device-tokens").add_argument("--account", required=True)
    revoke_device = sub.add_parser("revoke-device-token")
    revoke_device.add_argument("token_id")
    revoke_device.add_argument("--reason", default="")
    boot = sub.add_parser("bootstrap-key", help="offline: make a key and its entry for SMSGW_BOOTSTRAP_KEYS_FILE")
    boot.add_argument("--account", required=True)
    boot.add_argument("--scopes", default="admin", help=scopes_help)
    boot.add_argument("--name", default="")
    return p


def admin_main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except grpc.aio.AioRpcError as error:
        info = error_info_of(error)
        print(f"error: {error.code().name}{f' [{info.reason}]' if info else ''}: {error.details()}", file=sys.stderr)
        return 1
