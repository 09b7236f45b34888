"""Mutual TLS as smsgw.grpcx serves it, in this process over loopback with a throwaway PKI: why a
port that verifies client certificates must require them (gRPC Python does not ask for one
otherwise), a second port that serves services only beside a main port that serves everyone,
and a main port that requires certificates. The services' own use is in test_tls.py (intake,
receipt) and test_device_replicas.py (the relay)."""

from __future__ import annotations

import grpc
import pytest

from smsgw.grpcx.server import ServiceServer
from smsgw.grpcx.tls import ClientCertificate, TlsFiles, channel_credentials, has_verified_client_certificate
from smsgw_dev.devpki import ThrowawayPki, make_pki

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WHOAMI = "/smsgw.test.Whoami/Who"


async def _who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """The caller's verified identity (its certificate's common name), or b"-" without one."""
    if not has_verified_client_certificate(context):
        return b"-"
    return b",".join(context.peer_identities() or ())


def _whoami(server: grpc.aio.Server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(_who)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("smsgw.test.Whoami", {"Who": handler}),))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> ThrowawayPki:
    return make_pki(tmp_path_factory.mktemp("mtls-pki"))


def clients(pki: ThrowawayPki) -> dict[str, ClientCertificate | None]:
    return {
        "none": None,
        "ours": ClientCertificate(pki.client_cert, pki.client_key),
        "outsider": ClientCertificate(pki.other_client_cert, pki.other_client_key),
    }


async def ask(port: int, pki: ThrowawayPki, client: ClientCertificate | None) -> bytes | grpc.StatusCode:
    """What the Whoami call answers, or the status it failed with."""
    credentials = channel_credentials(pki.ca.read_bytes(), client)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        try:
            return await channel.unary_unary(WHOAMI)(b"", timeout=5)
        except grpc.aio.AioRpcError as error:
            return error.code()


async def serving(tls: TlsFiles, mtls_port: int | None = None) -> ServiceServer:
    server = ServiceServer(host="127.0.0.1", port=0, service_names=[], tls=tls, mtls_port=mtls_port)
    server.add(_whoami)
    await server.start()
    return server


async def test_without_requiring_them_grpc_asks_for_no_client_certificate_so_any_passes(pki):
    """Why a CA alone is refused at start: require_client_auth=False does not verify a certificate
    when presented, it never asks for one; an outsider's certificate gets through unnoticed."""
    server = await serving(TlsFiles(pki.server_cert, pki.server_key, client_ca=pki.ca, require_client_cert=False))
    try:
        answers = {name: await ask(server.port, pki, client) for name, client in clients(pki).items()}
    finally:
        await server.stop(0)
    assert answers == {"none": b"-", "ours": b"-", "outsider": b"-"}


async def test_an_mtls_port_serves_clients_with_our_certificate_only_and_the_main_port_everyone(pki):
    server = await serving(TlsFiles(pki.server_cert, pki.server_key, client_ca=pki.ca), mtls_port=0)
    try:
        assert server.mtls_port is not None
        main = {name: await ask(server.port, pki, client) for name, client in clients(pki).items()}
        mtls = {name: await ask(server.mtls_port, pki, client) for name, client in clients(pki).items()}
    finally:
        await server.stop(0)
    # Phones and API clients have no certificate: on the main port nobody has an identity.
    assert main == {"none": b"-", "ours": b"-", "outsider": b"-"}
    assert mtls == {
        "none": grpc.StatusCode.UNAVAILABLE,
        "ours": b"smsgw-client",
        "outsider": grpc.StatusCode.UNAVAILABLE,
    }


async def test_a_main_port_that_requires_client_certificates_refuses_clients_without_ours(pki):
    server = await serving(TlsFiles(pki.server_cert, pki.server_key, client_ca=pki.ca, require_client_cert=True))
    try:
        answers = {name: await ask(server.port, pki, client) for name, client in clients(pki).items()}
    finally:
        await server.stop(0)
    assert answers == {
        "none": grpc.StatusCode.UNAVAILABLE,
        "ours": b"smsgw-client",
        "outsider": grpc.StatusCode.UNAVAILABLE,
    }


async def test_an_mtls_port_needs_a_client_ca(pki):
    # async: ServiceServer makes a grpc.aio server, which needs a running loop whatever ran before.
    with pytest.raises(ValueError, match="client CA"):
        TlsFiles(pki.server_cert, pki.server_key).requiring_client_certificates()
    with pytest.raises(ValueError, match="needs TLS"):
        ServiceServer(host="127.0.0.1", port=0, service_names=[], mtls_port=0)
