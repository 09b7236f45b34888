"""An SMPP carrier behind the CarrierClient interface the dispatcher uses."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from smsgw.smpp.client import InboundDeliver, SmppClient, SmppTimeout, SmppUnavailable
from smsgw.v1 import carrier_pb2 as cp

from .carriers import SmppCarrier
from .dispatcher import CarrierUnavailable

log = logging.getLogger(__name__)

ReceiptHandler = Callable[[str, str, str | None, str | None], Awaitable[None]]


class SmppCarrierClient:
    def __init__(self, config: SmppCarrier, on_receipt: ReceiptHandler):
        self.name = config.name
        self._on_receipt = on_receipt
        self.client = SmppClient(
            host=config.host, port=config.port, system_id=config.system_id, password=config.password,
            system_type=config.system_type, window=config.window,
            enquire_link_interval=config.enquire_link_interval, response_timeout=config.response_timeout,
            on_deliver=self._deliver,
        )

    async def start(self, wait: float = 5.0) -> None:
        """Binds; if the SMSC is not there yet, keeps trying in the background (submits wait meanwhile)."""
        try:
            await asyncio.wait_for(self.client.start(), wait)
        except asyncio.TimeoutError:
            log.warning("carrier %s not bound after %.0fs; still trying in the background", self.name, wait)

    async def close(self) -> None:
        await self.client.close()

    async def submit(self, command: cp.DispatchCommand) -> tuple[bool, list[str], int]:
        try:
            outcome = await self.client.submit(
                source=getattr(command, "from"), destination=command.to, text=command.content.text,
            )
        except (SmppUnavailable, SmppTimeout) as exc:
            raise CarrierUnavailable(f"{self.name}: {exc!r}") from exc
        return outcome.ok, list(outcome.message_ids), outcome.command_status

    async def _deliver(self, deliver: InboundDeliver) -> None:
        if deliver.is_receipt and deliver.receipted_message_id:
            await self._on_receipt(self.name, deliver.receipted_message_id, deliver.state, deliver.error_code)
        else:
            # Inbound (MO) messages become InboundMessageReceived events with the receipt service (issue 4).
            log.info("inbound message from %s to %s on %s (not yet published)", deliver.source,
                     deliver.destination, self.name)
