"""receipt: matches carrier delivery reports to messages and appends DeliveryReported."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from pydantic import Field

from smsgw import eventloop
from smsgw.events.topics import INBOUND_EVENTS, MESSAGE_EVENTS
from smsgw.grpcx.server import ServiceServer
from smsgw.grpcx.tls import CLIENT_CERT_SETTING, ClientCertificateSettings, channel_credentials, refuse_unreadable
from smsgw.kafka.clients import make_group_consumer, prepare_topics
from smsgw.kafka.dead_letter_metrics import DeadLettered
from smsgw.kafka.lag import ConsumerLag
from smsgw.kafka.predecessor import MemberFile
from smsgw.logs import configure_logging
from smsgw.metrics_endpoint import start_metrics
from smsgw.service import ServiceRun
from smsgw.settings import ServiceSettings
from smsgw.telemetry import setup_tracing

from .app import DEFAULT_MO_REASSEMBLY_TIMEOUT, ReceiptWorker
from .app import GROUP as RECEIPT_GROUP
from .correlation import ReceiptPolicies, load_policy_section
from .inbound import NumberDirectory, load_number_section
from .replies import IntakeReplySender
from .webhook_feed import WebhookFeed
from .webhooks.accounts import load_webhook_section
from .webhooks.delivery import WebhookDispatcher
from .webhooks.metrics import WebhookCounters
from .webhooks.settings import WebhookSettings

log = logging.getLogger("smsgw.receipt")


class ReceiptSettings(ServiceSettings, ClientCertificateSettings):
    grpc_port: int = 16054
    numbers: str = Field(
        "",
        description='JSON {"numbers": {"+1...": {"account": "a", "help": "..."}}, '
        '"default_account": "a"}: who owns each number; inbound SMS to an unlisted number go to '
        "default_account when set (development), else to no account",
    )
    receipt_policies: str = Field(
        "",
        description='JSON {"default": {"receipt_timeout": s, "on_timeout": "expire"|"keep_sent", "orphan_after": s}, "carriers": {...}}',
    )
    intake_address: str = Field("127.0.0.1:16051", description="intake's gRPC address, for automatic replies (HELP)")
    intake_ca_file: str = Field(
        "", description="PEM CA that signed intake's certificate (intake serves TLS); empty: plaintext to intake"
    )
    intake_api_key_file: str = Field(
        "",
        description="file holding receipt's own API key for intake (scopes send and "
        "act-as-any-account: a HELP reply goes out as the number's "
        "account); empty: none (intake must trust headers)",
    )
    mo_reassembly_timeout: float = Field(
        DEFAULT_MO_REASSEMBLY_TIMEOUT,
        gt=0,
        le=86400,
        description="seconds the parts of a long inbound SMS wait for the rest, counted from the latest part; "
        "then what arrived is recorded as one message marked incomplete (missing_parts)",
    )


def intake_credentials(settings: ReceiptSettings) -> grpc.ChannelCredentials | None:
    """TLS to intake, presenting receipt's client certificate when it has one; None: plaintext."""
    client = settings.client_certificate("receipt")
    if not settings.intake_ca_file:
        if client is not None:
            raise SystemExit(
                f"receipt: {CLIENT_CERT_SETTING} is set but receipt calls intake in plaintext: set "
                "SMSGW_INTAKE_CA_FILE (intake's CA) for TLS to intake"
            )
        return None
    return channel_credentials(
        refuse_unreadable("receipt", "SMSGW_INTAKE_CA_FILE", settings.intake_ca_file).read_bytes(), client
    )


async def serve(settings: ReceiptSettings) -> None:
    settings.log_effective("receipt")
    numbers: NumberDirectory = settings.config_section("numbers", load_number_section, replaces="numbers") or (
        NumberDirectory.parse(settings.numbers)
    )
    policies: ReceiptPolicies = settings.config_section(
        "receipt_policies", load_policy_section, replaces="receipt_policies"
    ) or ReceiptPolicies.parse(settings.receipt_policies)
    credentials = intake_credentials(settings)  # before anything starts: a missing file stops receipt at once
    hooks = WebhookSettings()
    webhook_section = settings.config_section("webhooks", load_webhook_section)
    settings.refuse_development_defaults(
        "receipt",
        [
            *(
                [
                    "no `webhooks` section in the configuration file and SMSGW_WEBHOOK_SECRET / "
                    "SMSGW_WEBHOOK_ACCOUNTS_FILE are not set (webhooks would be signed with the development secret)"
                ]
                if not (webhook_section or hooks.secret.get_secret_value() or hooks.accounts_file)
                else []
            ),
            *(
                ["SMSGW_WEBHOOK_ALLOW_HTTP / SMSGW_WEBHOOK_ALLOW_PRIVATE (webhooks into private networks)"]
                if hooks.allow_http or hooks.allow_private
                else []
            ),
            *(
                [
                    f"SMSGW_INTAKE_ADDRESS is the development address {settings.intake_address} (HELP replies would go nowhere)"
                ]
                if settings.intake_address == ReceiptSettings.model_fields["intake_address"].default
                else []
            ),
            *(
                ["SMSGW_INTAKE_API_KEY_FILE is not set (HELP replies cannot authenticate to intake)"]
                if not settings.intake_api_key_file
                else []
            ),
        ],
    )
    provider = setup_tracing("receipt", settings.trace_file)
    server = ServiceServer(host=settings.grpc_host, port=settings.grpc_port, service_names=[])
    run = ServiceRun.of("receipt", server, settings, tracing=provider)
    try:
        await run.start()
        await prepare_topics(settings)
        api_key = Path(settings.intake_api_key_file).read_text().strip() if settings.intake_api_key_file else ""
        replies = IntakeReplySender(
            settings.intake_address,
            api_key=api_key,
            credentials=credentials,
        )
        run.on_close(replies.close)
        Path(hooks.store).parent.mkdir(parents=True, exist_ok=True)
        secrets = hooks.account_secrets(webhook_section)
        dispatcher = WebhookDispatcher(secrets, hooks.open_store(), hooks.dispatcher_config(), keep_pending=False)
        feed = WebhookFeed(
            consumer=make_group_consumer(settings, "smsgw-receipt-webhooks"),
            kafka=settings.kafka_connection(),
            events_topic=settings.topic(MESSAGE_EVENTS),
            inbound_topic=settings.topic(INBOUND_EVENTS),
            dispatcher=dispatcher,
            secrets=secrets,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            member_file=MemberFile(settings.state_dir, settings.topic_prefix + "smsgw-receipt-webhooks"),
        )
        worker = ReceiptWorker(
            settings,
            numbers,
            replies,
            policies,
            mo_reassembly_timeout=settings.mo_reassembly_timeout,
            member_file=MemberFile(settings.state_dir, settings.topic_prefix + RECEIPT_GROUP),
        )
        await start_metrics(
            run,
            settings,
            "receipt",
            [ConsumerLag(worker.loop), DeadLettered(worker.loop), WebhookCounters(dispatcher), worker.counts, feed],
        )
        # A broker error ends the loop and the process (non-zero): the reports are read again.
        run.watch(worker.run(run.stop), "receipt loop")
        await run.ready(worker.ready, "partitions assigned and their correlations loaded")
        await dispatcher.start()
        run.on_close(lambda: dispatcher.close(grace=2.0))
        await feed.start()
        run.on_close(feed.stop)
        run.watch(feed.run(run.stop), "webhook feed")
        # The feed rebuilds its state from the log first.
        await run.ready(feed.assigned, "the webhook feed's partitions")
        await run.until_stopped()
    finally:
        await run.close()


def main() -> None:
    settings = ReceiptSettings()
    configure_logging(settings.log_level, settings.log_format, "receipt")
    eventloop.run(serve(settings), settings.event_loop, settings.gc_young_collection_seconds)


if __name__ == "__main__":
    main()
