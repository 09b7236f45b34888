"""`smsgw`: the command-line client of the public gRPC API.

  smsgw send --to +14155550100 --body "hi"   prints the id, then each status until a final one
  smsgw get ID | watch ID | history ID | list [--status S] | cancel ID
  smsgw watch-all | inbound | simulate-mo --from +14155550177 --text STOP
  smsgw projections rebuild --store sqlite:///path.db --bootstrap 127.0.0.1:9092
  smsgw webhooks dead-letters | redeliver --all
  smsgw config check smsgw.yaml | routes explain +447700900123 --from ACME
  smsgw dlq list | replay --offset N | --all
  smsgw admin create-account ID | create-key --account ID | list-keys | revoke-key | rotate-key | audit

Calls carry the account's API key: --api-key, else $SMSGW_API_KEY, else the file
$SMSGW_API_KEY_FILE (default .run/dev-api-key, which `make run` writes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from importlib.metadata import entry_points

import grpc
from google.protobuf.json_format import MessageToDict

from smsgw.admin_cli import add_connection_arguments, admin_main, key_from, open_channel
from smsgw.config_cli import config_main, routes_main
from smsgw.grpcx.errors import error_info_of
from smsgw.grpcx.resume import resuming
from smsgw.v1 import message_pb2 as mp
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc

STATUS = mp.MessageStatus.Name
FINAL = {"DELIVERED", "UNDELIVERED", "FAILED", "CANCELED", "EXPIRED"}


def _time(ts) -> str:
    return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds") if ts.seconds or ts.nanos else "-"


def _status_line(message: mp.Message) -> str:
    line = f"{_time(message.updated_at)}  {STATUS(message.status)}"
    if message.carrier:
        line += f"  carrier={message.carrier}"
    if message.carrier_message_id:
        line += f" carrier_id={message.carrier_message_id}"
    if message.error_message:
        line += f"  error={message.error_code} {message.error_reason}: {message.error_message}"
    return line


async def _watch(stub, message_id: str, metadata) -> int:
    """Prints every transition once, in order: the ones before we started watching (from the
    snapshot's history), then each new one as it happens."""
    printed = 0
    async for update in stub.WatchMessage(api.WatchMessageRequest(id=message_id), metadata=metadata):
        message = update.message
        for transition in message.transitions[printed:]:
            print(_transition_line(message, transition), flush=True)
        printed = max(printed, len(message.transitions))
    return 0


def _transition_line(message: mp.Message, transition) -> str:
    line = f"{_time(transition.at)}  {STATUS(transition.status)}"
    if message.carrier and transition.status != mp.MessageStatus.QUEUED:
        line += f"  carrier={message.carrier}"
    if message.carrier_message_id and transition.status not in (
        mp.MessageStatus.QUEUED,
        mp.MessageStatus.SENDING,
        mp.MessageStatus.SCHEDULED,
    ):
        line += f" carrier_id={message.carrier_message_id}"
    if message.error_message and transition.status == message.status:
        line += f"  error={message.error_code} {message.error_reason}: {message.error_message}"
    return line


async def simulate_mo(args) -> int:
    """Plays a handset: asks the SMSC simulator to deliver an SMS to the gateway."""
    import aiohttp

    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://{args.smsc_control}/mo", json={"from": args.sender, "to": args.to, "text": args.text}
            ) as response:
                print(f"handset {args.sender} -> {args.to}: {args.text!r} ({response.status})")
                return 0 if response.status == 200 else 1
    except aiohttp.ClientError as exc:
        print(
            f"error: the SMSC simulator's control API at {args.smsc_control} did not answer ({exc}); "
            "is `make run` running?",
            file=sys.stderr,
        )
        return 1


async def run(args) -> int:
    if args.command == "simulate-mo":
        return await simulate_mo(args)
    api_key = key_from(args.api_key, "SMSGW_API_KEY", "SMSGW_API_KEY_FILE", ".run/dev-api-key")
    metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    if args.account:  # only a service key (act-as-any-account) may name another account
        metadata += (("x-smsgw-account", args.account),)
    async with open_channel(args.server, args.ca_file, args.plaintext) as channel:
        stub = api_grpc.MessagingServiceStub(channel)
        if args.command == "send":
            request = api.SendMessageRequest(to=args.to, body=args.body, idempotency_key=args.idempotency_key or "")
            if args.sender:
                setattr(request, "from", args.sender)
            if args.send_at:
                request.send_at.FromDatetime(datetime.fromisoformat(args.send_at))
            if args.priority == "high":
                request.priority = mp.MessagePriority.MESSAGE_PRIORITY_HIGH
            reply = await stub.SendMessage(request, metadata=metadata, timeout=30)
            m = reply.message
            print(
                f"{m.id}  ({m.segments} segment(s), {mp.Encoding.Name(m.encoding)}"
                f"{', duplicate of an earlier request' if reply.duplicate else ''})",
                flush=True,
            )
            if args.no_wait:
                print(_status_line(m))
                return 0
            return await _watch(stub, m.id, metadata)
        if args.command == "get":
            m = await stub.GetMessage(api.GetMessageRequest(id=args.id), metadata=metadata, timeout=30)
            print(_format_json(m))
            return 0
        if args.command == "watch":
            return await _watch(stub, args.id, metadata)
        if args.command == "history":
            reply = await stub.GetMessageHistory(
                api.GetMessageHistoryRequest(id=args.id), metadata=metadata, timeout=30
            )
            for entry in reply.entries:
                e = entry.event
                detail = (
                    MessageToDict(getattr(e, e.WhichOneof("payload")), preserving_proto_field_name=True)
                    if e.WhichOneof("payload")
                    else {}
                )
                detail.pop("content", None)
                print(
                    f"{_time(e.occurred_at)}  #{e.sequence:<2} {e.type.removeprefix('smsgw.v1.'):<22} "
                    f"by {e.producer:<32} -> {STATUS(entry.status_after):<11} {detail if detail else ''}"
                )
            return 0
        if args.command == "list":
            request = api.ListMessagesRequest(
                page_size=args.limit, statuses=[mp.MessageStatus.Value(s) for s in args.status or ()]
            )
            reply = await stub.ListMessages(request, metadata=metadata, timeout=30)
            for m in reply.messages:
                print(f"{m.id}  {STATUS(m.status):<11} {m.to:<16} {_time(m.created_at)}")
            if reply.next_page_token:
                print(f"(more: page token {reply.next_page_token})")
            return 0
        if args.command == "inbound":
            # A terminal that prints slower than messages come is ended by the server with the
            # cursor to go on from: `resuming` opens it again there.
            inbound = resuming(
                lambda cursor: stub.WatchInbound(api.WatchInboundRequest(cursor=cursor), metadata=metadata)
            )
            async for update in inbound:
                if update.HasField("message"):
                    m = update.message
                    print(
                        f"{_time(m.received_at)}  from {getattr(m, 'from')} to {m.to}"
                        f"{'  [' + m.keyword + ']' if m.keyword else ''}: {m.body}",
                        flush=True,
                    )
            return 0
        if args.command == "watch-all":
            updates = resuming(
                lambda cursor: stub.WatchMessages(api.WatchMessagesRequest(cursor=cursor), metadata=metadata)
            )
            async for update in updates:
                if update.event_id:
                    print(f"{update.message.id}  {_status_line(update.message)}", flush=True)
            return 0
        if args.command == "cancel":
            m = await stub.CancelMessage(api.CancelMessageRequest(id=args.id), metadata=metadata, timeout=30)
            print(_status_line(m))
            return 0
    return 2


def _format_json(message) -> str:
    import json

    return json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smsgw", description="smsgw command-line client")
    add_connection_arguments(p)
    p.add_argument(
        "--api-key",
        help="the account's API key (default: $SMSGW_API_KEY, or the file "
        "$SMSGW_API_KEY_FILE, default .run/dev-api-key)",
    )
    p.add_argument(
        "--account",
        default=os.environ.get("SMSGW_ACCOUNT"),
        help="act for this account (only keys with the act-as-any-account scope)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    send = sub.add_parser("send", help="send a message and follow its status")
    send.add_argument("--to", required=True)
    send.add_argument("--body", required=True)
    send.add_argument("--from", dest="sender")
    send.add_argument("--idempotency-key")
    send.add_argument("--send-at", help="ISO 8601 time with offset, e.g. 2026-12-01T09:00:00+00:00")
    send.add_argument(
        "--priority",
        choices=("normal", "high"),
        default="normal",
        help="high: one-time passwords and alerts, sent before the normal messages waiting for the same carrier",
    )
    send.add_argument("--no-wait", action="store_true", help="print the id and return")
    for name in ("get", "watch", "history", "cancel"):
        sub.add_parser(name).add_argument("id")
    sub.add_parser("inbound", help="stream inbound (MO) messages to the account's numbers")
    sub.add_parser("watch-all", help="stream every status change of the account's messages")
    mo = sub.add_parser("simulate-mo", help="dev: a simulated handset sends an SMS (e.g. STOP) via the SMSC simulator")
    mo.add_argument("--from", dest="sender", required=True)
    mo.add_argument("--to", default="+14155550000")
    mo.add_argument("--text", required=True)
    mo.add_argument("--smsc-control", default=os.environ.get("SMSGW_SMSC_CONTROL", "127.0.0.1:2776"))
    lst = sub.add_parser("list")
    statuses = [n for n in mp.MessageStatus.keys() if n != "MESSAGE_STATUS_UNSPECIFIED"]  # noqa: SIM118 - an enum wrapper, not a dict
    lst.add_argument("--status", action="append", choices=statuses)
    lst.add_argument("--limit", type=int, default=20)
    return p


#: Subcommand families that services add (pyproject's [project.entry-points."smsgw.commands"]):
#: `smsgw webhooks ...` belongs to receipt. The shared library names no service.
COMMANDS_GROUP = "smsgw.commands"


def _plugged_in(name: str):
    for entry in entry_points(group=COMMANDS_GROUP):
        if entry.name == name:
            return entry.load()
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Subcommand families with their own parsers (so `smsgw projections --help` reaches them).
    if argv[:1] == ["projections"]:
        from smsgw.projections.cli import projections_main

        return projections_main(argv[1:])
    if argv[:1] == ["admin"]:
        return admin_main(argv[1:])
    if argv[:1] == ["config"]:
        return config_main(argv[1:])
    if argv[:1] == ["dlq"]:
        from smsgw.dead_letters import dlq_main

        return dlq_main(argv[1:])
    if argv[:1] == ["routes"]:
        return routes_main(argv[1:])
    if argv and (command := _plugged_in(argv[0])) is not None:
        return command(argv[1:])
    args = parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except grpc.aio.AioRpcError as error:
        info = error_info_of(error)
        reason = f" [{info.reason}]" if info else ""
        print(f"error: {error.code().name}{reason}: {error.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
