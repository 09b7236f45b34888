"""carrier-adapter: submits dispatched messages to carriers and reports what they answer."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from smsgw import eventloop
from smsgw.events.topics import (
    ACCOUNT_EVENTS,
    CARRIER_CONNECTIONS,
    CARRIER_DISPATCH,
    CARRIER_REPORTS,
    DEAD_LETTERS,
    DELAY_TIERS,
    DEVICE_PRESENCE,
    MESSAGE_EVENTS,
    SUBMIT_LEDGER,
)
from smsgw.grpcx.server import ServiceServer
from smsgw.grpcx.tls import (
    CLIENT_CA_SETTING,
    CLIENT_CERT_SETTING,
    CLIENT_KEY_SETTING,
    ClientCertificateSettings,
    ClientVerificationSettings,
    TlsFiles,
)
from smsgw.kafka.clients import make_group_consumer, make_producer, make_reader, prepare_topics
from smsgw.kafka.dead_letter_metrics import DeadLettered
from smsgw.kafka.lag import ConsumerLag
from smsgw.kafka.predecessor import MemberFile, start_in_place, stop_in_place
from smsgw.kafka.session_fence import SessionFence
from smsgw.logs import configure_logging
from smsgw.metrics_endpoint import start_metrics
from smsgw.service import ServiceRun
from smsgw.settings import ServiceSettings
from smsgw.telemetry import setup_tracing

from .android.client import AndroidCarrierClient
from .android.issued_tokens import IssuedTokenReader
from .android.kind import android_kind
from .android.registry import DeviceRegistry
from .android.relay import SERVICE_NAME as DEVICE_RELAY
from .android.relay import RelayTls, add_device_relay, advertised_address, check_advertise_address
from .android.replicas import AndroidReplicas
from .android.servicer import SERVICE_NAME as DEVICE_GATEWAY
from .android.servicer import add_device_gateway
from .carriers import load_carrier_section, load_carriers
from .connection_reports import ConnectionReporter
from .deferral import DelayTiers
from .delayed_commands import DELAYED_GROUP, DelayedCommands
from .dispatcher import DISPATCH_GROUP, Dispatcher
from .finished_outcomes import FinishedOutcomes
from .kinds import build_clients, table
from .metrics import CarrierCollector, DispatchCollector
from .recent_commands import DEFAULT_WINDOW as DEFAULT_DEDUPE_WINDOW
from .reports import ReportWriter
from .smpp import kind as smpp_kind
from .submit_ledger import SubmitLedger
from .twilio import kind as twilio_kind
from .twilio.callbacks import CallbackServer
from .twilio.client import TwilioCarrierClient

log = logging.getLogger("smsgw.carrier_adapter")

DEFAULT_CARRIERS = (
    '{"carriers": [{"name": "smsc-sim", "kind": "smpp", "host": "127.0.0.1", "port": 2775,'
    ' "system_id": "smsgw", "password": "secret"}]}'
)


class CarrierAdapterSettings(ServiceSettings, ClientVerificationSettings, ClientCertificateSettings):
    grpc_port: int = 16053
    grpc_tls_cert_file: str = Field(
        "",
        description="PEM certificate chain of the gRPC port (DeviceGatewayService for "
        "phones, DeviceRelayService between replicas); empty: plaintext (a load balancer "
        "terminates TLS in front of it)",
    )
    grpc_tls_key_file: str = Field("", description="PEM private key of the gRPC port")
    grpc_tls_ca_file: str = Field(
        "", description="with TLS: the CA the other replicas' certificates chain to (relay calls check them against it)"
    )
    grpc_tls_server_name: str = Field(
        "",
        description="with TLS: the name relay calls check the other replicas' "
        "certificates against (they are called by pod IP); empty: the address",
    )
    grpc_health_port: int = Field(
        0, description="with TLS: a plaintext port serving only grpc.health.v1, for Kubernetes probes; 0: none"
    )
    dispatch_max_in_flight: int = Field(
        2000,
        ge=1,
        le=100_000,
        description="commands this replica handles at once (each a "
        "task submitting or retrying); beyond it, reading the dispatch topic pauses",
    )
    dispatch_max_in_flight_per_carrier: int = Field(
        100,
        ge=1,
        le=100_000,
        description="of those, at most this many per "
        "carrier and lane, or twice what the carrier takes at once (its SMPP window, its HTTP "
        "max_concurrency) if that is more; its further commands are parked "
        "(SMSGW_DISPATCH_PARKED_IN_MEMORY of them in memory, the others as offsets read again) and "
        "start once it drains, so a carrier that is down or slow never holds the others, and an "
        "OTP does not wait behind a long queue of running commands when the CPU is saturated",
    )
    dispatch_max_parked: int = Field(
        100_000,
        ge=1,
        le=10_000_000,
        description="parked commands at most, beyond which reading the dispatch topic pauses",
    )
    dispatch_parked_in_memory: int = Field(
        20_000,
        ge=0,
        le=1_000_000,
        description="parked commands kept in memory (about 1.3 KB each) and started from there when "
        "their carrier has room; the others are read again from the dispatch topic; 0: none kept",
    )
    dispatch_dedupe_window: int = Field(
        DEFAULT_DEDUPE_WINDOW,
        ge=1,
        le=1_000_000,
        description="per partition of the "
        "dispatch topic, how many recent command ids are kept to recognise a command "
        "published twice (routing killed between publishing it and recording it); "
        "read again before the commit after a restart or rebalance",
    )
    dispatch_outcome_lookback_seconds: float = Field(
        300.0,
        ge=0,
        description="when given dispatch partitions, read this much of their recent message events for "
        "commands finished but not committed before a crash (not submitted again); 0: not read",
    )
    submit_ledger: bool = Field(
        True,
        description="record each submit's intent on the submit ledger topic (acknowledged before the submit goes "
        "out) and read it back when given dispatch partitions, so that an attempt a crashed replica left without "
        "an answer is known, reported and handled by the carrier's in_doubt policy; needs "
        "SMSGW_DISPATCH_OUTCOME_LOOKBACK_SECONDS > 0 (the same look-back); false: a crash mid-submit resubmits "
        "unknowingly",
    )
    dispatch_failover_after_seconds: float = Field(
        30.0,
        ge=0,
        description="a message its carrier cannot take (nothing sent: not connected, no device) goes to the "
        "next carrier of its route after this long (MessageRerouted); never after an attempt that may have "
        "reached the carrier; 0: not by time (with SMSGW_DISPATCH_FAILOVER_AFTER_ATTEMPTS 0 too: it waits for its carrier)",
    )
    dispatch_failover_after_attempts: int = Field(
        0,
        ge=0,
        le=1000,
        description="or after this many failed attempts, if that comes first (the same conditions: nothing "
        "may have reached the carrier); 0: by SMSGW_DISPATCH_FAILOVER_AFTER_SECONDS only",
    )
    dispatch_defer_after_seconds: float = Field(
        120.0,
        ge=0,
        description="a message its carrier cannot take (nothing sent) for this long, with no other carrier of its "
        "route to go to, stops waiting in the adapter (where it holds its partition's commit) and waits on the "
        "delay topic instead (DispatchDeferred), coming back for its next attempt after "
        "SMSGW_DISPATCH_DEFER_LAP_SECONDS, then twice that, up to SMSGW_DISPATCH_DEFER_LONGEST_SECONDS; 0: it "
        "waits in the adapter (parked beyond its carrier's share)",
    )
    dispatch_defer_lap_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="a deferred message's first wait on the delay topics, and the unit of every longer one: a "
        "record of the delay topic of n laps (1, 2, 4, 8, 16) is due n times this long after it was written",
    )
    dispatch_defer_longest_seconds: float = Field(
        600.0,
        gt=0,
        description="a deferred message's longest wait on the delay topic (the wait doubles with each deferral)",
    )
    carriers: str = Field(DEFAULT_CARRIERS, description="JSON carrier list, or the path of a JSON file")
    http_callback_host: str = Field("127.0.0.1", description="listen address for HTTP providers' callbacks")
    http_callback_port: int = Field(
        16063,
        description="listen port for HTTP providers' callbacks; each HTTP "
        "carrier's status_callback_base_url must reach it",
    )
    # Several replicas share Android phones (docs/android-gateway.md, "Several carrier-adapter replicas").
    advertise_address: str = Field(
        "",
        description="host, IP or host:port other replicas call this one's "
        "DeviceRelayService at (no port: grpc_mtls_port if set, else grpc_port); empty: "
        "grpc_host and that port. On "
        "Kubernetes the pod IP (downward API)",
    )
    relay_secret: SecretStr = Field(
        SecretStr(""),
        description="shared by every replica: DeviceRelayService calls "
        "carry it and are refused without it; empty: calls are not authenticated "
        "(restrict them with a NetworkPolicy)",
    )
    presence_refresh_interval: float = Field(
        15.0,
        gt=0,
        description="seconds between presence records of a connected phone; 3 missed: its replica is taken for gone",
    )
    connection_report_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="seconds between the records of this replica's connection to each SMPP and Android carrier "
        "(smsgw.carrier-connections.v1; a change is written at once); 3 missed: routing takes the replica for gone",
    )

    @field_validator("advertise_address")
    @classmethod
    def _advertise_address(cls, value: str) -> str:
        return check_advertise_address(value)

    @field_validator("relay_secret")
    @classmethod
    def _relay_secret(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) < 16:
            raise ValueError("SMSGW_RELAY_SECRET must be at least 16 characters (or empty: no authentication)")
        return value


def grpc_tls(settings: CarrierAdapterSettings) -> tuple[TlsFiles | None, RelayTls | None]:
    """TLS for the gRPC port and for relay calls to the other replicas, or (None, None): plaintext.

    With a client CA, relay calls must come with a verified client certificate (DeviceRelayServicer
    checks): to the mTLS port, phones (which have none) staying on the main one, or to the main
    port when it requires certificates. So this replica presents its own when it calls the others."""
    if not (settings.grpc_tls_cert_file or settings.grpc_tls_key_file):
        settings.verifying_clients("carrier-adapter", None)  # stops it if told to verify client certificates
        return None, None
    files = {
        "SMSGW_GRPC_TLS_CERT_FILE": settings.grpc_tls_cert_file,
        "SMSGW_GRPC_TLS_KEY_FILE": settings.grpc_tls_key_file,
        "SMSGW_GRPC_TLS_CA_FILE": settings.grpc_tls_ca_file,
    }
    for name, path in files.items():
        if not path or not Path(path).is_file():
            raise SystemExit(
                f"carrier-adapter: TLS on the gRPC port needs {', '.join(files)} (PEM files); "
                f"{name}={path!r} is not a readable file"
            )
    tls = settings.verifying_clients(
        "carrier-adapter", TlsFiles(Path(settings.grpc_tls_cert_file), Path(settings.grpc_tls_key_file))
    )
    client = settings.client_certificate("carrier-adapter")
    if settings.grpc_tls_client_ca_file and client is None:
        raise SystemExit(
            f"carrier-adapter: with {CLIENT_CA_SETTING} relay calls need a client certificate: set "
            f"{CLIENT_CERT_SETTING} and {CLIENT_KEY_SETTING} (a certificate that CA signed)"
        )
    return tls, RelayTls(Path(settings.grpc_tls_ca_file).read_bytes(), settings.grpc_tls_server_name, client)


async def serve(settings: CarrierAdapterSettings) -> None:
    settings.log_effective("carrier-adapter")
    carrier_list = settings.config_section("carriers", load_carrier_section, replaces="carriers")
    settings.refuse_development_defaults(
        "carrier-adapter",
        ["SMSGW_CARRIERS is the development list (the SMSC simulator on 127.0.0.1:2775)"]
        if carrier_list is None and settings.carriers == DEFAULT_CARRIERS
        else [],
    )
    if carrier_list is None:
        carrier_list = load_carriers(settings.carriers)
    provider = setup_tracing("carrier-adapter", settings.trace_file)
    producer = make_producer(settings)
    # The submit ledger's own producer, without linger: an intent holds its submit until the brokers
    # have it, and aiokafka sends one request at a time per broker and producer, so behind the
    # outcomes' and reports' requests (which linger to fill up) every submit waited ~25 ms longer.
    ledger_producer = make_producer(settings, linger_ms=0)
    consumer = make_group_consumer(settings, DISPATCH_GROUP, settings.topic(CARRIER_DISPATCH))
    producer_name = f"carrier-adapter/{settings.instance_id}"
    reports = ReportWriter(producer, settings.topic(CARRIER_REPORTS), producer_name)
    registry = DeviceRegistry()
    tls, relay_tls = grpc_tls(settings)
    server = ServiceServer(
        host=settings.grpc_host,
        port=settings.grpc_port,
        service_names=[DEVICE_GATEWAY, DEVICE_RELAY],
        tls=tls,
        health_port=settings.grpc_health_port or None,
        mtls_port=settings.grpc_mtls_port or None,
    )
    replicas = None
    if any(c.kind == "android" for c in carrier_list.carriers):
        relay_secret = settings.relay_secret.get_secret_value()
        if not relay_secret:
            log.warning(
                "SMSGW_RELAY_SECRET is empty: DeviceRelayService accepts any caller; restrict it to the "
                "carrier-adapter pods (NetworkPolicy) or set the secret"
            )
        replicas = AndroidReplicas(
            producer=producer,
            reader_consumer=make_reader(settings),
            topic=settings.topic(DEVICE_PRESENCE),
            kafka=settings.kafka_connection(),
            instance_id=settings.instance_id,
            relay_secret=relay_secret,
            # Relay calls present this replica's certificate: where there is an mTLS port, there.
            address=advertised_address(settings.advertise_address, settings.grpc_host, server.mtls_port or server.port),
            refresh_interval=settings.presence_refresh_interval,
            relay_tls=relay_tls,
        )
    kinds = table([smpp_kind.KIND, twilio_kind.KIND, android_kind(registry, replicas.links if replicas else None)])
    clients = build_clients(carrier_list.carriers, kinds, reports)
    http_clients = [c for c in clients if isinstance(c, TwilioCarrierClient)]
    connection_reports = ConnectionReporter(
        producer,
        settings.topic(CARRIER_CONNECTIONS),
        clients,
        # Per process, as the phones' presence: a restarted pod's reports are not its previous run's.
        replica_id=f"{settings.instance_id}#{uuid.uuid4().hex[:8]}",
        kinds={c.name: c.kind for c in carrier_list.carriers},
        refresh_seconds=settings.connection_report_seconds,
    )
    callbacks = (
        CallbackServer(http_clients, host=settings.http_callback_host, port=settings.http_callback_port)
        if http_clients
        else None
    )
    delay_tiers = DelayTiers(
        {laps: settings.topic(spec) for laps, spec in DELAY_TIERS.items()}, settings.dispatch_defer_lap_seconds
    )
    # A process killed here left its members in both groups: removed before this one joins, so
    # the commands need not wait out their sessions (smsgw.kafka.predecessor).
    dispatch_member = MemberFile(settings.state_dir, settings.topic_prefix + DISPATCH_GROUP)
    delayed_member = MemberFile(settings.state_dir, settings.topic_prefix + DELAYED_GROUP)
    dispatcher = Dispatcher(
        consumer=consumer,
        producer=producer,
        events_topic=settings.topic(MESSAGE_EVENTS),
        reports=reports,
        carriers={c.name: c for c in clients},
        producer_name=producer_name,
        max_in_flight=settings.dispatch_max_in_flight,
        max_in_flight_per_carrier=settings.dispatch_max_in_flight_per_carrier,
        max_parked=settings.dispatch_max_parked,
        parked_in_memory=settings.dispatch_parked_in_memory,
        dedupe_window=settings.dispatch_dedupe_window,
        dispatch_topic=settings.topic(CARRIER_DISPATCH),
        failover_after=settings.dispatch_failover_after_seconds,
        failover_after_attempts=settings.dispatch_failover_after_attempts,
        finished_outcomes=FinishedOutcomes(
            settings.topic(MESSAGE_EVENTS),
            lookback_seconds=settings.dispatch_outcome_lookback_seconds,
            delay_topics=list(delay_tiers.topics.values()),
        )
        if settings.dispatch_outcome_lookback_seconds
        else None,
        submit_ledger=SubmitLedger(
            ledger_producer,
            settings.topic(SUBMIT_LEDGER),
            lookback_seconds=settings.dispatch_outcome_lookback_seconds,
        )
        if settings.submit_ledger and settings.dispatch_outcome_lookback_seconds
        else None,
        fence=SessionFence(settings.kafka_session_timeout_ms / 1000),
        make_reader=lambda: make_reader(settings, bounded=True),
        delay_tiers=delay_tiers,
        defer_after=settings.dispatch_defer_after_seconds,
        defer_longest=settings.dispatch_defer_longest_seconds,
        dead_letter_topic=settings.topic(DEAD_LETTERS),
        member_file=dispatch_member,
    )
    delayed = DelayedCommands(
        consumer=make_group_consumer(settings, DELAYED_GROUP, *delay_tiers.topics.values()),
        producer=producer,
        tiers=delay_tiers,
        dispatch_topic=settings.topic(CARRIER_DISPATCH),
        longest=settings.dispatch_defer_longest_seconds,
        carrier_down=dispatcher.carrier_down,
        member_file=delayed_member,
    )
    android_clients = [c for c in clients if isinstance(c, AndroidCarrierClient)]
    server.add(lambda s: add_device_gateway(s, registry))
    server.add(
        lambda s: add_device_relay(
            s,
            {c.name: c for c in android_clients},
            settings.relay_secret.get_secret_value(),
            require_client_certificate=tls is not None and tls.client_ca is not None,
        )
    )
    run = ServiceRun.of("carrier-adapter", server, settings, tracing=provider)
    try:
        await run.start()
        await prepare_topics(settings)
        await producer.start()
        run.on_close(producer.stop)
        if dispatcher.submit_ledger is not None:
            await ledger_producer.start()
            run.on_close(ledger_producer.stop)
        await start_metrics(
            run,
            settings,
            "carrier-adapter",
            [
                CarrierCollector(clients),
                DispatchCollector(dispatcher, delayed),
                ConsumerLag(dispatcher, delayed),
                DeadLettered(dispatcher),
                server.requests,
            ],
        )
        if callbacks is not None:
            await callbacks.start()  # reports need the producer; up before SERVING
        for client in clients:
            await client.start()
            run.on_close(client.close)
        if callbacks is not None:
            run.on_close(callbacks.stop)  # first: callbacks in flight finish recording, clients still open
        # The clients have had their first bind attempt (start waits for it): the first reports say
        # how that went, before SERVING. Tombstones at close, before the clients and the producer.
        await connection_reports.start()
        run.on_close(connection_reports.stop)
        if android_clients:
            # Phones with tokens issued through the admin API: known before SERVING, as configured ones are.
            tokens = IssuedTokenReader(
                make_reader(settings), settings.topic(ACCOUNT_EVENTS), settings.kafka_connection(), registry
            )
            await tokens.start()
            run.on_close(tokens.stop)
            await run.ready(tokens.caught_up, "device tokens read from the account log")
        if replicas is not None:
            await replicas.start(android_clients)  # the directory read before the first command
            run.on_close(replicas.stop)  # the phones' tombstones, after the clients, before the producer
        await start_in_place(consumer, dispatch_member, settings.kafka_connection())
        run.on_close(lambda: stop_in_place(consumer, dispatch_member))
        # Phones first: an in-flight submit to a phone would otherwise hold the batch for sent_timeout.
        for client in android_clients:
            run.on_stopping(client.close)
        # The dispatcher failing ends the process (non-zero): the uncommitted batch is redelivered.
        run.watch(dispatcher.run(run.stop), "dispatcher")
        # Deferred commands come back whether or not this replica defers any: every replica reads
        # its share of the delay topic.
        await start_in_place(delayed.consumer, delayed_member, settings.kafka_connection())
        run.on_close(lambda: stop_in_place(delayed.consumer, delayed_member))
        run.watch(delayed.run(run.stop), "delayed commands")
        await run.ready(dispatcher.assigned, "dispatch partitions assigned")
        log.info("carrier-adapter carriers: %s", [c.name for c in clients])
        await run.until_stopped()
    finally:
        await run.close()


def main() -> None:
    settings = CarrierAdapterSettings()
    configure_logging(settings.log_level, settings.log_format, "carrier-adapter")
    eventloop.run(serve(settings), settings.event_loop, settings.gc_young_collection_seconds)


if __name__ == "__main__":
    main()
