"""intake: the public gRPC API. Validates, appends MessageQueued, answers from the read model."""

from __future__ import annotations

import functools
import json
import logging
from datetime import timedelta
from pathlib import Path

from pydantic import Field

from smsgw import eventloop
from smsgw.domain.carrier_health import load_health_section
from smsgw.domain.credentials import Directory, configured_keys
from smsgw.domain.destinations import normalize_countries
from smsgw.domain.limits import Limits
from smsgw.domain.public_urls import UrlPolicy
from smsgw.domain.route_schema import load_route_section, load_routes
from smsgw.domain.routes import CarrierCapabilities
from smsgw.events.topics import ACCOUNT_EVENTS, INBOUND_EVENTS, MESSAGE_EVENTS
from smsgw.grpcx.server import ServiceServer, public_server_options
from smsgw.grpcx.tls import ClientVerificationSettings, TlsFiles, refuse_unreadable
from smsgw.kafka.broken_producer import ProducerHealth
from smsgw.kafka.carrier_connection_reader import CarrierConnectionReader
from smsgw.kafka.clients import make_producer, make_reader, prepare_topics
from smsgw.logs import configure_logging
from smsgw.metrics_endpoint import start_metrics
from smsgw.projections.follower import StoreFollower
from smsgw.projections.projector import Projector
from smsgw.projections.projector import make_consumer as make_projector_consumer
from smsgw.projections.urls import open_store
from smsgw.service import ServiceRun
from smsgw.settings import ServiceSettings
from smsgw.telemetry import setup_tracing
from smsgw.v1 import accounts_pb2_grpc as accounts_grpc
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc

from .account_log import AccountLog
from .admin import AdminServicer
from .admission import AdmissionPolicy
from .auth import Authenticator, AuthMode
from .backlog_gate import BacklogGate
from .bearer_tokens import JwtSettings, JwtVerifier
from .cursors import DEVELOPMENT_SECRET, CursorCodec
from .flow_metrics import MessageFlow
from .inbound_history import InboundHistory
from .inbound_projection import InboundProjection
from .live import LiveMessages
from .log_reader import EventLogReader
from .redrive import Redriver
from .route_explainer import RouteExplainer
from .servicer import Intake, MessagingServicer
from .subscriptions import DEFAULT_QUEUE_SIZE

log = logging.getLogger("smsgw.intake")


class IntakeSettings(ServiceSettings, ClientVerificationSettings):
    grpc_port: int = 16051
    max_in_flight: int = Field(5000, description="appends waiting for the broker before RESOURCE_EXHAUSTED")
    # 500 and 0.5 s, measured (docs/benchmarks.md, "Backpressure at acceptance"): an OTP behind a
    # campaign waited at most 121-152 ms for routing (up to 0.97 s with 2,000, 1.9 s without a
    # gate), and above capacity the platform delivered more (938 against 848 a second at 1,200).
    admission_backlog: int = Field(
        500,
        ge=0,
        description="messages QUEUED for routing (all replicas) beyond which NORMAL and LOW sends wait "
        "while routing works through them (HIGH never waits; 0: never)",
    )
    admission_backlog_seconds: float = Field(
        0.5,
        gt=0,
        description="the same limit in seconds of routing's pace over the last 10 s, where that is more "
        "messages (a deployment that routes more a second holds sends at a larger backlog)",
    )
    admission_wait_ms: int = Field(
        5000,
        ge=0,
        le=60_000,
        description="the longest a send waits for room in routing's backlog (or its deadline, if sooner); "
        "then RESOURCE_EXHAUSTED QUEUE_FULL, nothing accepted",
    )
    append_timeout_ms: int = Field(
        5000,
        ge=100,
        le=60_000,
        description="the longest a send waits for the brokers' ack (or the caller's deadline, if sooner); "
        "then UNAVAILABLE ACCEPTANCE_IN_DOUBT, and new sends are refused at once (EVENT_LOG_UNAVAILABLE) "
        "until an append is confirmed again",
    )
    default_sender: str = Field(
        "+14155550000",
        description="sender of messages that name none and whose account has no senders (development number)",
    )
    max_segments: int = Field(10, description="the most segments (SMS parts) one message may take")
    routes: str = Field(
        '{"routes": [{"prefix": "", "carrier": "smsc-sim"}]}',
        description="the route table routing uses (JSON); intake reads it to refuse MMS early",
    )
    mms_carriers: str = Field("", description="comma-separated carriers that can send MMS")
    redrive_after_seconds: float = Field(15.0, description="re-offer a message to routing after this long in QUEUED")
    grpc_tls_cert_file: str = Field("", description="PEM certificate chain of the public port (TLS)")
    grpc_tls_key_file: str = Field("", description="PEM private key of the public port (TLS)")
    grpc_plaintext: bool = Field(
        False,
        description="serve the public port without TLS: tests, or behind a proxy "
        "that terminates TLS; never the default",
    )
    grpc_health_port: int = Field(
        0,
        description="with TLS: a plaintext port serving only grpc.health.v1, for "
        "Kubernetes' probes (which cannot speak TLS); 0: none",
    )
    default_messages_per_second: float = Field(
        0.0, ge=0, description="an account's sending rate unless set for it (smsgw admin set-limits); 0: none"
    )
    default_burst: int = Field(0, ge=0, description="an account's burst unless set for it; 0: one second's worth")
    default_messages_per_day: int = Field(
        0, ge=0, description="an account's daily quota (UTC) unless set for it; 0: none"
    )
    allow_http_callbacks: bool = Field(
        False, description="accept http:// status callback and media URLs (development only; https otherwise)"
    )
    allow_private_callbacks: bool = Field(
        False, description="accept callback URLs on loopback and private addresses (development only: SSRF)"
    )
    grpc_max_message_bytes: int = Field(4 * 1024 * 1024, ge=64 * 1024, description="largest request accepted")
    # HTTP/2 lets a client start calls before it has the server's SETTINGS: a low limit refuses the
    # start of a burst (REFUSED_STREAM, seen by the client as UNAVAILABLE: 49 of 150 at 100).
    grpc_max_concurrent_streams: int = Field(1000, ge=1, description="calls in flight per client connection")
    grpc_keepalive_seconds: float = Field(60.0, gt=0, description="ping idle connections this often")
    grpc_max_connection_age_seconds: float = Field(
        1800.0, gt=0, description="clients reconnect after this long (streams resume by cursor)"
    )
    watch_queue_size: int = Field(
        DEFAULT_QUEUE_SIZE,
        ge=1,
        description="updates a Watch stream may have waiting for its client; beyond that "
        "WatchMessages, WatchMessageBatches and WatchInbound end with WATCH_FELL_BEHIND and the cursor to resume from",
    )
    max_streams_per_account: int = Field(
        100, ge=1, description="open streams (Watch*, SendStream) per account on one replica"
    )
    default_destination_countries: str = Field(
        "",
        description="comma-separated ISO 3166 codes accounts may send "
        "to unless set for them (smsgw admin set-destinations); "
        "empty: every country",
    )
    auth: AuthMode = Field(
        "api-keys",
        description="api-keys: the account comes from the caller's API key; "
        "trusted-header: from x-smsgw-account, unchecked (test harnesses only)",
    )
    bootstrap_keys_file: str = Field(
        "",
        description='JSON {"keys": [{"id", "account", "scopes", "sha256"}]}: keys '
        "from configuration (the first admin key, service keys); "
        "`smsgw admin bootstrap-key` makes an entry",
    )
    jwt_jwks_file: str = Field(
        "",
        description="JWKS file (the identity provider's public keys, re-read when it "
        "changes) to verify JWT bearer tokens with; empty: API keys only",
    )
    jwt_issuer: str = Field("", description="the `iss` every JWT bearer token must carry (required with jwt_jwks_file)")
    jwt_audience: str = Field(
        "", description="the `aud` every JWT bearer token must carry (required with jwt_jwks_file)"
    )
    jwt_account_claim: str = Field(
        "smsgw_account", description="the claim naming the token's account (which must exist)"
    )
    cursor_secret_file: str = Field(
        "",
        description="file holding the secret (at least 16 bytes; e.g. `openssl rand "
        "-hex 32`) that signs Watch stream cursors; the same on every "
        "replica, so a stream resumes on any of them. Empty: a public "
        "development secret (refused in production)",
    )
    projection_store: str = Field(
        "",
        description="the message store every read is answered from (fed by intake's "
        "projector): sqlite:///path or postgresql://...; empty: SQLite in "
        "state_dir",
    )
    # One store for all replicas: each replica then projects only its share of the partitions
    # (adding replicas adds projection capacity) and reads the others' events back from the store.
    projection_shared: bool = Field(
        False,
        description="the replicas share projection_store (PostgreSQL): the projector runs as a "
        "consumer group, each replica writing only the partitions it is given, and every replica "
        "reads all events back from the store (watches, limits); false: each replica projects "
        "every partition into its own store",
    )


def projector_group(settings: IntakeSettings) -> dict:
    """The projector's consumer settings as one member of the replicas' group (projection_shared)."""
    return {
        "group_id": settings.topic_prefix + "intake-projector",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
    }


def route_table(settings: IntakeSettings):
    """routing's table (the configuration file's `routes`, else SMSGW_ROUTES): intake refuses MMS
    to a route without an MMS carrier."""
    table = settings.config_section("routes", load_route_section, replaces="routes")
    if table is not None:
        return table
    try:
        return load_routes(settings.routes)
    except ValueError as exc:
        raise SystemExit(f"SMSGW_ROUTES: {exc}") from None


def development_defaults(settings: IntakeSettings) -> list[str]:
    fields = IntakeSettings.model_fields
    problems = []
    if settings.auth == "trusted-header":
        problems.append("SMSGW_AUTH=trusted-header (any caller may act as any account)")
    if not settings.bootstrap_keys_file:
        problems.append("SMSGW_BOOTSTRAP_KEYS_FILE is not set (no admin key: nobody can make accounts)")
    if settings.allow_http_callbacks or settings.allow_private_callbacks:
        problems.append("SMSGW_ALLOW_HTTP_CALLBACKS / SMSGW_ALLOW_PRIVATE_CALLBACKS (callbacks into private networks)")
    if not settings.cursor_secret_file:
        problems.append(
            "SMSGW_CURSOR_SECRET_FILE is not set (Watch cursors signed with a public development secret: "
            "anyone could forge one)"
        )
    if settings.routes == fields["routes"].default and settings.config_section("routes", load_route_section) is None:
        problems.append("SMSGW_ROUTES is the development table (everything to the SMSC simulator)")
    if settings.default_sender == fields["default_sender"].default:
        problems.append(f"SMSGW_DEFAULT_SENDER is the development number {settings.default_sender}")
    return problems


def jwt_verifier(settings: IntakeSettings) -> JwtVerifier | None:
    if not settings.jwt_jwks_file:
        return None
    try:
        return JwtVerifier(
            JwtSettings(
                Path(settings.jwt_jwks_file), settings.jwt_issuer, settings.jwt_audience, settings.jwt_account_claim
            )
        )
    except (OSError, ValueError) as error:
        raise SystemExit(f"intake: JWT bearer tokens: {error}") from None


def public_tls(settings: IntakeSettings) -> TlsFiles | None:
    """TLS for the public port (verifying client certificates when configured); plaintext only
    when a setting says so."""
    if settings.grpc_plaintext:
        log.warning("SMSGW_GRPC_PLAINTEXT=true: the public port is plaintext; API keys cross the network in clear")
        return settings.verifying_clients("intake", None)  # stops intake if told to verify client certificates
    if not (settings.grpc_tls_cert_file and settings.grpc_tls_key_file):
        raise SystemExit(
            "intake: the public port needs TLS: set SMSGW_GRPC_TLS_CERT_FILE and SMSGW_GRPC_TLS_KEY_FILE "
            "(PEM files), or SMSGW_GRPC_PLAINTEXT=true to serve without TLS (tests, or behind a proxy "
            "that terminates it)"
        )
    tls = TlsFiles(
        refuse_unreadable("intake", "SMSGW_GRPC_TLS_CERT_FILE", settings.grpc_tls_cert_file),
        refuse_unreadable("intake", "SMSGW_GRPC_TLS_KEY_FILE", settings.grpc_tls_key_file),
    )
    # API clients have no certificates: services' calls come to the mTLS port, or every client has one.
    return settings.verifying_clients("intake", tls)


async def serve(settings: IntakeSettings) -> None:
    settings.log_effective("intake")
    tls = public_tls(settings)  # before anything starts: a missing certificate stops intake at once
    settings.refuse_development_defaults("intake", development_defaults(settings))
    provider = setup_tracing("intake", settings.trace_file)
    live = LiveMessages(queue_size=settings.watch_queue_size)
    inbound = InboundProjection(queue_size=settings.watch_queue_size)
    inbound_reader = EventLogReader(
        make_reader(settings), settings.topic(INBOUND_EVENTS), inbound, settings.kafka_connection()
    )
    producer = make_producer(settings)
    directory = Directory()
    if settings.bootstrap_keys_file:
        for record in configured_keys(json.loads(Path(settings.bootstrap_keys_file).read_text())):
            directory.add_configured(record)
    producer_health = ProducerHealth()
    accounts = AccountLog(
        make_reader(settings),
        producer,
        settings.topic(ACCOUNT_EVENTS),
        settings.kafka_connection(),
        directory,
        producer_health=producer_health,
    )
    auth = Authenticator(
        directory,
        settings.auth,
        default_destinations=normalize_countries(
            c for c in settings.default_destination_countries.split(",") if c.strip()
        ),
        tokens=jwt_verifier(settings),
    )
    if settings.projection_shared and not settings.projection_store:
        raise SystemExit(
            "SMSGW_PROJECTION_SHARED needs SMSGW_PROJECTION_STORE: the one store every replica "
            "writes its partitions to and reads from (postgresql://...)"
        )
    store_url = settings.projection_store or f"sqlite:///{Path(settings.state_dir).resolve()}/intake-messages.db"
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    store = open_store(store_url)
    await store.open(reset_if_outdated=store_url.startswith("sqlite") and not settings.projection_shared)
    projector = Projector(
        store,
        make_projector_consumer(
            settings.kafka_connection(),
            client_id=f"smsgw-projector-{settings.instance_id}",
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            **(projector_group(settings) if settings.projection_shared else {}),
        ),
        settings.topic(MESSAGE_EVENTS),
        kafka=settings.kafka_connection(),
        group=settings.projection_shared,
        folded=live.own,  # this replica's appends, folded already for their callers' answers
    )
    # What every read, watch and count of this replica follows: its projector, which writes every
    # partition; or, when the replicas share the store, the store itself (follower.py), read for
    # every message's first event and what is watched here. The QUEUED index and the metrics are
    # then of the partitions this replica writes (Prometheus sums the replicas).
    flow = MessageFlow()
    reads: Projector | StoreFollower
    if settings.projection_shared:
        reads = StoreFollower(
            store, settings.topic(MESSAGE_EVENTS), kafka=settings.kafka_connection(), interest=live.interest
        )
        reads.add_listener(live.on_told)
        projector.add_listener(live.on_written)
    else:
        reads = projector
        projector.add_listener(live.on_committed)
    projector.add_listener(flow.on_committed)
    configured_routes = route_table(settings)
    routes = RouteExplainer(
        configured_routes,
        applied=lambda: (current.version, current.table) if (current := accounts.route_tables.current) else None,
        health=settings.config_section("carrier_health", load_health_section),
    )
    projector.add_listener(routes.on_committed)
    # The QUEUED index holds the partitions this replica writes: scaled up to the whole backlog.
    gate = BacklogGate(
        lambda: len(live.queued_since),
        limit=settings.admission_backlog,
        seconds=settings.admission_backlog_seconds,
        max_wait=settings.admission_wait_ms / 1000,
        scale=lambda: 1 / max(projector.share, 1 / 64),
    )
    live.on_queued_changed = gate.changed
    intake = Intake(
        producer=producer,
        producer_health=producer_health,
        topic=settings.topic(MESSAGE_EVENTS),
        store=store,
        projector=reads,
        live=live,
        producer_name=f"intake/{settings.instance_id}",
        policy=AdmissionPolicy(
            default_sender=settings.default_sender,
            max_segments=settings.max_segments,
            urls=UrlPolicy(allow_http=settings.allow_http_callbacks, allow_private=settings.allow_private_callbacks),
        ),
        max_in_flight=settings.max_in_flight,
        append_timeout=settings.append_timeout_ms / 1000,
        gate=gate,
        inbound=inbound,
        inbound_history=InboundHistory(lambda: make_reader(settings), settings.topic(INBOUND_EVENTS)),
        limits=functools.partial(
            directory.limits,
            defaults=Limits(
                settings.default_messages_per_second, settings.default_burst, settings.default_messages_per_day
            ),
        ),
        capabilities=CarrierCapabilities(
            configured_routes,
            frozenset(c.strip() for c in settings.mms_carriers.split(",") if c.strip()),
            applied=lambda: current.table if (current := accounts.route_tables.current) else None,
        ),
    )
    server = ServiceServer(
        host=settings.grpc_host,
        port=settings.grpc_port,
        service_names=["smsgw.v1.MessagingService", "smsgw.v1.AdminService"],
        tls=tls,
        health_port=settings.grpc_health_port or None,
        mtls_port=settings.grpc_mtls_port or None,
        options=public_server_options(
            max_message_bytes=settings.grpc_max_message_bytes,
            max_concurrent_streams=settings.grpc_max_concurrent_streams,
            keepalive_seconds=settings.grpc_keepalive_seconds,
            max_connection_age_seconds=settings.grpc_max_connection_age_seconds,
        ),
    )
    cursors = CursorCodec(
        Path(settings.cursor_secret_file).read_bytes().strip() if settings.cursor_secret_file else DEVELOPMENT_SECRET
    )
    server.add(
        lambda s: api_grpc.add_MessagingServiceServicer_to_server(
            MessagingServicer(intake, auth, max_streams_per_account=settings.max_streams_per_account, cursors=cursors),
            s,
        )
    )
    server.add(lambda s: accounts_grpc.add_AdminServiceServicer_to_server(AdminServicer(accounts, auth, routes), s))
    # The server stops first (its calls in flight still have the producer and the store), then the
    # rest, newest first.
    run = ServiceRun.of("intake", server, settings, tracing=provider, server_grace=5.0)
    try:
        await run.start()
        await start_metrics(
            run,
            settings,
            "intake",
            [flow, intake.breaker, gate, projector, *([reads] if reads is not projector else []), server.requests],
        )
        await prepare_topics(settings)
        await producer.start()
        run.on_close(producer.stop)
        run.on_close(store.close)
        await inbound_reader.start()
        run.on_close(inbound_reader.stop)
        await accounts.reader.start()
        run.on_close(accounts.reader.stop)
        # For `routes explain --live`: the carrier-adapter replicas' connections, as routing reads them.
        connections = CarrierConnectionReader.of(settings, routes.health.connections)
        await connections.start()
        run.on_close(connections.stop)
        await projector.start()
        run.on_close(projector.stop)
        if reads is not projector:
            await reads.start()
            run.on_close(reads.stop)
        await inbound_reader.caught_up.wait()
        await accounts.reader.caught_up.wait()
        await reads.catch_up()  # shared: nothing to wait for (the store is read from its checkpoints)
        # The store has everything up to here: what it says counts, and what comes next is counted
        # as it is committed (nothing in between: the projector runs again only below).
        counted = await intake.count_accepted_today()
        queued = await intake.index_queued()
        live.on_committed_elsewhere = intake.count_committed_elsewhere
        projector.spawn()
        if reads is not projector:
            reads.spawn()
        log.info("store caught up: %d messages accepted today (UTC) counted against limits, %d QUEUED", counted, queued)
        redriver = Redriver(
            live.queued_since,
            intake.current_state,
            intake.queued_event,
            intake.append,
            after=timedelta(seconds=settings.redrive_after_seconds),
        )
        run.watch(redriver.run(run.stop), "redrive")
        run.watch(producer_health.until_broken(run.stop), "event log producer")
        await run.until_stopped()
    finally:
        await run.close()


def main() -> None:
    settings = IntakeSettings()
    configure_logging(settings.log_level, settings.log_format, "intake")
    eventloop.run(serve(settings), settings.event_loop, settings.gc_young_collection_seconds)


if __name__ == "__main__":
    main()
