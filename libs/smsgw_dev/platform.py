"""Runs the whole platform as separate processes: SMSC simulator + the four services.

Used by `make run` (smsgw_dev.devrun) and by the end-to-end and reliability tests,
so what the tests start is exactly what a developer runs.

Over 500 lines on purpose: this is the one place that knows how every process of the
platform is started (ports, environment, replicas, brokers); split, that knowledge would scatter.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smsgw import config_file
from smsgw.brokers._base import free_port, reserve_ports
from smsgw.domain.credentials import configured_entry, new_key, parse_scopes
from smsgw.kafka.clients import ensure_topics
from smsgw.v1 import accounts_pb2
from smsgw.v1 import accounts_pb2_grpc as accounts_grpc
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw_dev.devpki import make_pki
from smsgw_dev.simulators.twilio import DEFAULT_ACCOUNT_SID as TWILIO_ACCOUNT_SID
from smsgw_dev.simulators.twilio import DEFAULT_AUTH_TOKEN as TWILIO_AUTH_TOKEN

# The simulated Android phone of `make run` and the end-to-end tests.
PHONE_TOKEN = "dev-phone-token-0123456789"
PHONE_DEVICE_ID = "sim-phone-1"
PHONE_NUMBER = "+16505550100"
PHONES_PREFIX = "+1650555"
# The SMPP accounts (system_id: password) carrier-adapter binds to the SMSC simulator with. Each
# password is its own and unlike any other text (SMPP allows 8 characters), so a test can look
# for it in the logs.
SMPP_ACCOUNTS = {"smsgw": "smQ7v1Kp", "smsgw2": "smQ7v2Kp", "smsgw3": "smQ7v3Kp"}
# carrier-adapter replicas authenticate their relay calls to each other with it (SMSGW_RELAY_SECRET).
RELAY_SECRET = "dev-relay-secret-0123456789"

# Webhooks of `make run` and the tests: every account signs with this development secret.
WEBHOOK_SECRET = "dev-webhook-secret"
HOOKS_ACCOUNT = "acct-hooks"
HOOKS_NUMBER = "+14155550999"  # owned by HOOKS_ACCOUNT: inbound SMS to it go to that account

SERVICES = {
    "intake": "smsgw_intake",
    "routing": "smsgw_routing",
    "carrier-adapter": "smsgw_carrier_adapter",
    "receipt": "smsgw_receipt",
}
#: The services Platform.replicas can scale (carrier-adapter has carrier_adapter_replicas).
SCALABLE = ("intake", "routing", "receipt")


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process writes it until it stops
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, grace: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@dataclass
class Platform:
    bootstrap: str
    idempotence: bool
    run_dir: Path
    topic_prefix: str = ""
    smsc_port: int | None = None
    #: Where the carriers connect to reach the SMSC simulator, when not `smsc_port`: a proxy in
    #: front of it that injects network faults (tests/chaos/toxiproxy.py).
    smsc_connect_port: int | None = None
    smsc_control_port: int | None = None
    twilio_port: int | None = None
    http_callback_port: int | None = None
    #: carrier-adapter's Prometheus /metrics (the other services expose none).
    metrics_port: int | None = None
    #: The other service processes' /metrics ports (metrics_port_of).
    other_metrics_ports: dict[str, int] = field(default_factory=dict)
    grpc_ports: dict[str, int] = field(default_factory=dict)
    dlr_delay: float = 0.2
    # Destinations the simulated SMSC refuses (ESME_RINVDSTADR): a permanent carrier error on demand.
    fail_pattern: str = r"^\+?1415555066\d$"
    # The SMSC answers a temporary fault (ESME_RSYSERR) to the first submit of each message to these.
    flaky_pattern: str = r"^\+?1415555064\d$"
    # ... and refuses these texts for good (ESME_RSUBMITFAIL), as a content filter does.
    blocked_text_pattern: str = r"BLOCKED CONTENT"
    # ...whose receipts never come (the receipt policy then expires them), and whose say UNDELIV.
    no_dlr_pattern: str = r"^\+?1415555067\d$"
    undeliverable_pattern: str = r"^\+?1415555068\d$"
    extra_env: dict[str, str] = field(default_factory=dict)
    # Settings of one process only ("carrier-adapter-2" -> {...}), after extra_env: what differs
    # between replicas (e.g. each one's SMSGW_GRPC_MTLS_PORT) or must not reach the other services.
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    trace_file: str = ""
    receipt_policies: dict = field(
        default_factory=lambda: {
            "default": {"receipt_timeout": 3600, "orphan_after": 5, "retain_after_final": 600},
            "carriers": {"smsc-sim-nodlr": {"receipt_timeout": 3, "on_timeout": "expire"}},
        }
    )
    # Broker-specific client tuning (e.g. short fetch waits on Tansu); see broker_env().
    broker_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    # carrier-adapter processes: "carrier-adapter", then "carrier-adapter-2", ... (each its own gRPC port
    # and instance id; they share the dispatch partitions and each other's phones).
    carrier_adapter_replicas: int = 1
    # Replicas of the other services at start ("intake", "routing", "receipt" -> count): "routing",
    # "routing-2", ... each its own process, gRPC port, state directory and instance id; routing
    # and receipt share their consumer groups' partitions, intake replicas each read the whole log.
    # add_replica / remove_replica scale them while the platform runs.
    replicas: dict[str, int] = field(default_factory=dict)
    # Start the simulated phone (connected to "carrier-adapter"); tests that place phones themselves say False.
    android_phone: bool = True
    # intake's SMSGW_AUTH: "api-keys" (callers present keys: `api_key(account)` makes them) or
    # "trusted-header" (the account is whatever x-smsgw-account says; for test suites only).
    auth: str = "api-keys"
    # TLS on intake's public port, with a throwaway CA under run_dir/tls (ca.crt); False: plaintext
    # (SMSGW_GRPC_PLAINTEXT=true), for the suites that predate TLS.
    tls: bool = True
    # With tls: mutual TLS between services. intake verifies client certificates against the
    # platform's CA on a second port (intake_mtls_port; its public port still serves clients
    # without one) and every service presents the platform's client certificate, receipt's HELP
    # replies reaching intake on that port.
    mutual_tls: bool = False
    #: The operator's configuration file (`make run` passes ./smsgw.yaml when there is one): its
    #: sections stand in for the simulators' carriers, routes, numbers and receipt policies.
    #: None: the platform writes its own, run_dir/smsgw.yaml, and every service reads that.
    config_file: Path | None = None
    #: Sections that replace the development ones in the file the platform writes (a test's own
    #: route table, carrier_health thresholds).
    config_sections: dict = field(default_factory=dict)

    @classmethod
    def for_broker(cls, broker, run_dir: Path, **kwargs) -> Platform:
        """A platform wired to a running broker (smsgw.brokers.RunningBroker), tuned for its kind."""
        return cls(
            bootstrap=broker.bootstrap,
            idempotence=broker.supports_idempotence,
            run_dir=run_dir,
            broker_env=broker_env(broker.kind),
            **kwargs,
        )

    def __post_init__(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # The ports the caller chose are never picked for another process of the platform.
        reserve_ports(
            self.metrics_port,
            self.smsc_port,
            self.smsc_connect_port,
            self.smsc_control_port,
            self.twilio_port,
            self.http_callback_port,
            *self.grpc_ports.values(),
            *self.other_metrics_ports.values(),
        )
        self.account_webhook_port = free_port()
        self.metrics_port = self.metrics_port or free_port()
        # For an operator's configuration file without a `webhooks` section (SMSGW_WEBHOOK_ACCOUNTS_FILE).
        self.webhook_accounts_file.write_text(json.dumps(self.webhooks()))
        self.smsc_port = self.smsc_port or free_port()
        self.smsc_control_port = self.smsc_control_port or free_port()
        self.twilio_port = self.twilio_port or free_port()
        self.http_callback_port = self.http_callback_port or free_port()
        if not isinstance(self.carrier_adapter_replicas, int) or self.carrier_adapter_replicas < 1:
            raise ValueError(f"carrier_adapter_replicas must be an integer >= 1, not {self.carrier_adapter_replicas!r}")
        unknown = set(self.replicas) - set(SCALABLE)
        if unknown or any(not isinstance(n, int) or n < 1 for n in self.replicas.values()):
            raise ValueError(f"replicas: counts >= 1 of {', '.join(SCALABLE)}, not {self.replicas!r}")
        if self.mutual_tls and not self.tls:
            raise ValueError("mutual_tls needs tls")
        if self.tls and self.replicas.get("intake", 1) > 1:
            raise ValueError("intake replicas: plaintext only (tls=False); the plaintext health port is intake's own")
        self._names = {
            base: [base] + [f"{base}-{i}" for i in range(2, self.replicas.get(base, 1) + 1)] for base in SCALABLE
        }
        # Replicas after the first listen for HTTP callbacks too (unused here: the simulator calls the first).
        self.replica_callback_ports = {name: free_port() for name in self.adapter_replicas[1:]}
        for name in self.service_processes:
            self.grpc_ports.setdefault(name, free_port())
        self._api_keys: dict[str, str] = {}
        self._write_bootstrap_keys()
        self.pki = make_pki(self.run_dir / "tls", days=30) if self.tls else None
        self.intake_health_port = free_port() if self.tls else None
        self.intake_mtls_port = free_port() if self.mutual_tls else None

    def intake_channel(self) -> grpc.aio.Channel:
        """A channel to intake's public port (trusting the platform's CA when it serves TLS)."""
        if self.pki is None:
            return grpc.aio.insecure_channel(self.intake_address)
        return grpc.aio.secure_channel(self.intake_address, grpc.ssl_channel_credentials(self.pki.ca.read_bytes()))

    def _write_bootstrap_keys(self) -> None:
        """The first admin key (account "operator") and receipt's own service key, as configuration."""
        self.admin_key = new_key()[1]
        self.service_key = new_key()[1]
        self.bootstrap_keys_file.write_text(
            json.dumps(
                {
                    "keys": [
                        configured_entry(self.admin_key, "operator", ["admin"], "platform admin"),
                        configured_entry(
                            self.service_key, "platform", ["send", "act-as-any-account"], "receipt's HELP replies"
                        ),
                    ]
                }
            )
        )
        for path, key in ((self.admin_key_file, self.admin_key), (self.service_key_file, self.service_key)):
            path.write_text(key + "\n")
            path.chmod(0o600)

    @property
    def bootstrap_keys_file(self) -> Path:
        return self.run_dir / "bootstrap-keys.json"

    @property
    def admin_key_file(self) -> Path:
        return self.run_dir / "admin-api-key"

    @property
    def service_key_file(self) -> Path:
        return self.run_dir / "service-api-key"

    async def api_key(
        self, account: str, scopes: tuple[str, ...] = ("send", "read"), name: str = "platform harness"
    ) -> str:
        """A key of `account` (created, with the account, through the admin API the first time)."""
        cache_key = f"{account}/{','.join(sorted(scopes))}"
        if cache_key not in self._api_keys:
            async with self.intake_channel() as channel:
                admin = accounts_grpc.AdminServiceStub(channel)
                metadata = (("authorization", f"Bearer {self.admin_key}"),)
                try:
                    await admin.CreateAccount(
                        accounts_pb2.CreateAccountRequest(id=account), metadata=metadata, timeout=10
                    )
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                        raise
                created = await admin.CreateApiKey(
                    accounts_pb2.CreateApiKeyRequest(
                        account_id=account,
                        scopes=[accounts_pb2.ApiKeyScope.Name(s) for s in parse_scopes(scopes)],
                        name=name,
                    ),
                    metadata=metadata,
                    timeout=10,
                )
            self._api_keys[cache_key] = created.secret
        return self._api_keys[cache_key]

    async def still_valid(self, key_file: Path) -> bool:
        """True when `key_file` holds a key intake accepts (e.g. written by an earlier run whose
        log was kept)."""
        if not key_file.is_file():
            return False
        key = key_file.read_text().strip()
        async with self.intake_channel() as channel:
            try:
                await api_grpc.MessagingServiceStub(channel).ListMessages(
                    api.ListMessagesRequest(page_size=1), metadata=(("authorization", f"Bearer {key}"),), timeout=10
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    return False
                raise
        return True

    @property
    def adapter_replicas(self) -> list[str]:
        """The carrier-adapter process names: "carrier-adapter", "carrier-adapter-2", ..."""
        return ["carrier-adapter"] + [f"carrier-adapter-{i}" for i in range(2, self.carrier_adapter_replicas + 1)]

    @property
    def service_processes(self) -> list[str]:
        """Every service process, replicas included, upstream first."""
        return [*self._names["intake"], *self._names["routing"], *self.adapter_replicas, *self._names["receipt"]]

    def replica_names(self, base: str) -> list[str]:
        return list(self.adapter_replicas if base == "carrier-adapter" else self._names[base])

    @staticmethod
    def service_of(name: str) -> str:
        """The service a process runs: "routing-3" -> "routing"."""
        base, _, number = name.rpartition("-")
        return base if number.isdigit() and base in SERVICES else name

    async def add_replica(self, base: str, timeout: float = 90.0) -> str:
        """Starts one more replica of a service and waits until it serves."""
        if base == "carrier-adapter":
            self.carrier_adapter_replicas += 1
            name = self.adapter_replicas[-1]
            self.replica_callback_ports[name] = free_port()
        else:
            names = self._names[base]
            name = f"{base}-{max([1, *(int(n.rpartition('-')[2]) for n in names[1:])]) + 1}"
            names.append(name)
        self.grpc_ports[name] = free_port()
        self.start_service(name)
        await self.wait_serving(name, timeout)
        return name

    def remove_replica(self, name: str, *, hard: bool = False) -> None:
        """Stops a replica (SIGTERM, as a scale-in does; kill -9 with hard) and forgets it. Of
        carrier-adapter, the newest replica only (their names follow carrier_adapter_replicas)."""
        if self.service_of(name) == "carrier-adapter" and name != self.adapter_replicas[-1]:
            raise ValueError(f"{name}: only the newest carrier-adapter replica ({self.adapter_replicas[-1]}) goes")
        # Forgotten first: a supervisor (tests/chaos) that restarts every service process it finds
        # exited would otherwise start it again while it stops, and nothing would stop that one.
        if self.service_of(name) == "carrier-adapter":
            self.carrier_adapter_replicas -= 1
        else:
            self._names[self.service_of(name)].remove(name)
        (self.kill if hard else lambda n: self.processes[n].stop())(name)
        del self.processes[name]

    @property
    def webhook_accounts_file(self) -> Path:
        return self.run_dir / "webhook-accounts.json"

    @property
    def state_dir(self) -> Path:
        return self.run_dir / "state"

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.grpc_ports[service]}"

    @property
    def intake_address(self) -> str:
        return self.address("intake")

    def metrics_port_of(self, name: str) -> int:
        """Where a service process serves /metrics: carrier-adapter on `metrics_port` (make run prints
        it), every other process on a port of its own."""
        if name == "carrier-adapter":
            assert self.metrics_port is not None  # chosen in __post_init__
            return self.metrics_port
        return self.other_metrics_ports.setdefault(name, free_port())

    def _service_env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        config = self.write_config_file()
        if "webhooks" not in config_file.read(config):
            env["SMSGW_WEBHOOK_ACCOUNTS_FILE"] = str(self.webhook_accounts_file)
        env.update(
            {
                "SMSGW_KAFKA_BOOTSTRAP": self.bootstrap,
                "SMSGW_KAFKA_IDEMPOTENCE": "true" if self.idempotence else "false",
                "SMSGW_TOPIC_PREFIX": self.topic_prefix,
                "SMSGW_GRPC_HOST": "127.0.0.1",
                "SMSGW_GRPC_PORT": str(self.grpc_ports[name]),
                # Short group sessions: fast joins on Tansu, quick takeover after a crash.
                "SMSGW_KAFKA_SESSION_TIMEOUT_MS": "6000",
                "SMSGW_CONFIG_FILE": str(config),
                "SMSGW_TRACE_FILE": self.trace_file,
                "SMSGW_STATE_DIR": str(self.state_dir / name),
                "SMSGW_INTAKE_ADDRESS": self.intake_address,
                "SMSGW_METRICS_PORT": str(self.metrics_port_of(name)),
                "SMSGW_HTTP_CALLBACK_PORT": str(self.replica_callback_ports.get(name, self.http_callback_port)),
                "SMSGW_MMS_CARRIERS": "twilio-sim",
                "SMSGW_WEBHOOK_STORE": str(self.state_dir / name / "webhooks.sqlite3"),
                "SMSGW_WEBHOOK_BASE_DELAY": "0.2",
                # A development platform: simulators, development defaults (each service warns).
                "SMSGW_ENVIRONMENT": "development",
                "SMSGW_AUTH": self.auth,
                # The simulators and the tests' webhook receivers listen on loopback over http: a
                # development platform allows that (production refuses both, docs/security.md).
                "SMSGW_ALLOW_HTTP_CALLBACKS": "true",
                "SMSGW_ALLOW_PRIVATE_CALLBACKS": "true",
                "SMSGW_WEBHOOK_ALLOW_HTTP": "true",
                "SMSGW_WEBHOOK_ALLOW_PRIVATE": "true",
                "SMSGW_BOOTSTRAP_KEYS_FILE": str(self.bootstrap_keys_file),
                "SMSGW_INTAKE_API_KEY_FILE": str(self.service_key_file),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.pki is not None:
            env["SMSGW_INTAKE_CA_FILE"] = str(self.pki.ca)  # receipt's HELP replies reach intake over TLS
            if self.service_of(name) == "intake":
                # intake's public port only: carrier-adapter reads the same names for its own port
                # (phones and relay calls), which stays plaintext here unless a test asks (extra_env).
                env.update(
                    {
                        "SMSGW_GRPC_TLS_CERT_FILE": str(self.pki.server_cert),
                        "SMSGW_GRPC_TLS_KEY_FILE": str(self.pki.server_key),
                        "SMSGW_GRPC_HEALTH_PORT": str(self.intake_health_port),
                    }
                )
        else:
            env["SMSGW_GRPC_PLAINTEXT"] = "true"
        if self.pki is not None and self.mutual_tls:
            env.update(
                {
                    "SMSGW_GRPC_CLIENT_CERT_FILE": str(self.pki.client_cert),
                    "SMSGW_GRPC_CLIENT_KEY_FILE": str(self.pki.client_key),
                    "SMSGW_INTAKE_ADDRESS": f"127.0.0.1:{self.intake_mtls_port}",
                }
            )
            if self.service_of(name) == "intake":
                env.update(
                    {
                        "SMSGW_GRPC_TLS_CLIENT_CA_FILE": str(self.pki.ca),
                        "SMSGW_GRPC_MTLS_PORT": str(self.intake_mtls_port),
                    }
                )
        if name in self.adapter_replicas:
            env.update({"SMSGW_INSTANCE_ID": name, "SMSGW_RELAY_SECRET": RELAY_SECRET})
        env.update(self.broker_env)
        env.update(self.extra_env)
        env.update(self.service_env.get(name, {}))
        return env

    #: Sections of the configuration file and the variable each one replaces: a test that sets
    #: the variable (extra_env, service_env) gets it, and the section is left out of the file.
    SECTION_VARIABLES: ClassVar[dict[str, str]] = {
        "carriers": "SMSGW_CARRIERS",
        "routes": "SMSGW_ROUTES",
        "numbers": "SMSGW_NUMBERS",
        "receipt_policies": "SMSGW_RECEIPT_POLICIES",
        "webhooks": "SMSGW_WEBHOOK_ACCOUNTS_FILE",
    }

    def config_document(self) -> dict:
        """The development platform's configuration: the simulators as carriers."""
        return {
            "carriers": self.carriers(),
            "routes": self.routes(),
            # Unlisted numbers (the simulators') belong to the development account.
            "numbers": {"default_account": "default", "numbers": {HOOKS_NUMBER: {"account": HOOKS_ACCOUNT}}},
            "receipt_policies": self.receipt_policies,
            "webhooks": self.webhooks(),
            **self.config_sections,
        }

    def webhooks(self) -> dict:
        """Each account's webhook secret and default URL (the `webhooks` section)."""
        return {
            # Accounts made at run time sign with a secret derived from it for each alone
            # (`smsgw webhooks secret ACCOUNT`, with SMSGW_CONFIG_FILE pointing at the file).
            "platform_secret": WEBHOOK_SECRET,
            "accounts": {
                "default": {"secret": WEBHOOK_SECRET},
                # An account with a default webhook URL (for its messages and its inbound SMS).
                HOOKS_ACCOUNT: {
                    "secret": WEBHOOK_SECRET,
                    "callback_url": f"http://127.0.0.1:{self.account_webhook_port}/account",
                },
            },
        }

    def write_config_file(self) -> Path:
        """The file every service reads (SMSGW_CONFIG_FILE): the operator's, or run_dir/smsgw.yaml
        written now from config_document() (again at each start, so a test's changes apply)."""
        if self.config_file is not None:
            return self.config_file
        overridden = set(self.extra_env) | {name for env in self.service_env.values() for name in env}
        document = {
            section: value
            for section, value in self.config_document().items()
            if self.SECTION_VARIABLES.get(section) not in overridden
        }
        path = self.run_dir / "smsgw.yaml"
        header = (
            "# Written by smsgw_dev.platform for this development run (the simulators). To point\n"
            "# `make run` at your own carriers, copy deploy/smsgw.example.yaml to ./smsgw.yaml and edit it.\n"
        )
        path.write_text(header + yaml.safe_dump(document, sort_keys=False))
        return path

    def carriers(self) -> list[dict]:
        smpp = {
            "kind": "smpp",
            "host": "127.0.0.1",
            "port": self.smsc_connect_port or self.smsc_port,
            "system_id": "smsgw",
            "password": SMPP_ACCOUNTS["smsgw"],
            "window": 50,
        }
        # Two binds to the same simulator: the second carrier's receipts never come, which is
        # how a carrier without DLRs behaves (its receipt policy expires messages quickly).
        return [
            dict(smpp, name="smsc-sim"),
            dict(smpp, name="smsc-sim-nodlr", system_id="smsgw2", password=SMPP_ACCOUNTS["smsgw2"]),
            # At most once: a submit left in doubt by a lost connection fails (SUBMIT_IN_DOUBT), never resent.
            dict(
                smpp, name="smsc-sim-atmostonce", system_id="smsgw3", password=SMPP_ACCOUNTS["smsgw3"], in_doubt="fail"
            ),
            # An Android phone acting as a gateway (the device simulator connects to carrier-adapter).
            {
                "name": "phones",
                "kind": "android",
                "account_id": "default",
                "device_tokens": [{"token": PHONE_TOKEN, "device_id": PHONE_DEVICE_ID}],
            },
            # A Twilio-compatible HTTP provider: the Twilio simulator; its callbacks come to carrier-adapter.
            {
                "name": "twilio-sim",
                "kind": "twilio",
                "base_url": f"http://127.0.0.1:{self.twilio_port}",
                "account_sid": TWILIO_ACCOUNT_SID,
                "auth_token": TWILIO_AUTH_TOKEN,
                "from_number": "+14155550199",
                "status_callback_base_url": f"http://127.0.0.1:{self.http_callback_port}",
            },
        ]

    def routes(self) -> list[dict]:
        return [
            {"prefix": "", "carrier": "smsc-sim"},
            {"prefix": "+1415555067", "carrier": "smsc-sim-nodlr"},
            {"prefix": "+1415555069", "carrier": "smsc-sim-atmostonce"},
            {"prefix": PHONES_PREFIX, "carrier": "phones"},
            # The Twilio simulator: +14155550776 is an invalid number (21211), +14155550778 ends undelivered (30003).
            {"prefix": "+1415555077", "carrier": "twilio-sim"},
        ]

    def _make(self, name: str) -> ManagedProcess:
        if name == "android-phone":
            argv = [
                sys.executable,
                "-m",
                "smsgw_dev.simulators.android_device",
                "--server",
                self.address("carrier-adapter"),
                "--token",
                PHONE_TOKEN,
                "--device-id",
                PHONE_DEVICE_ID,
                "--phone-number",
                PHONE_NUMBER,
            ]
            env = dict(os.environ, PYTHONUNBUFFERED="1")
        elif name == "smsc-simulator":
            argv = [
                sys.executable,
                "-m",
                "smsgw_dev.simulators.smsc",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.smsc_port),
                "--dlr-delay",
                str(self.dlr_delay),
                "--fail-pattern",
                self.fail_pattern,
                "--flaky-pattern",
                self.flaky_pattern,
                "--blocked-text-pattern",
                self.blocked_text_pattern,
                "--system-id",
                "smsgw",
                "--password",
                SMPP_ACCOUNTS["smsgw"],
                *(
                    arg
                    for account in ("smsgw2", "smsgw3")
                    for arg in ("--account", f"{account}:{SMPP_ACCOUNTS[account]}")
                ),
                "--no-dlr-pattern",
                self.no_dlr_pattern,
                "--undeliverable-pattern",
                self.undeliverable_pattern,
                "--control-port",
                str(self.smsc_control_port),
                # Ids never handed out before, also when a run is restarted over a kept log:
                # microseconds since 2026 (14 digits), which no simulator outruns.
                "--first-id",
                str(int((time.time() - 1_767_225_600) * 1_000_000)),
            ]
            env = dict(os.environ, PYTHONUNBUFFERED="1")
        elif name == "twilio-simulator":
            argv = [
                sys.executable,
                "-m",
                "smsgw_dev.simulators.twilio",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.twilio_port),
                "--account-sid",
                TWILIO_ACCOUNT_SID,
                "--auth-token",
                TWILIO_AUTH_TOKEN,
                "--callback-delay",
                str(self.dlr_delay),
                "--invalid-pattern",
                r"^\+14155550776$",
                "--outcome",
                r"^\+14155550778$=undelivered/30003",
                "--inbound-url",
                f"http://127.0.0.1:{self.http_callback_port}/callbacks/twilio-sim/inbound",
            ]
            env = dict(os.environ, PYTHONUNBUFFERED="1")
        else:
            module = SERVICES["carrier-adapter"] if name in self.adapter_replicas else SERVICES[self.service_of(name)]
            argv = [sys.executable, "-m", module]
            env = self._service_env(name)
        return ManagedProcess(name=name, argv=argv, env=env, log_path=self.run_dir / f"{name}.log")

    async def start(self, timeout: float = 90.0) -> None:
        for old_log in self.run_dir.glob("*.log"):
            if old_log.name != "tansu.log":
                old_log.unlink()  # one run's logs per file; restarts within a run append
        await ensure_topics(self.bootstrap, self.topic_prefix)
        for name in ("smsc-simulator", "twilio-simulator", *self.service_processes):
            self.processes[name] = self._make(name)
            self.processes[name].start()
        await self.wait_port("smsc-simulator", self.smsc_port, timeout)
        await self.wait_port("twilio-simulator", self.twilio_port, timeout)
        await asyncio.gather(*(self.wait_serving(name, timeout) for name in self.service_processes))
        if self.android_phone:
            self.start_service("android-phone")
            await self.wait_log("android-phone", "connected to", timeout)

    def kill(self, name: str) -> None:
        """kill -9: no graceful shutdown, no final commit."""
        self.processes[name].kill()

    def start_service(self, name: str) -> None:
        self.processes[name] = self._make(name)
        self.processes[name].start()

    async def restart(self, name: str, *, hard: bool = True, timeout: float = 90.0) -> None:
        if hard:
            self.kill(name)
        else:
            self.processes[name].stop()
        self.start_service(name)
        if name in self.service_processes:
            await self.wait_serving(name, timeout)
        elif name == "android-phone":
            await self.wait_log(name, "connected to", timeout)
        elif name == "twilio-simulator":
            await self.wait_port(name, self.twilio_port, timeout)
        else:
            await self.wait_port(name, self.smsc_port, timeout)

    async def wait_port(self, name: str, port: int | None, timeout: float) -> None:
        if port is None:
            raise ValueError(f"{name}: no port chosen (the platform chooses its ports when it is made)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(name)
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise TimeoutError(f"{name} did not open port {port}:\n{self.processes[name].log_tail()}")

    def _health_channel(self, name: str, address: str) -> grpc.aio.Channel:
        """carrier-adapter given TLS on its port (SMSGW_GRPC_TLS_* in extra_env) is asked over TLS."""
        ca = self.extra_env.get("SMSGW_GRPC_TLS_CA_FILE")
        if ca and self.service_of(name) == "carrier-adapter":
            server_name = self.extra_env.get("SMSGW_GRPC_TLS_SERVER_NAME", "")
            return grpc.aio.secure_channel(
                address,
                grpc.ssl_channel_credentials(Path(ca).read_bytes()),
                options=[("grpc.ssl_target_name_override", server_name)] if server_name else [],
            )
        return grpc.aio.insecure_channel(address)

    async def wait_serving(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        # intake with TLS answers health in plaintext on its own port too (as Kubernetes' probes ask).
        address = f"127.0.0.1:{self.intake_health_port}" if name == "intake" and self.tls else self.address(name)
        async with self._health_channel(name, address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                self._check_alive(name)
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{name} not SERVING after {timeout}s:\n{self.processes[name].log_tail()}")

    async def wait_log(self, name: str, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(name)
            if needle in self.processes[name].log_tail(200):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{name} never logged {needle!r}:\n{self.processes[name].log_tail()}")

    def _check_alive(self, name: str) -> None:
        process = self.processes[name]
        if not process.running:
            code = process.proc.returncode if process.proc is not None else None
            raise RuntimeError(f"{name} exited with {code}:\n{process.log_tail()}")

    def stop(self) -> dict[str, int | None]:
        codes = {}
        # Upstream first, simulator last, so in-flight work can finish against it.
        for name in (*self.service_processes, "android-phone", "smsc-simulator", "twilio-simulator"):
            if name in self.processes:
                codes[name] = self.processes[name].stop()
        return codes


def broker_env(kind: str) -> dict[str, str]:
    """Service settings that depend on the broker: the difference is a setting, not a code fork."""
    if kind == "tansu":
        # No InitProducerId v0 on Tansu: idempotence off (readers dedupe by event id);
        # fetches are held for half the max wait: keep the wait short.
        # And records are written one per batch, because Tansu <= v0.6.0 can skip records
        # when a consumer resumes from inside a batch.
        return {
            "SMSGW_KAFKA_IDEMPOTENCE": "false",
            "SMSGW_KAFKA_FETCH_MAX_WAIT_MS": "20",
            "SMSGW_KAFKA_MAX_BATCH_SIZE": "1",
        }
    return {"SMSGW_KAFKA_IDEMPOTENCE": "true"}
