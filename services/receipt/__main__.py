"""receipt: matches carrier delivery reports to messages and appends DeliveryReported."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pydantic import Field

from smsgw import eventloop
from smsgw.events.topics import INBOUND_EVENTS, MESSAGE_EVENTS
from smsgw.grpcx.server import ServiceServer, announce_ready, stop_event_on_signals
from smsgw.kafka.clients import ensure_topics, make_group_consumer
from smsgw.settings import ServiceSettings, configure_logging
from smsgw.telemetry import setup_tracing

from .app import DEFAULT_MO_REASSEMBLY_TIMEOUT, ReceiptWorker
from .correlation import ReceiptPolicies
from .inbound import NumberDirectory
from .replies import IntakeReplySender
from .webhook_feed import WebhookFeed
from .webhooks.delivery import WebhookDispatcher
from .webhooks.settings import WebhookSettings

log = logging.getLogger("smsgw.receipt")


class ReceiptSettings(ServiceSettings):
    grpc_port: int = 16054
    numbers: str = Field("", description='JSON {"numbers": {"+1...": {"account": "a", "help": "..."}}, '
                         '"default_account": "a"}: who owns each number; inbound SMS to an unlisted number go to '
                         'default_account when set (development), else to no account')
    receipt_policies: str = Field("", description='JSON {"default": {"receipt_timeout": s, "on_timeout": "expire"|"keep_sent", "orphan_after": s}, "carriers": {...}}')
    intake_address: str = Field("127.0.0.1:16051", description="intake's gRPC address, for automatic replies (HELP)")
    intake_ca_file: str = Field("", description="PEM CA that signed intake's certificate (intake serves TLS); "
                                                "empty: plaintext to intake")
    intake_api_key_file: str = Field("", description="file holding receipt's own API key for intake (scopes send and "
                                                     "act-as-any-account: a HELP reply goes out as the number's "
                                                     "account); empty: none (intake must trust headers)")
    mo_reassembly_timeout: float = Field(
        DEFAULT_MO_REASSEMBLY_TIMEOUT, gt=0, le=86400,
        description="seconds the parts of a long inbound SMS wait for the rest, counted from the latest part; "
                    "then what arrived is recorded as one message marked incomplete (missing_parts)")


async def serve(settings: ReceiptSettings) -> None:
    settings.log_effective("receipt")
    hooks = WebhookSettings()
    settings.refuse_development_defaults("receipt", [
        *(["SMSGW_WEBHOOK_SECRET / SMSGW_WEBHOOK_ACCOUNTS_FILE are not set (webhooks would be signed with the "
           "development secret)"] if not (hooks.secret.get_secret_value() or hooks.accounts_file) else []),
        *(["SMSGW_WEBHOOK_ALLOW_HTTP / SMSGW_WEBHOOK_ALLOW_PRIVATE (webhooks into private networks)"]
          if hooks.allow_http or hooks.allow_private else []),
        *(["SMSGW_INTAKE_API_KEY_FILE is not set (HELP replies cannot authenticate to intake)"]
          if not settings.intake_api_key_file else []),
    ])
    provider = setup_tracing("receipt", settings.trace_file)
    server = ServiceServer(host=settings.grpc_host, port=settings.grpc_port, service_names=[])
    stop = stop_event_on_signals()
    await server.start()
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix)
    api_key = Path(settings.intake_api_key_file).read_text().strip() if settings.intake_api_key_file else ""
    replies = IntakeReplySender(settings.intake_address, api_key=api_key,
                                ca=Path(settings.intake_ca_file).read_bytes() if settings.intake_ca_file else None)
    Path(hooks.store).parent.mkdir(parents=True, exist_ok=True)
    secrets = hooks.account_secrets()
    dispatcher = WebhookDispatcher(secrets, hooks.open_store(), hooks.dispatcher_config(), keep_pending=False)
    feed = WebhookFeed(
        consumer=make_group_consumer(settings, "smsgw-receipt-webhooks"), bootstrap=settings.kafka_bootstrap,
        events_topic=settings.topic(MESSAGE_EVENTS), inbound_topic=settings.topic(INBOUND_EVENTS),
        dispatcher=dispatcher, secrets=secrets, fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    worker = ReceiptWorker(settings, NumberDirectory.parse(settings.numbers), replies,
                           ReceiptPolicies.parse(settings.receipt_policies),
                           mo_reassembly_timeout=settings.mo_reassembly_timeout)
    worker_stop = asyncio.Event()
    running = asyncio.create_task(worker.run(worker_stop), name="receipt-loop")
    # No deadline (a long changelog takes its time): say what it waits for.
    while not worker.ready.is_set() and not running.done():
        await asyncio.wait({running, asyncio.create_task(worker.ready.wait())}, timeout=10,
                           return_when=asyncio.FIRST_COMPLETED)
        if not worker.ready.is_set():
            log.info("receipt has no partitions yet; still waiting")
    if running.done():
        await running   # failed before it served: the process ends with its error
    await dispatcher.start()
    await feed.start()
    feed_stop = asyncio.Event()
    feed_task = asyncio.create_task(feed.run(feed_stop), name="webhook-feed")
    # No deadline (the webhook feed rebuilds its state from the log first): say what it waits for.
    while not feed.assigned.is_set():
        try:
            await asyncio.wait_for(feed.assigned.wait(), 10)
        except TimeoutError:
            log.info("webhook feed not assigned its partitions yet; still waiting")
    await server.set_serving(True)
    announce_ready(settings.ready_file, server.address)
    log.info("receipt serving on %s", server.address)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    await server.set_serving(False)
    feed_stop.set()
    await asyncio.gather(feed_task, return_exceptions=True)
    await feed.stop()
    await dispatcher.close(grace=2.0)
    worker_stop.set()
    try:
        await running   # a broker error ends the process (non-zero): the reports are read again
    finally:
        await replies.close()
        await server.stop(grace=2.0)
        provider.shutdown()


def main() -> None:
    settings = ReceiptSettings()
    configure_logging(settings.log_level)
    eventloop.run(serve(settings))


if __name__ == "__main__":
    main()
