"""DeviceRelayService: how one carrier-adapter replica sends through a phone another holds.

The server side is thin: it checks the shared secret (and, when the port verifies client
certificates, that the caller presented one), finds the Android carrier, and lets
AndroidCarrierClient.serve_relay() run the attempt on the phone connected here. The
client side (RelayCaller) keeps one channel per replica and tells apart a call that never
left (the replica is unreachable: another phone may take the message) from one whose
outcome is unknown (the phone may have accepted it: it stays with that phone).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
from dataclasses import dataclass

import grpc

from smsgw.grpcx.tls import ClientCertificate, channel_credentials, has_verified_client_certificate
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import device_relay_pb2 as dr
from smsgw.v1 import device_relay_pb2_grpc as dr_grpc
from smsgw.v1 import events_pb2 as ev

from ..carrier import SubmitResult
from .client import AndroidCarrierClient
from .links import RelayAnswer

log = logging.getLogger(__name__)

SERVICE_NAME = dr.DESCRIPTOR.services_by_name["DeviceRelayService"].full_name
SECRET_METADATA = "x-smsgw-relay-secret"
# The called replica answers within the phone's ack + sent timeouts; the call waits this much longer.
DEADLINE_MARGIN = 5.0


def to_response(answer: RelayAnswer) -> dr.SubmitResponse:
    if answer.result is not None and answer.result.accepted:
        return dr.SubmitResponse(sent=dr.RelaySent(carrier_message_ids=list(answer.result.carrier_ids)))
    if answer.result is not None:
        return dr.SubmitResponse(failed=answer.result.failure)
    return dr.SubmitResponse(
        unavailable=dr.RelayUnavailable(
            reason=answer.reason, held=answer.held, radio_down=answer.radio_down, not_connected=answer.not_connected
        )
    )


def from_response(response: dr.SubmitResponse) -> RelayAnswer:
    kind = response.WhichOneof("answer")
    if kind == "sent":
        return RelayAnswer(result=SubmitResult(carrier_ids=tuple(response.sent.carrier_message_ids)))
    if kind == "failed":
        failure = ev.MessageFailed()
        failure.CopyFrom(response.failed)
        return RelayAnswer(result=SubmitResult(failure=failure))
    if kind == "unavailable":
        u = response.unavailable
        return RelayAnswer(reason=u.reason, held=u.held, radio_down=u.radio_down, not_connected=u.not_connected)
    # A newer replica's answer this one does not know: the phone may hold the message.
    return RelayAnswer(reason=f"unknown relay answer {kind!r}", held=True)


# --- the address other replicas call ------------------------------------------------------

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$")
_WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def advertised_address(advertise: str, grpc_host: str, grpc_port: int) -> str:
    """host:port other replicas reach this one at. `advertise` is SMSGW_ADVERTISE_ADDRESS: a
    host, an IP (v4 or v6, e.g. the pod IP) or host:port; without a port, the gRPC port.
    Empty: SMSGW_GRPC_HOST, which must then not be a wildcard. Raises ValueError naming the setting."""
    text = advertise.strip()
    if not text:
        if grpc_host.strip() in _WILDCARDS:
            raise ValueError(
                f"SMSGW_ADVERTISE_ADDRESS is empty and SMSGW_GRPC_HOST is {grpc_host!r}, which other "
                f"replicas cannot call: set SMSGW_ADVERTISE_ADDRESS to this replica's reachable host "
                f"or IP (on Kubernetes the pod IP, fieldRef status.podIP)"
            )
        text = grpc_host.strip()
    host, port = _split_host_port(text)
    return f"{host}:{port or grpc_port}"


def check_advertise_address(value: str) -> str:
    """The setting's own check (the host part; a wildcard grpc_host is checked where the address is used)."""
    text = value.strip()
    if text:
        _split_host_port(text)
    return text


def _split_host_port(text: str) -> tuple[str, int | None]:
    def bad(why: str) -> ValueError:
        return ValueError(
            f"SMSGW_ADVERTISE_ADDRESS {text!r} is not valid ({why}); use a host, an IP, host:port or [ipv6]:port"
        )

    port_text = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise bad("unclosed '['")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise bad("expected ':port' after ']'")
            port_text = rest[1:]
        _check_ip(host, bad)
        host = f"[{host}]"
    elif text.count(":") > 1:  # a bare IPv6 address (a pod IP on an IPv6 cluster)
        _check_ip(text, bad)
        host = f"[{text}]"
    else:
        host, _, port_text = text.partition(":") if ":" in text else (text, "", None)
        if not _HOST.match(host):
            raise bad("the host has characters a host name or IP cannot have")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise bad(f"port {port_text!r} is not 1-65535")
    return host, int(port_text)


def _check_ip(text: str, bad) -> None:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        raise bad("not an IPv6 address") from None


# --- the server side --------------------------------------------------------------------


class DeviceRelayServicer(dr_grpc.DeviceRelayServiceServicer):
    """Thin: authenticates the caller, then runs the attempt on the phone connected here.

    With `require_client_certificate` (the port verifies client certificates) a caller must also
    have presented a certificate the port verified: the port serves phones, which have none, so
    the handshake lets clients without one through and this is where a relay call is refused."""

    def __init__(
        self, clients: dict[str, AndroidCarrierClient], secret: str = "", *, require_client_certificate: bool = False
    ):
        self.clients = clients
        self.secret = secret.encode()
        self.require_client_certificate = require_client_certificate

    async def Submit(self, request: dr.SubmitRequest, context: grpc.aio.ServicerContext) -> dr.SubmitResponse:
        if self.require_client_certificate and not has_verified_client_certificate(context):
            log.warning("refused a relay call from %s: no client certificate", context.peer())
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "relay calls must present a client certificate signed by SMSGW_GRPC_TLS_CLIENT_CA_FILE "
                "(SMSGW_GRPC_CLIENT_CERT_FILE on the calling replica)",
            )
        if self.secret:
            given = dict(context.invocation_metadata() or ()).get(SECRET_METADATA, "")
            if not hmac.compare_digest(given.encode(), self.secret):
                log.warning(
                    "refused a relay call from %s: %s",
                    context.peer(),
                    "no relay secret" if not given else "wrong relay secret",
                )
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"relay calls must carry the shared secret (SMSGW_RELAY_SECRET) in metadata {SECRET_METADATA}",
                )
        client = self.clients.get(request.command.carrier)
        if client is None:
            return to_response(
                RelayAnswer(
                    reason=f"no Android carrier {request.command.carrier!r} on this replica", not_connected=True
                )
            )
        answer = await client.serve_relay(request.command, request.device_id, caller=request.caller_replica_id)
        return to_response(answer)


def add_device_relay(
    server: grpc.aio.Server,
    clients: dict[str, AndroidCarrierClient],
    secret: str = "",
    *,
    require_client_certificate: bool = False,
) -> DeviceRelayServicer:
    """Registers smsgw.v1.DeviceRelayService on the carrier-adapter's gRPC server (before it starts)."""
    servicer = DeviceRelayServicer(clients, secret, require_client_certificate=require_client_certificate)
    dr_grpc.add_DeviceRelayServiceServicer_to_server(servicer, server)
    return servicer


# --- the client side --------------------------------------------------------------------


@dataclass(frozen=True)
class RelayTls:
    """How a replica reaches the others when their port speaks TLS: the CA their certificates
    chain to and, as replicas are called by pod IP, the name their certificate is checked
    against (a name every replica's certificate carries, e.g. the Service's DNS name), and the
    client certificate this replica presents when the others verify them (mutual TLS)."""

    root_certificates: bytes
    server_name: str = ""
    client: ClientCertificate | None = None

    def channel(self, address: str) -> grpc.aio.Channel:
        options = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return grpc.aio.secure_channel(
            address, channel_credentials(self.root_certificates, self.client), options=options
        )


class RelayCaller:
    """Calls DeviceRelayService on other replicas, one channel per replica address. A channel that
    cannot connect is replaced for the next call and closed once no call uses it."""

    def __init__(self, replica_id: str, secret: str = "", connect_timeout: float = 2.0, tls: RelayTls | None = None):
        self.replica_id = replica_id
        self._metadata = ((SECRET_METADATA, secret),) if secret else ()
        self.connect_timeout = connect_timeout
        self.tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._users: dict[grpc.aio.Channel, int] = {}

    async def submit(
        self, address: str, command: cp.DispatchCommand, device_id: str, session_id: str, timeout: float
    ) -> RelayAnswer:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = (
                grpc.aio.insecure_channel(address) if self.tls is None else self.tls.channel(address)
            )
        self._users[channel] = self._users.get(channel, 0) + 1
        try:
            return await self._submit(channel, address, command, device_id, session_id, timeout)
        finally:
            self._users[channel] -= 1
            if not self._users[channel] and self._channels.get(address) is not channel:
                del self._users[channel]
                await channel.close()

    async def _submit(
        self,
        channel: grpc.aio.Channel,
        address: str,
        command: cp.DispatchCommand,
        device_id: str,
        session_id: str,
        timeout: float,
    ) -> RelayAnswer:
        try:
            await asyncio.wait_for(channel.channel_ready(), self.connect_timeout)
        except Exception as exc:  # noqa: BLE001 - nothing sent yet: any failure means not reachable
            # Nothing was sent: the replica is gone or not reachable from here.
            if self._channels.get(address) is channel:
                del self._channels[address]
            return RelayAnswer(reason=f"replica {address} unreachable ({type(exc).__name__})", unreachable=True)
        request = dr.SubmitRequest(
            command=command, device_id=device_id, session_id=session_id, caller_replica_id=self.replica_id
        )
        try:
            response = await dr_grpc.DeviceRelayServiceStub(channel).Submit(
                request, timeout=timeout + DEADLINE_MARGIN, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # a replica of an older version: nothing ran
                return RelayAnswer(reason=f"replica {address} does not serve the relay", unreachable=True)
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                log.error(
                    "replica %s refused our relay call: %s (every replica needs the same SMSGW_RELAY_SECRET and, "
                    "with mutual TLS, a client certificate)",
                    address,
                    exc.details(),
                )
                return RelayAnswer(reason=f"replica {address} refused the relay: {exc.details()}", unreachable=True)
            # The request may have reached the phone: in doubt, the message stays with that phone.
            return RelayAnswer(
                reason=f"relay to {address} failed after it was sent ({exc.code().name}: "
                f"{exc.details()}); the phone may hold it",
                held=True,
            )
        except Exception as exc:  # noqa: BLE001 - whatever else broke the call once sent: in doubt too
            log.warning("relay call to %s failed: %r", address, exc)
            return RelayAnswer(
                reason=f"relay to {address} failed after it was sent ({exc!r}); the phone may hold it", held=True
            )
        return from_response(response)

    async def close(self) -> None:
        channels = set(self._channels.values()) | set(self._users)
        self._channels, self._users = {}, {}
        for channel in channels:
            await channel.close()
