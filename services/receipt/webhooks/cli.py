"""`smsgw webhooks`: list dead-lettered status webhooks and send them again.

  smsgw webhooks dead-letters [--store PATH] [--limit N] [--json]
  smsgw webhooks redeliver (ID ... | --all) [--store PATH]
  smsgw webhooks secret ACCOUNT

Signing secrets come from the same SMSGW_WEBHOOK_* variables as the receipt
service. `redeliver` makes one attempt per dead letter, now, and reports each
outcome: delivered ones leave the store, failed ones stay (one more attempt
counted). Exit status 0 when every one was delivered, 1 otherwise. `secret` prints
the secret that signs an account's webhooks, for its owner's receiver (exit 1 when the
account gets none).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime

from smsgw.settings import ServiceSettings

from .accounts import StaticAccountSecrets, load_webhook_section
from .delivery import redeliver_now
from .settings import WebhookSettings


def _time(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")


def parser(defaults: WebhookSettings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smsgw webhooks", description="dead-lettered status webhooks")
    sub = p.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("dead-letters", help="list dead letters, oldest first")
    listing.add_argument("--store", default=defaults.store, help=f"SQLite store (default {defaults.store})")
    listing.add_argument("--limit", type=int)
    listing.add_argument("--json", action="store_true", help="one JSON object per line, body included")
    again = sub.add_parser("redeliver", help="POST dead letters now and report each outcome")
    again.add_argument("ids", nargs="*", type=int, metavar="ID")
    again.add_argument("--all", action="store_true", help="every dead letter")
    again.add_argument("--store", default=defaults.store, help=f"SQLite store (default {defaults.store})")
    secret = sub.add_parser("secret", help="print the secret that signs an account's webhooks")
    secret.add_argument("account", metavar="ACCOUNT")
    return p


def configured_secrets() -> StaticAccountSecrets | None:
    """The `webhooks` section of the configuration file SMSGW_CONFIG_FILE names, if it has one
    (stops with every problem and its line, as receipt does)."""
    return ServiceSettings().config_section("webhooks", load_webhook_section)


def _secret(settings: WebhookSettings, args) -> int:
    secret = settings.account_secrets(configured_secrets()).secret_for(args.account)
    if secret is None:
        print(
            f"account {args.account!r} gets no webhooks: it has no entry in the webhooks accounts "
            "(the configuration file's `webhooks` section, or SMSGW_WEBHOOK_ACCOUNTS_FILE) and no "
            "platform_secret is set",
            file=sys.stderr,
        )
        return 1
    print(secret)
    return 0


def _list(settings: WebhookSettings, args) -> int:
    store = settings.model_copy(update={"store": args.store}).open_store()
    try:
        letters = store.dead_letters(limit=args.limit)
    finally:
        store.close()
    for letter in letters:
        if args.json:
            print(
                json.dumps(
                    {
                        "id": letter.id,
                        "url": letter.url,
                        "account_id": letter.account_id,
                        "event_id": letter.event_id,
                        "attempts": letter.attempts,
                        "last_error": letter.last_error,
                        "failed_at": _time(letter.updated_at),
                        "body": json.loads(letter.body),
                    }
                )
            )
        else:
            print(
                f"{letter.id:>6}  {_time(letter.updated_at)}  {letter.event_id}  attempts={letter.attempts:<3} "
                f"{letter.url}  {letter.last_error}"
            )
    if not args.json:
        print(f"{len(letters)} dead letter(s) in {args.store}", file=sys.stderr)
    return 0


def _redeliver(settings: WebhookSettings, args) -> int:
    if bool(args.ids) == bool(args.all):
        print("redeliver: give dead letter IDs, or --all", file=sys.stderr)
        return 2
    settings = settings.model_copy(update={"store": args.store})
    store = settings.open_store()
    try:
        outcomes = asyncio.run(
            redeliver_now(
                store,
                settings.account_secrets(configured_secrets()),
                None if args.all else args.ids,
                config=settings.dispatcher_config(),
            )
        )
    finally:
        store.close()
    for outcome in outcomes:
        letter, result = outcome.letter, outcome.result
        verdict = f"delivered (HTTP {result.status})" if result.ok else f"failed: {result.error}"
        print(f"{letter.id:>6}  {letter.event_id}  {letter.url}  {verdict}")
    missing = sorted(set(args.ids) - {o.letter.id for o in outcomes})
    for letter_id in missing:
        print(f"{letter_id:>6}  no such dead letter")
    delivered = sum(o.result.ok for o in outcomes)
    print(f"{delivered} of {len(outcomes)} delivered", file=sys.stderr)
    return 0 if delivered == len(outcomes) and not missing else 1


def webhooks_main(argv: list[str] | None = None) -> int:
    settings = WebhookSettings()
    args = parser(settings).parse_args(argv)
    if args.command == "dead-letters":
        return _list(settings, args)
    if args.command == "secret":
        return _secret(settings, args)
    return _redeliver(settings, args)


if __name__ == "__main__":
    sys.exit(webhooks_main())
