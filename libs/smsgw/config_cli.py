"""`smsgw config check|apply FILE` and `smsgw routes ...`: the configuration file.

smsgw config check smsgw.yaml
    every problem with its line (`smsgw.yaml:14:9: routes[1].prefix: ...`), exit 1; or a
    summary of what the file declares, exit 0
smsgw config apply smsgw.yaml [--dry-run]   (admin key)
    makes the running platform match the file's run-time sections: each account of `accounts`
    created or changed to match (smsgw.domain.account_specs), and `routes` applied as a new
    route table version when it differs from the one in use; every change through the admin
    API, an audited event. Prints one line per account and for the routes; --dry-run only says
    what it would do
smsgw routes explain +447700900123 --from ACME [--account acme] [--tag otp] [--config smsgw.yaml]
    the route that wins for such a message, why, the carrier chosen, and why each route
    before it does not match; with --live, asked of the running platform: the table routing
    uses now and the carriers' health from the event log (admin key)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid

import grpc

from smsgw import config_file
from smsgw.admin_cli import add_connection_arguments, key_from, open_channel
from smsgw.domain.account_specs import AccountSpec, AccountState, Step, load_account_section, plan
from smsgw.domain.credentials import limits_message, limits_of
from smsgw.domain.limits import Limits
from smsgw.domain.route_explanation import (
    CarrierHealthState,
    Explanation,
    RouteVerdict,
    conditions_of,
    explain,
    render,
)
from smsgw.domain.route_schema import load_route_section, load_routes
from smsgw.domain.routes import MessageFacts, RouteTable
from smsgw.grpcx.errors import error_info_of
from smsgw.v1 import accounts_pb2 as ac
from smsgw.v1 import accounts_pb2_grpc as ac_grpc

DEFAULT_FILE = "smsgw.yaml"


def config_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="smsgw config", description="the platform's configuration file")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a configuration file; problems are printed with their line")
    check.add_argument("file", nargs="?", default=DEFAULT_FILE)
    apply = sub.add_parser(
        "apply", help="make the running platform's accounts and route table match the file (admin key)"
    )
    apply.add_argument("file", nargs="?", default=DEFAULT_FILE)
    apply.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    add_connection_arguments(apply)
    apply.add_argument("--admin-key", help="default: $SMSGW_ADMIN_API_KEY or .run/admin-api-key")
    args = parser.parse_args(argv)
    document, problems = config_file.check(args.file)
    if args.command == "apply" and document is not None and not problems:
        try:
            return asyncio.run(_apply(args, document))
        except grpc.aio.AioRpcError as error:
            info = error_info_of(error)
            reason = f" [{info.reason}]" if info else ""
            print(f"error: {error.code().name}{reason}: {error.details()}", file=sys.stderr)
            return 1
    for problem in problems:
        print(problem.render(args.file), file=sys.stderr)
    if problems or document is None:
        print(f"{args.file}: {len(problems)} problem{'s' if len(problems) != 1 else ''}", file=sys.stderr)
        return 1
    counts = ", ".join(_count(section, value) for section, value in document.data.items())
    print(f"{args.file}: OK ({counts or 'empty: every section from SMSGW_* variables'})")
    return 0


async def _apply(args: argparse.Namespace, document: config_file.ConfigDocument) -> int:
    if "accounts" not in document and "routes" not in document:
        print(f"{args.file}: no `accounts` or `routes` section: nothing to apply")
        return 0
    admin_key = key_from(args.admin_key, "SMSGW_ADMIN_API_KEY", "SMSGW_ADMIN_API_KEY_FILE", ".run/admin-api-key")
    if not admin_key:
        print("error: no admin key: pass --admin-key or set SMSGW_ADMIN_API_KEY", file=sys.stderr)
        return 1
    metadata = (("authorization", f"Bearer {admin_key}"),)
    async with open_channel(args.server, args.ca_file, args.plaintext) as channel:
        admin = ac_grpc.AdminServiceStub(channel)
        if "accounts" in document:
            specs = document.load("accounts", load_account_section)
            for line in await apply_accounts(admin, specs, metadata, dry_run=args.dry_run):
                print(line)
        if "routes" in document:
            routes = _routes_of_file(args.file)
            shown = await admin.GetRouteTable(ac.GetRouteTableRequest(), metadata=metadata, timeout=30)
            latest = shown.versions[-1] if shown.versions else None
            if latest is not None and json.loads(latest.routes_json).get("routes") == routes:
                print(f"routes: unchanged (version {latest.version})")
            elif args.dry_run:
                print(f"routes: would apply a new version ({len(routes)} routes)")
            else:
                # Refused if someone applied another table since it was read.
                version = await _apply_routes(
                    admin, routes, args.file, "smsgw config apply", latest.version if latest else 0, metadata
                )
                print(f"routes: version {version} applied ({len(routes)} routes)")
    return 0


async def apply_accounts(
    admin: ac_grpc.AdminServiceStub, specs: list[AccountSpec], metadata, *, dry_run: bool = False
) -> list[str]:
    """Makes the platform's accounts match `specs` (one admin call per change); a line per account."""
    listed = await admin.ListAccounts(ac.ListAccountsRequest(), metadata=metadata, timeout=30)
    todo = plan(specs, {account.id: _account_state(account) for account in listed.accounts})
    lines = []
    for step in todo.steps:
        if not dry_run:
            await _call(admin, step, metadata)
        if step.change == "create":
            lines.append(f"account {step.account_id}: {'would be ' if dry_run else ''}{step.description}")
        else:
            lines.append(f"account {step.account_id}: {'would set' if dry_run else 'set'} {step.description}")
    lines += [f"account {account_id}: unchanged" for account_id in todo.unchanged]
    lines += [f"account {account_id}: not in the file (left as it is)" for account_id in todo.unlisted]
    return lines + [f"note: {note}" for note in todo.notes]


def _account_state(account: ac.Account) -> AccountState:
    return AccountState(
        id=account.id,
        display_name=account.display_name,
        limits=limits_of(account.limits),
        senders=tuple(account.senders),
        sender_pool=account.sender_pool,
        destination_countries=tuple(account.destination_countries),
        smart_encoding=account.smart_encoding,
    )


async def _call(admin: ac_grpc.AdminServiceStub, step: Step, metadata) -> None:
    """The admin call that makes `step`'s change."""
    account_id = step.account_id
    if step.change == "create":
        request = ac.CreateAccountRequest(id=account_id, display_name=str(step.value))
        await admin.CreateAccount(request, metadata=metadata, timeout=30)
    elif step.change == "limits":
        assert isinstance(step.value, Limits)
        request_limits = ac.SetAccountLimitsRequest(account_id=account_id, limits=limits_message(step.value))
        await admin.SetAccountLimits(request_limits, metadata=metadata, timeout=30)
    elif step.change == "senders":
        assert isinstance(step.value, tuple)
        senders: tuple[str, ...] = step.value[0]
        request_senders = ac.SetAccountSendersRequest(account_id=account_id, senders=senders, pool=step.value[1])
        await admin.SetAccountSenders(request_senders, metadata=metadata, timeout=30)
    elif step.change == "destinations":
        request_countries = ac.SetAccountDestinationsRequest(account_id=account_id, countries=step.value)  # type: ignore[arg-type]
        await admin.SetAccountDestinations(request_countries, metadata=metadata, timeout=30)
    else:
        request_encoding = ac.SetAccountEncodingRequest(account_id=account_id, smart_encoding=bool(step.value))
        await admin.SetAccountEncoding(request_encoding, metadata=metadata, timeout=30)


def _count(section: str, value: object) -> str:
    if isinstance(value, list):
        return f"{len(value)} {section}"
    if section == "numbers" and isinstance(value, dict) and isinstance(value.get("numbers"), dict):
        return f"{len(value['numbers'])} numbers"
    return section


def routes_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="smsgw routes", description="the route table")
    sub = parser.add_subparsers(dest="command", required=True)
    explain = sub.add_parser("explain", help="which route and carrier a message would get, and why")
    explain.add_argument("to", help="the destination, E.164 (+447700900123)")
    explain.add_argument("--from", dest="sender", default="", help="the sender (+1..., a short code, or ACME)")
    explain.add_argument("--account", default="", help="the sending account")
    explain.add_argument("--tag", action="append", default=[], help="a tag of the message (repeatable)")
    explain.add_argument("--message-id", default="", help="for weighted routes: the message id the choice hashes")
    explain.add_argument(
        "--config",
        default=os.environ.get("SMSGW_CONFIG_FILE", ""),
        help="configuration file whose `routes` are explained (default $SMSGW_CONFIG_FILE, else "
        f"./{DEFAULT_FILE} if present, else $SMSGW_ROUTES)",
    )
    explain.add_argument(
        "--live",
        action="store_true",
        help="ask the running platform (admin key): the route table in use now and the carriers' health",
    )
    apply = sub.add_parser("apply", help="make a file's routes the table every routing replica uses (admin key)")
    apply.add_argument("file", help="a configuration file with a `routes` section, or a list of routes")
    apply.add_argument("--comment", default="", help="why; kept with the version")
    apply.add_argument(
        "--expected-version", type=int, default=0, help="refuse if the table is no longer at this version"
    )
    show = sub.add_parser("show", help="the table applied last (routing's, unless none was applied)")
    show.add_argument("--history", action="store_true", help="every version, oldest first")
    show.add_argument("--json", action="store_true", help="the routes as JSON")
    for online in (apply, show, explain):
        add_connection_arguments(online)
        online.add_argument("--admin-key", help="default: $SMSGW_ADMIN_API_KEY or .run/admin-api-key")
    args = parser.parse_args(argv)
    if args.command in ("apply", "show") or (args.command == "explain" and args.live):
        try:
            return asyncio.run(_online(args))
        except grpc.aio.AioRpcError as error:
            info = error_info_of(error)
            reason = f" [{info.reason}]" if info else ""
            print(f"error: {error.code().name}{reason}: {error.details()}", file=sys.stderr)
            return 1
    return _explain(args)


def _explain(args: argparse.Namespace) -> int:
    try:
        table, source = _table(args.config)
    except (config_file.ConfigFileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    facts = MessageFacts(
        to=args.to,
        sender=args.sender,
        account=args.account,
        tags=frozenset(args.tag),
        message_id=args.message_id or str(uuid.uuid4()),
    )
    explanation = explain(table, facts)
    print("\n".join(render(explanation, source)))
    if not explanation.chosen_route:
        return 2
    print("(offline: every carrier taken as healthy; routing skips carriers its health tracking finds failing)")
    return 0


async def _explain_live(args: argparse.Namespace, metadata) -> int:
    request = ac.ExplainRouteRequest(to=args.to, account_id=args.account, tags=args.tag, message_id=args.message_id)
    setattr(request, "from", args.sender)
    async with open_channel(args.server, args.ca_file, args.plaintext) as channel:
        reply = await ac_grpc.AdminServiceStub(channel).ExplainRoute(request, metadata=metadata, timeout=30)
    explanation = Explanation(
        to=args.to,
        sender=args.sender,
        sender_kind=reply.sender_kind,
        country=reply.country,
        verdicts=tuple(RouteVerdict(v.position, v.name, v.conditions, v.mismatch, v.chosen) for v in reply.routes),
        chosen_route=reply.chosen_route,
        chosen_carrier=reply.chosen_carrier,
        why=reply.why,
        rewritten_sender=reply.rewritten_sender,
        carriers=tuple(
            CarrierHealthState(
                c.carrier,
                c.healthy,
                c.failure_ratio,
                c.outcomes,
                c.undelivered_ratio,
                c.receipts,
                c.replicas_reporting,
                c.replicas_connected,
            )
            for c in reply.carriers
        ),
    )
    print("\n".join(render(explanation, reply.source)))
    return 0 if reply.chosen_route else 2


async def _online(args: argparse.Namespace) -> int:
    admin_key = key_from(args.admin_key, "SMSGW_ADMIN_API_KEY", "SMSGW_ADMIN_API_KEY_FILE", ".run/admin-api-key")
    if not admin_key:
        print("error: no admin key: pass --admin-key or set SMSGW_ADMIN_API_KEY", file=sys.stderr)
        return 1
    metadata = (("authorization", f"Bearer {admin_key}"),)
    if args.command == "explain":
        return await _explain_live(args, metadata)
    if args.command == "apply":
        try:
            routes = _routes_of_file(args.file)
        except (config_file.ConfigFileError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    async with open_channel(args.server, args.ca_file, args.plaintext) as channel:
        admin = ac_grpc.AdminServiceStub(channel)
        if args.command == "apply":
            version = await _apply_routes(admin, routes, args.file, args.comment, args.expected_version, metadata)
            print(f"route table version {version} applied ({len(routes)} routes); routing uses it now")
            return 0
        shown = await admin.GetRouteTable(ac.GetRouteTableRequest(history=args.history), metadata=metadata, timeout=30)
        if not shown.versions:
            print("no route table applied: each service uses its configuration's (SMSGW_CONFIG_FILE's routes)")
        for version in shown.versions:
            at = version.applied_at.ToDatetime().isoformat(timespec="seconds")
            comment = f"  {version.comment}" if version.comment else ""
            print(f"version {version.version}  {at}  by {version.applied_by}  from {version.source or '-'}{comment}")
            if args.json:
                print(json.dumps(json.loads(version.routes_json), indent=2))
            else:
                for route in load_routes(version.routes_json).routes:
                    print(f"  {route.name}  [{conditions_of(route)}]")
        return 0


async def _apply_routes(
    admin: ac_grpc.AdminServiceStub, routes: list, path: str, comment: str, expected_version: int, metadata
) -> int:
    """Applies `routes` (from the file at `path`) as the next route table version; returns it."""
    reply = await admin.ApplyRouteTable(
        ac.ApplyRouteTableRequest(
            routes_json=json.dumps({"routes": routes}),
            comment=comment,
            source=os.path.basename(path),
            expected_version=expected_version,
        ),
        metadata=metadata,
        timeout=30,
    )
    return reply.table.version


def _routes_of_file(path: str) -> list:
    """The `routes` section of a configuration file (checked), or a file that is only a list of routes."""
    document = config_file.read(path)
    if "routes" not in document:
        raise ValueError(f"{path} has no `routes` section")
    document.load("routes", load_route_section)  # every problem with its line, before anything is sent
    return document.data["routes"]


def _table(config: str) -> tuple[RouteTable, str]:
    if not config and os.path.exists(DEFAULT_FILE):
        config = DEFAULT_FILE
    if config:
        document = config_file.read(config)
        if "routes" in document:
            return document.load("routes", load_route_section), config
    routes = os.environ.get("SMSGW_ROUTES")
    if not routes:
        raise ValueError("no route table: give --config FILE with a `routes` section, or set SMSGW_ROUTES")
    return load_routes(routes), "SMSGW_ROUTES"
