"""Optional: Kafka in Docker via testcontainers. Never required; used only when a Docker engine answers."""

from __future__ import annotations

from ._base import BrokerStartError, RunningBroker, _wait_ready

__all__ = ["DockerUnavailable", "docker_available", "start_testcontainers_kafka"]

# Confluent Platform 7.9 ships Apache Kafka 3.9, the same line as the jar-based launcher.
DEFAULT_IMAGE = "confluentinc/cp-kafka:7.9.0"


class DockerUnavailable(BrokerStartError):
    """No Docker engine (or no docker/testcontainers package) to run a Kafka container."""


def _ping_docker() -> None:
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise DockerUnavailable("the `docker` package is not installed (pip install -e '.[test]')") from exc
    try:
        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # docker.errors.DockerException, connection errors, ...
        raise DockerUnavailable(
            f"no Docker engine answered ({type(exc).__name__}: {exc}); "
            "use start_tansu() or start_apache_kafka() instead"
        ) from exc


def docker_available() -> bool:
    try:
        _ping_docker()
        return True
    except DockerUnavailable:
        return False


def start_testcontainers_kafka(*, image: str = DEFAULT_IMAGE, timeout: float = 120.0) -> RunningBroker:
    """Start a KRaft Kafka container with testcontainers; raise DockerUnavailable without Docker."""
    _ping_docker()
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError as exc:  # pragma: no cover
        raise DockerUnavailable("testcontainers is not installed (pip install -e '.[test]')") from exc

    container = KafkaContainer(image=image).with_kraft()
    try:
        container.start(timeout=int(timeout))
        bootstrap = container.get_bootstrap_server().replace("localhost", "127.0.0.1")
        _wait_ready(bootstrap, timeout)
    except BaseException:  # noqa: BLE001 - stop the container whatever ended the start, then re-raise
        try:
            container.stop()
        finally:
            raise
    return RunningBroker(
        kind="kafka",
        bootstrap=bootstrap,
        supports_idempotence=True,
        _stop_hook=container.stop,
    )
