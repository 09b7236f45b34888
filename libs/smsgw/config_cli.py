"""`smsgw config check FILE` and `smsgw routes explain NUMBER`: the configuration file, offline.

smsgw config check smsgw.yaml
    every problem with its line (`smsgw.yaml:14:9: routes[1].prefix: ...`), exit 1; or a
    summary of what the file declares, exit 0
smsgw routes explain +447700900123 --from ACME [--account acme] [--tag otp] [--config smsgw.yaml]
    the route that wins for such a message, why, the carrier chosen, and why each route
    before it does not match
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid

from smsgw import config_file
from smsgw.domain.route_schema import load_route_section, load_routes
from smsgw.domain.routes import MessageFacts, RouteTable

DEFAULT_FILE = "smsgw.yaml"


def config_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="smsgw config", description="the platform's configuration file")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a configuration file; problems are printed with their line")
    check.add_argument("file", nargs="?", default=DEFAULT_FILE)
    args = parser.parse_args(argv)
    document, problems = config_file.check(args.file)
    for problem in problems:
        print(problem.render(args.file), file=sys.stderr)
    if problems or document is None:
        print(f"{args.file}: {len(problems)} problem{'s' if len(problems) != 1 else ''}", file=sys.stderr)
        return 1
    counts = ", ".join(_count(section, value) for section, value in document.data.items())
    print(f"{args.file}: OK ({counts or 'empty: every section from SMSGW_* variables'})")
    return 0


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
    args = parser.parse_args(argv)
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
    print(
        f"routes from {source}; message to {facts.to}"
        + (f" from {facts.sender} ({facts.sender_kind})" if facts.sender else "")
    )
    if facts.country:
        print(f"destination: country {facts.country}")
    chosen = table.choose(facts)
    for position, (route, why_not) in enumerate(table.explain(facts), start=1):
        mark = "->" if chosen is not None and route is chosen.route else "  "
        verdict = "matches" if why_not is None else f"no: {why_not}"
        print(f"{mark} {position}. {route.name}  [{_conditions(route)}]  {verdict}")
    if chosen is None:
        print("no route matches: routing fails the message with NO_ROUTE")
        return 2
    print(f"chosen: route {chosen.route.name}, carrier {chosen.carrier} ({chosen.why})")
    print("(offline: every carrier taken as healthy; routing skips carriers its health tracking finds failing)")
    return 0


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


def _conditions(route) -> str:
    parts = [f"prefix {route.prefix or '(any)'}"]
    for label, values in (
        ("countries", route.countries),
        ("number types", route.number_types),
        ("sender kinds", route.sender_kinds),
        ("accounts", route.accounts),
        ("tags", route.tags),
    ):
        if values:
            parts.append(f"{label} {', '.join(sorted(values))}")
    parts.append(f"{route.strategy}: {', '.join(route.carrier_names)}")
    return "; ".join(parts)
