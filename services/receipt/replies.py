"""Automatic replies (HELP) go out like any other message: through intake's public API.

The idempotency key is derived from the inbound message, so a redelivered HELP
never produces a second reply.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from smsgw.domain.phone import masked, numbers_masked
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc

from .inbound import InboundOutcome

log = logging.getLogger(__name__)


class IntakeReplySender:
    def __init__(
        self,
        intake_address: str,
        attempts: int = 5,
        api_key: str = "",
        credentials: grpc.ChannelCredentials | None = None,
    ):
        """`credentials`: TLS to intake (smsgw.grpcx.tls.channel_credentials); None: plaintext."""
        self.intake_address = intake_address
        self._api_key = api_key
        self._credentials = credentials
        self.attempts = attempts
        self._channel: grpc.aio.Channel | None = None

    async def __call__(self, outcome: InboundOutcome) -> None:
        if self._channel is None:
            self._channel = (
                grpc.aio.secure_channel(self.intake_address, self._credentials)
                if self._credentials is not None
                else grpc.aio.insecure_channel(self.intake_address)
            )
        stub = api_grpc.MessagingServiceStub(self._channel)
        request = api.SendMessageRequest(
            to=outcome.subscriber, body=outcome.help_reply, idempotency_key=f"help-reply/{outcome.inbound_id}"
        )
        setattr(request, "from", outcome.our_number)
        delay = 0.2
        for attempt in range(1, self.attempts + 1):
            try:
                await stub.SendMessage(request, metadata=self._metadata(outcome.account_id), timeout=10)
                return
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                    # intake's detail names the recipient ("to: +1... replied STOP"): the caller's own data, not the log's.
                    log.warning(
                        "HELP reply to %s refused: %s",
                        masked(outcome.subscriber),
                        numbers_masked(error.details() or ""),
                    )
                    return
                log.warning("HELP reply attempt %d failed: %s", attempt, error.code().name)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        log.error("HELP reply to %s not sent after %d attempts", masked(outcome.subscriber), self.attempts)

    def _metadata(self, account_id: str) -> tuple[tuple[str, str], ...]:
        # receipt's key may act for any account (its scope says so); the header names the one.
        auth = (("authorization", f"Bearer {self._api_key}"),) if self._api_key else ()
        return (*auth, ("x-smsgw-account", account_id))

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
