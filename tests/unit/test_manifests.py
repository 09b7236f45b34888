"""The Kubernetes manifests (k8s/) and the image (deploy/docker/) agree with the code they deploy.

No cluster and no Docker engine here: every YAML file is parsed and checked for what
would otherwise only fail after a deploy. Each Deployment runs a module that exists,
with an environment its settings class accepts, probes the gRPC health port it listens
on, runs non-root on a read-only root filesystem with limits, and never assumes it is
alone; every topic of the registry has its Strimzi KafkaTopic, same partitions and config.
"""

from __future__ import annotations

import importlib
import inspect
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from smsgw.events.topics import ALL_TOPICS, CARRIER_DISPATCH, CARRIER_REPORTS, MESSAGE_EVENTS
from smsgw.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
BASE = K8S / "base"
OVERLAYS = {name: K8S / "overlays" / name for name in ("dev", "prod")}
NETWORK_POLICIES = K8S / "components" / "network-policies"
CALLBACKS_INGRESS = K8S / "components" / "callbacks-ingress"
KAFKA_SCRAM_TLS = K8S / "components" / "kafka-scram-tls"
STRIMZI_KAFKA = K8S / "components" / "strimzi-kafka"
KEDA_LAG_SCALING = K8S / "components" / "keda-lag-scaling"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"

SERVICES = ("intake", "routing", "carrier-adapter", "receipt")
# Consumer-group members and the topic whose partitions they share: never more replicas
# than partitions, or a member gets none and never reports SERVING. intake is not here:
# it reads every partition in every replica.
GROUP_TOPICS = {"routing": MESSAGE_EVENTS, "carrier-adapter": CARRIER_DISPATCH, "receipt": CARRIER_REPORTS}
KAFKA_BOOTSTRAP = "smsgw-kafka-bootstrap:9092"
# Ports a service listens on besides grpc: container port name -> the setting that sets it.
EXTRA_PORTS = {
    "carrier-adapter": {"http-callbacks": "SMSGW_HTTP_CALLBACK_PORT", "metrics": "SMSGW_METRICS_PORT"},
    "intake": {"health": "SMSGW_GRPC_HEALTH_PORT", "metrics": "SMSGW_METRICS_PORT"},
    "routing": {"metrics": "SMSGW_METRICS_PORT"},
    "receipt": {"metrics": "SMSGW_METRICS_PORT"},
}
ANYWHERE = "0.0.0.0/0"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def load_documents(directory: Path) -> list[tuple[Path, dict]]:
    documents = []
    for path in sorted(directory.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                documents.append((path, doc))
    return documents


DOCUMENTS = load_documents(K8S)


def of_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in DOCUMENTS if doc.get("kind") == kind}


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per pod"
    return containers[0]


def env_of(deployment: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(deployment).get("env", [])}


def grpc_port(deployment: dict) -> int:
    env = env_of(deployment)
    assert "SMSGW_GRPC_PORT" in env, "SMSGW_GRPC_PORT is set on the container"
    return int(env["SMSGW_GRPC_PORT"]["value"])


def package_dirs() -> dict[str, str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return pyproject["tool"]["setuptools"]["package-dir"]


def module_of(deployment: dict) -> str:
    command = container(deployment)["command"]
    assert command[:2] == ["python", "-m"] and len(command) == 3, f"command is `python -m MODULE`, got {command}"
    return command[2]


def settings_class(module: str) -> type[ServiceSettings]:
    main = importlib.import_module(f"{module}.__main__")
    found = [
        c
        for _, c in inspect.getmembers(main, inspect.isclass)
        if issubclass(c, ServiceSettings) and c is not ServiceSettings and c.__module__ == main.__name__
    ]
    assert len(found) == 1, f"{module}.__main__ defines one settings class, found {found}"
    return found[0]


# --- every file ------------------------------------------------------------------------


def test_every_document_parses_with_a_kind_and_a_name():
    assert DOCUMENTS, "k8s/ holds manifests"
    for path, doc in DOCUMENTS:
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion and kind"
        if doc["kind"] not in ("Kustomization", "Component"):
            assert DNS_SUBDOMAIN.match(doc["metadata"]["name"]), f"{path}: {doc['metadata']['name']!r}"


@pytest.mark.parametrize(
    "directory",
    [BASE, NETWORK_POLICIES, CALLBACKS_INGRESS, KAFKA_SCRAM_TLS, STRIMZI_KAFKA, KEDA_LAG_SCALING],
    ids=["base", "network-policies", "callbacks-ingress", "kafka-scram-tls", "strimzi-kafka", "keda-lag-scaling"],
)
def test_kustomization_lists_every_manifest_of_its_folder(directory):
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    on_disk = sorted(p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert len(listed) == len(set(listed))


def test_base_sets_the_image_every_deployment_names():
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    images = {i["name"] for i in kustomization["images"]}
    for name, deployment in of_kind("Deployment").items():
        assert container(deployment)["image"] in images, name


def test_one_file_per_service_with_its_deployment_service_and_service_account():
    assert set(of_kind("Deployment")) == set(SERVICES)
    for service in SERVICES:
        kinds = sorted(doc["kind"] for path, doc in DOCUMENTS if path == BASE / f"{service}.yaml")
        assert kinds == ["Deployment", "Service", "ServiceAccount"], service
        names = {doc["metadata"]["name"] for path, doc in DOCUMENTS if path == BASE / f"{service}.yaml"}
        assert names == {service}


# --- each Deployment -------------------------------------------------------------------


@pytest.fixture(params=SERVICES)
def deployment(request) -> dict:
    return of_kind("Deployment")[request.param]


def test_runs_a_service_module_that_exists(deployment):
    module = module_of(deployment)
    dirs = package_dirs()
    assert module in dirs, f"{module} is a package of pyproject.toml"
    package = ROOT / dirs[module]
    assert package.parent == ROOT / "services", f"{module} lives under services/"
    assert (package / "__main__.py").is_file(), f"{package} has a __main__.py"


def test_probes_use_grpc_health_on_the_port_the_service_listens_on(deployment):
    port = grpc_port(deployment)
    c = container(deployment)
    env = env_of(deployment)
    # A TLS port cannot be probed (Kubernetes' gRPC probes speak plaintext): such a service
    # answers health on its plaintext health-only port, and the probes go there.
    probed = int(env["SMSGW_GRPC_HEALTH_PORT"]["value"]) if "SMSGW_GRPC_TLS_CERT_FILE" in env else port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == probed, probe
        assert set(c[probe]) & {"httpGet", "tcpSocket", "exec"} == set(), f"{probe} is a gRPC probe"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["grpc"] == port
    assert set(ports) == {"grpc", *EXTRA_PORTS.get(deployment["metadata"]["name"], {})}
    # The startup probe gives a service its catch-up time; liveness must not cut it short.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_port_is_the_default_of_the_service_settings(deployment):
    # Same port in a cluster as under `make run` (README's port table).
    settings = settings_class(module_of(deployment))
    assert settings.model_fields["grpc_port"].default == grpc_port(deployment)


def test_environment_is_a_valid_configuration_of_the_service(deployment, monkeypatch):
    config_maps = of_kind("ConfigMap")
    c = container(deployment)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for name, entry in env_of(deployment).items():
        if "value" in entry:
            env[name] = entry["value"]
        elif "configMapKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["configMapKeyRef"]
            env[name] = config_maps[ref["name"]]["data"][ref["key"]]
        else:
            env[name] = "from-the-cluster"  # fieldRef (pod name) or a Secret
    settings_cls = settings_class(module_of(deployment))
    known = {f"SMSGW_{field.upper()}" for field in settings_cls.model_fields}
    if module_of(deployment) == "smsgw_receipt":  # receipt's webhooks have their own settings model
        from smsgw_receipt.webhooks.settings import WebhookSettings

        known |= {f"SMSGW_WEBHOOK_{field.upper()}" for field in WebhookSettings.model_fields}
    assert set(env) <= known, f"unknown settings (typo?): {sorted(set(env) - known)}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = settings_cls()
    assert settings.kafka_bootstrap == KAFKA_BOOTSTRAP
    assert settings.kafka_idempotence is True
    assert settings.grpc_host == "0.0.0.0"
    assert settings.grpc_port == grpc_port(deployment)
    assert settings.state_dir == "/state"


def test_runs_as_non_root_on_a_read_only_root_filesystem(deployment):
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["automountServiceAccountToken"] is False
    security = container(deployment)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_state_dir_is_an_empty_dir_mounted_where_settings_point(deployment):
    env = env_of(deployment)
    assert env["SMSGW_STATE_DIR"]["value"] == "/state"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/state"]]
    assert "emptyDir" in volumes[mounts["/tmp"]], "/tmp is writable too"


def test_has_requests_and_limits(deployment):
    resources = container(deployment)["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) >= {"cpu", "memory"}, kind


def test_stops_gracefully(deployment):
    # Services go NOT_SERVING on SIGTERM, then stop with a grace of 2-5 s and close clients.
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 20


def test_has_its_service_account_and_a_service_that_selects_it(deployment):
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == name
    assert name in of_kind("ServiceAccount")
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert labels["app.kubernetes.io/part-of"] == "smsgw"
    service = of_kind("Service")[name]
    assert service["spec"]["selector"].items() <= labels.items()
    # The health-only port is for the kubelet's probes, never behind the Service.
    exposed = [port for port in EXTRA_PORTS.get(name, {}) if port != "health"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] in (["grpc", *exposed], [grpc_port(deployment)])


def test_never_assumes_one_replica(deployment):
    name = deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
    autoscalers = [
        h
        for h in of_kind("HorizontalPodAutoscaler").values()
        if h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    ]
    assert len(autoscalers) == 1
    hpa = autoscalers[0]["spec"]
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    if name in GROUP_TOPICS:
        partitions = GROUP_TOPICS[name].partitions
        assert hpa["maxReplicas"] <= partitions, "no more group members than partitions"
        rolling = deployment["spec"]["strategy"]["rollingUpdate"]
        assert rolling["maxSurge"] == 0, "a surge pod at maxReplicas would exceed the partitions"


# --- carrier-adapter's other ports: provider callbacks and metrics ----------------------


def carrier_adapter_ports() -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(of_kind("Deployment")["carrier-adapter"])["ports"]}


def test_carrier_adapter_listens_for_callbacks_and_metrics_on_the_pod_ip_where_its_ports_say():
    deployment = of_kind("Deployment")["carrier-adapter"]
    env = env_of(deployment)
    ports = carrier_adapter_ports()
    for name, variable in EXTRA_PORTS["carrier-adapter"].items():
        assert int(env[variable]["value"]) == ports[name], name
    # The callback server's default host is loopback: unreachable from the Ingress unless set.
    assert env["SMSGW_HTTP_CALLBACK_HOST"]["value"] == "0.0.0.0"
    settings = settings_class(module_of(deployment))
    assert settings.model_fields["http_callback_port"].default == ports["http-callbacks"], "same port as make run"


def test_every_service_is_scraped_on_its_metrics_port(deployment):
    from smsgw.metrics_endpoint import METRICS_PATH

    pod = deployment["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    port = int(env_of(deployment)["SMSGW_METRICS_PORT"]["value"])
    assert int(annotations["prometheus.io/port"]) == port
    assert {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}["metrics"] == port
    assert annotations["prometheus.io/path"] == METRICS_PATH
    policy = _policies()[deployment["metadata"]["name"]]
    assert port in {p["port"] for rule in policy["ingress"] for p in rule.get("ports", [])}


def test_callbacks_ingress_routes_the_callback_path_to_the_service_port_that_serves_it():
    from smsgw_carrier_adapter.twilio.config import INBOUND_PATH, STATUS_CALLBACK_PATH

    [ingress] = [doc for path, doc in DOCUMENTS if doc.get("kind") == "Ingress"]
    [rule] = ingress["spec"]["rules"]
    [route] = rule["http"]["paths"]
    assert route["pathType"] == "Prefix"
    for callback in (STATUS_CALLBACK_PATH, INBOUND_PATH):
        assert callback.format(carrier="twilio-main").startswith(route["path"]), callback
    backend = route["backend"]["service"]
    service = of_kind("Service")[backend["name"]]
    [port] = [p for p in service["spec"]["ports"] if p["name"] == backend["port"]["name"]]
    assert carrier_adapter_ports()[port["targetPort"]] == 16063
    assert rule["host"] in ingress["spec"]["tls"][0]["hosts"], "callbacks carry signed data: TLS"


# --- configuration and topics ----------------------------------------------------------


def test_shared_config_points_at_the_strimzi_bootstrap_with_idempotence():
    data = of_kind("ConfigMap")["smsgw-config"]["data"]
    assert data["SMSGW_KAFKA_BOOTSTRAP"] == KAFKA_BOOTSTRAP
    assert data["SMSGW_KAFKA_IDEMPOTENCE"] == "true"
    assert data["SMSGW_GRPC_HOST"] == "0.0.0.0"


def test_the_platform_configuration_file_passes_the_check_and_every_reader_mounts_it(tmp_path):
    from smsgw import config_file
    from smsgw.domain.route_schema import load_route_section

    path = tmp_path / "smsgw.yaml"
    path.write_text(of_kind("ConfigMap")["smsgw-platform"]["data"]["smsgw.yaml"])
    document, problems = config_file.check(path)
    assert problems == [] and document is not None
    assert document.load("routes", load_route_section).pick("+14155550100") is not None, "a default route"
    for name in ("intake", "routing", "receipt"):
        deployment = of_kind("Deployment")[name]
        assert env_of(deployment)["SMSGW_CONFIG_FILE"]["value"] == "/etc/smsgw/platform/smsgw.yaml", name
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["platform-config"]["configMap"]["name"] == "smsgw-platform", name
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["platform-config"] == "/etc/smsgw/platform", name


def test_every_registered_topic_has_a_kafka_topic_with_its_partitions_and_config():
    cluster = KAFKA_BOOTSTRAP.split("-kafka-bootstrap")[0]
    topics = {doc["spec"].get("topicName", doc["metadata"]["name"]): doc for doc in of_kind("KafkaTopic").values()}
    assert set(topics) == {spec.name for spec in ALL_TOPICS}
    for spec in ALL_TOPICS:
        topic = topics[spec.name]
        assert topic["apiVersion"] == "kafka.strimzi.io/v1"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert topic["spec"]["partitions"] == spec.partitions, spec.name
        # Replicated: acks=all is acknowledged by 2 of 3 brokers; one may go without a loss.
        assert topic["spec"]["replicas"] == 3, spec.name
        config = {k: str(v) for k, v in topic["spec"].get("config", {}).items()}
        assert config.pop("min.insync.replicas", None) == "2", spec.name
        assert config == spec.config(), spec.name


def test_every_deployment_has_a_disruption_budget_of_one_pod():
    budgets = of_kind("PodDisruptionBudget")
    deployments = of_kind("Deployment")
    assert set(budgets) == set(deployments)
    for name, budget in budgets.items():
        assert budget["apiVersion"] == "policy/v1"
        assert budget["spec"]["maxUnavailable"] == 1 and "minAvailable" not in budget["spec"], name
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), name


def test_replicas_spread_over_zones_and_nodes(deployment):
    spreads = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [s["topologyKey"] for s in spreads] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for spread in spreads:
        assert spread["maxSkew"] == 1
        assert spread["whenUnsatisfiable"] == "ScheduleAnyway"  # a one-zone, one-node cluster still schedules
        assert spread["labelSelector"]["matchLabels"].items() <= pod_labels.items()


def test_the_image_tag_is_the_project_version_never_latest():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    [image] = kustomization["images"]
    assert image["newTag"] == version != "latest"


# --- network policies ------------------------------------------------------------------


def test_network_policies_deny_by_default_and_let_each_service_reach_kafka():
    policies = {
        doc["metadata"]["name"]: doc
        for path, doc in DOCUMENTS
        if doc.get("kind") == "NetworkPolicy" and path.parent == NETWORK_POLICIES
    }
    deny = policies.pop("smsgw-deny-all")["spec"]
    assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "smsgw"}
    assert sorted(deny["policyTypes"]) == ["Egress", "Ingress"] and not deny.get("ingress") and not deny.get("egress")
    deployments = of_kind("Deployment")
    assert set(policies) == set(deployments)
    for name, policy in policies.items():
        spec = policy["spec"]
        assert (
            spec["podSelector"]["matchLabels"].items()
            <= deployments[name]["spec"]["template"]["metadata"]["labels"].items()
        )
        egress_ports = {p["port"] for rule in spec["egress"] for p in rule.get("ports", [])}
        assert int(KAFKA_BOOTSTRAP.rsplit(":", 1)[1]) in egress_ports and 53 in egress_ports, name
    intake_ingress = {p["port"] for rule in policies["intake"]["spec"]["ingress"] for p in rule["ports"]}
    metrics = int(env_of(deployments["intake"])["SMSGW_METRICS_PORT"]["value"])
    assert intake_ingress == {grpc_port(deployments["intake"]), metrics}  # the API, and Prometheus


def _policies() -> dict[str, dict]:
    return {
        doc["metadata"]["name"]: doc["spec"]
        for path, doc in DOCUMENTS
        if doc.get("kind") == "NetworkPolicy" and path.parent == NETWORK_POLICIES
    }


def _egress_anywhere(spec: dict) -> set[int]:
    return {
        p["port"]
        for rule in spec["egress"]
        if {"ipBlock": {"cidr": ANYWHERE}} in rule.get("to", [])
        for p in rule.get("ports", [])
    }


def test_carrier_adapter_policy_lets_providers_and_phones_in_and_reaches_providers_apis():
    spec = _policies()["carrier-adapter"]
    ports = carrier_adapter_ports()
    from_anywhere = {p["port"] for rule in spec["ingress"] if "from" not in rule for p in rule["ports"]}
    # Callbacks come from the internet (via the Ingress), phones too (DeviceGatewayService on grpc).
    assert from_anywhere == {ports["http-callbacks"], ports["grpc"]}
    [scrape] = [rule for rule in spec["ingress"] if "from" in rule]
    assert {p["port"] for p in scrape["ports"]} == {ports["metrics"]}
    assert all("namespaceSelector" in peer for peer in scrape["from"]), "Prometheus, from its namespace"
    assert _egress_anywhere(spec) >= {2775, 3550, 443}, "SMSCs (plain and TLS), and HTTP providers' APIs over HTTPS"


def test_receipt_policy_lets_webhooks_out_over_https():
    assert 443 in _egress_anywhere(_policies()["receipt"])


def test_receipt_policy_lets_help_replies_reach_intake():
    deployments = of_kind("Deployment")
    intake_labels = deployments["intake"]["spec"]["template"]["metadata"]["labels"]
    port = int(env_of(deployments["receipt"])["SMSGW_INTAKE_ADDRESS"]["value"].rsplit(":", 1)[1])
    assert any(
        port in {p["port"] for p in rule.get("ports", [])}
        and any(
            "podSelector" in peer and peer["podSelector"]["matchLabels"].items() <= intake_labels.items()
            for peer in rule["to"]
        )
        for rule in _policies()["receipt"]["egress"]
        if "to" in rule
    )
    intake_ingress = {p["port"] for rule in _policies()["intake"]["ingress"] for p in rule["ports"]}
    assert port in intake_ingress


# --- the image -------------------------------------------------------------------------


def _protoc_flags(line: str) -> list[str]:
    line = re.sub(r"\$\([^)]*\)", "", line)  # $(BIN), $(PROTOS), $(find ...)
    return sorted(t for t in shlex.split(line) if t.startswith("-"))


def test_image_generates_stubs_like_the_makefile_and_runs_as_the_manifests_user():
    makefile_line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if "grpc_tools.protoc" in line)
    text = DOCKERFILE.read_text()
    joined = text.replace("\\\n", " ")
    docker_line = next(line for line in joined.splitlines() if "grpc_tools.protoc" in line and "RUN" in line)
    docker_line = docker_line.split("&&")[0]
    assert _protoc_flags(docker_line) == _protoc_flags(makefile_line)
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"pip install (--no-deps )?\.(\s|$)", joined, re.M), "installs the project with `pip install .`"
    user = re.findall(r"^USER (\d+)(?::(\d+))?$", text, re.M)
    assert user and int(user[-1][0]) > 0, "the image runs as a numeric non-root user"
    for name, deployment in of_kind("Deployment").items():
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user[-1][0]), name


def test_kafka_scram_tls_component_gives_every_service_a_working_secure_connection(tmp_path, monkeypatch):
    component = yaml.safe_load((KAFKA_SCRAM_TLS / "kustomization.yaml").read_text())
    (config_patch,) = [yaml.safe_load(p["patch"]) for p in component["patches"] if "target" not in p]
    (mount_patch,) = [p for p in component["patches"] if p.get("target", {}).get("kind") == "Deployment"]
    assert config_patch["metadata"]["name"] == "smsgw-config"
    # The patch selects every Deployment by the label they all carry.
    label, value = mount_patch["target"]["labelSelector"].split("=")
    for deployment in of_kind("Deployment").values():
        assert deployment["metadata"]["labels"][label] == value
    ops = yaml.safe_load(mount_patch["patch"])
    volumes = {op["value"]["name"]: op["value"]["secret"] for op in ops if op["path"].endswith("/volumes/-")}
    mounts = {op["value"]["mountPath"]: op["value"]["name"] for op in ops if op["path"].endswith("/volumeMounts/-")}
    assert all(op["value"].get("readOnly") for op in ops if op["path"].endswith("/volumeMounts/-"))

    # Each file setting names a file that a mounted Secret provides: the KafkaUser's own Secret
    # (Strimzi names it after the user) and the cluster CA's (`<cluster>-cluster-ca-cert`).
    (user,) = [doc for path, doc in DOCUMENTS if doc.get("kind") == "KafkaUser" and path.parent == KAFKA_SCRAM_TLS]
    assert user["spec"]["authentication"]["type"] == "scram-sha-512"
    cluster = user["metadata"]["labels"]["strimzi.io/cluster"]
    data = config_patch["data"]
    secret_of_file = {}
    for setting in ("SMSGW_KAFKA_SASL_PASSWORD_FILE", "SMSGW_KAFKA_SSL_CA_FILE"):
        directory, _, file_name = data[setting].rpartition("/")
        secret = volumes[mounts[directory]]
        assert file_name in {item["path"] for item in secret["items"]}, setting
        secret_of_file[setting] = secret["secretName"]
    assert secret_of_file == {
        "SMSGW_KAFKA_SASL_PASSWORD_FILE": user["metadata"]["name"],
        "SMSGW_KAFKA_SSL_CA_FILE": f"{cluster}-cluster-ca-cert",
    }
    assert data["SMSGW_KAFKA_SASL_USERNAME"] == user["metadata"]["name"]

    # The patched configuration is one the services accept (files stand in for the Secrets).
    for name, value in {**of_kind("ConfigMap")["smsgw-config"]["data"], **data}.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "password").write_text("from-the-user-operator\n")
    (tmp_path / "ca.crt").write_text("")
    monkeypatch.setenv("SMSGW_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "password"))
    monkeypatch.setenv("SMSGW_KAFKA_SSL_CA_FILE", str(tmp_path / "ca.crt"))
    connection = ServiceSettings().kafka_connection()
    assert (connection.security_protocol, connection.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert connection.sasl_password == "from-the-user-operator"

    # The network policies let every service reach that port.
    port = int(data["SMSGW_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])
    for name, spec in _policies().items():
        if name != "smsgw-deny-all":
            assert port in {p["port"] for rule in spec["egress"] for p in rule.get("ports", [])}, name


def test_receipt_reaches_intake_through_its_service_on_the_port_it_serves():
    deployments = of_kind("Deployment")
    host, port = env_of(deployments["receipt"])["SMSGW_INTAKE_ADDRESS"]["value"].rsplit(":", 1)
    service = of_kind("Service")[host]
    assert (
        service["spec"]["selector"].items() <= deployments["intake"]["spec"]["template"]["metadata"]["labels"].items()
    )
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert int(port) == grpc_port(deployments["intake"])


def test_the_strimzi_cluster_serves_the_addresses_the_services_use_and_never_makes_topics():
    (kafka,) = of_kind("Kafka").values()
    (pool,) = of_kind("KafkaNodePool").values()
    cluster = kafka["metadata"]["name"]
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    topics = of_kind("KafkaTopic").values()
    assert {t["metadata"]["labels"]["strimzi.io/cluster"] for t in topics} == {cluster}
    # Enough nodes for every topic's replicas, and the broker's own defaults match the topics'.
    assert pool["spec"]["replicas"] >= max(t["spec"]["replicas"] for t in topics)
    assert "broker" in pool["spec"]["roles"] and "controller" in pool["spec"]["roles"]
    config = kafka["spec"]["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False
    assert config["default.replication.factor"] == 3 and config["min.insync.replicas"] == 2
    assert config["unclean.leader.election.enable"] is False
    # The plain listener is the base configuration's bootstrap; the tls one kafka-scram-tls's.
    listeners = {item["port"]: item for item in kafka["spec"]["kafka"]["listeners"]}
    base_host, base_port = of_kind("ConfigMap")["smsgw-config"]["data"]["SMSGW_KAFKA_BOOTSTRAP"].rsplit(":", 1)
    assert base_host == f"{cluster}-kafka-bootstrap" and listeners[int(base_port)]["tls"] is False
    component = yaml.safe_load((KAFKA_SCRAM_TLS / "kustomization.yaml").read_text())
    (config_patch,) = [yaml.safe_load(p["patch"]) for p in component["patches"] if "target" not in p]
    tls_host, tls_port = config_patch["data"]["SMSGW_KAFKA_BOOTSTRAP"].rsplit(":", 1)
    tls = listeners[int(tls_port)]
    assert tls_host == base_host and tls["tls"] is True
    (user,) = of_kind("KafkaUser").values()
    assert tls["authentication"]["type"] == user["spec"]["authentication"]["type"] == "scram-sha-512"
    assert config_patch["data"]["SMSGW_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert kafka["spec"]["entityOperator"].keys() >= {"topicOperator", "userOperator"}


def test_keda_scales_each_group_member_on_its_own_groups_lag_within_its_partitions():
    from smsgw_carrier_adapter.dispatcher import DISPATCH_GROUP
    from smsgw_receipt.app import GROUP as RECEIPT_GROUP
    from smsgw_routing.app import GROUP as ROUTING_GROUP

    groups = {"routing": ROUTING_GROUP, "carrier-adapter": DISPATCH_GROUP, "receipt": RECEIPT_GROUP}
    # The constant is what carrier-adapter's main makes its dispatch consumer with.
    main = (ROOT / "services" / "carrier_adapter" / "__main__.py").read_text()
    assert "make_group_consumer(settings, DISPATCH_GROUP, settings.topic(CARRIER_DISPATCH))" in main
    scaled = of_kind("ScaledObject")
    assert set(scaled) == {*GROUP_TOPICS, "intake"}
    intake = scaled.pop("intake")["spec"]
    (rate,) = [t["metadata"] for t in intake["triggers"] if t["type"] == "prometheus"]
    assert "smsgw_grpc_requests_total" in rate["query"] and float(rate["threshold"]) > 0
    assert intake["maxReplicaCount"] == of_kind("HorizontalPodAutoscaler")["intake"]["spec"]["maxReplicas"]
    bootstrap = of_kind("ConfigMap")["smsgw-config"]["data"]["SMSGW_KAFKA_BOOTSTRAP"]
    hpas = of_kind("HorizontalPodAutoscaler")
    for name, obj in scaled.items():
        spec = obj["spec"]
        assert spec["scaleTargetRef"]["name"] == name and name in of_kind("Deployment")
        (kafka,) = [t["metadata"] for t in spec["triggers"] if t["type"] == "kafka"]
        assert kafka["consumerGroup"] == groups[name] and kafka["topic"] == GROUP_TOPICS[name].name
        assert kafka["bootstrapServers"] == bootstrap
        assert spec["maxReplicaCount"] <= GROUP_TOPICS[name].partitions
        assert spec["minReplicaCount"] == hpas[name]["spec"]["minReplicas"]
    # ...in place of those services' HPAs, which the component deletes (two on one Deployment fight).
    component = yaml.safe_load((KEDA_LAG_SCALING / "kustomization.yaml").read_text())
    deleted = {yaml.safe_load(p["patch"])["metadata"]["name"] for p in component["patches"]}
    assert deleted == {*scaled, "intake"}


def test_shared_projection_component_gives_intake_a_shared_store_it_can_reach():
    component = yaml.safe_load((K8S / "components" / "shared-projection" / "kustomization.yaml").read_text())
    patches = {p["target"]["kind"]: p for p in component["patches"]}
    assert patches["Deployment"]["target"]["name"] == "intake"
    env = {op["value"]["name"]: op["value"] for op in yaml.safe_load(patches["Deployment"]["patch"])}
    fields = {f"SMSGW_{name.upper()}" for name in settings_class("smsgw_intake").model_fields}
    assert set(env) == {"SMSGW_PROJECTION_SHARED", "SMSGW_PROJECTION_STORE"} <= fields
    assert env["SMSGW_PROJECTION_SHARED"]["value"] == "true"
    # The URL holds a password: from a Secret, never in the manifest.
    assert "secretKeyRef" in env["SMSGW_PROJECTION_STORE"]["valueFrom"]
    # With the NetworkPolicies on, intake may open PostgreSQL's port.
    assert patches["NetworkPolicy"]["target"]["name"] == "intake"
    (rule,) = [op["value"] for op in yaml.safe_load(patches["NetworkPolicy"]["patch"])]
    assert {"protocol": "TCP", "port": 5432} in rule["ports"]
    assert any(
        doc["kind"] == "NetworkPolicy" and doc["metadata"]["name"] == "intake"
        for path, doc in DOCUMENTS
        if path.parent == NETWORK_POLICIES
    )
