"""An SMPP carrier behind the CarrierClient interface the dispatcher uses."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC

from smsgw.lanes import lane_of
from smsgw.smpp.client import InboundDeliver, SmppClient, SmppRefusedForNow, SmppTimeout, SmppUnavailable
from smsgw.smpp.receipts import normalize_message_id
from smsgw.v1 import carrier_pb2 as cp

from ..carrier import CarrierReports, CarrierUnavailable, SubmitProgress, SubmitResult
from ..carrier_metrics import CarrierMetrics
from .config import SmppCarrier
from .outcomes import delivery_state_of, submit_failure

log = logging.getLogger(__name__)


class SmppCarrierClient:
    def __init__(self, config: SmppCarrier, reports: CarrierReports):
        self.name = config.name
        self.in_doubt_policy = config.in_doubt
        self.concurrency = config.window
        self._reports = reports
        self._receipt_radix = config.receipt_id_radix
        self._submit_radix = config.submit_id_radix if config.submit_id_radix is not None else config.receipt_id_radix
        self.client = SmppClient(
            host=config.host,
            port=config.port,
            system_id=config.system_id,
            password=config.password,
            system_type=config.system_type,
            window=config.window,
            enquire_link_interval=config.enquire_link_interval,
            response_timeout=config.response_timeout,
            on_deliver=self._deliver,
            bind_mode=config.bind_mode,
            max_tps=config.max_tps,
            long_message=config.long_message,
            tls=config.tls_context(),
        )

    def submit_id_key(self, message_id: str) -> str:
        """A submit_sm_resp id as the key receipts are matched on (the carrier's radix applied)."""
        return normalize_message_id(message_id, radix=self._submit_radix)

    def receipt_id_key(self, message_id: str) -> str:
        """A receipt's id as the same key."""
        return normalize_message_id(message_id, radix=self._receipt_radix)

    def share_rate(self, share: float) -> None:
        self.client.share_rate(share)

    def holds_part_of(self, message_id: str) -> bool:
        return self.client.holds_part_of(message_id)

    @property
    def connected(self) -> bool:
        """Every bind up (the transceiver, or both of a pair); the client rebinds by itself."""
        return self.client.bound

    async def start(self, wait: float = 5.0) -> None:
        """Binds; if the SMSC is not there yet, keeps trying in the background (submits wait meanwhile)."""
        try:
            await asyncio.wait_for(self.client.start(), wait)
        except TimeoutError:
            log.warning("carrier %s not bound after %.0fs; still trying in the background", self.name, wait)

    async def close(self) -> None:
        await self.client.close()

    async def submit(self, command: cp.DispatchCommand, progress: SubmitProgress | None = None) -> SubmitResult:
        """Carrier ids are returned normalised (hex/decimal/leading zeros/case), as receipts are.
        A long message resumes after the parts `progress` says were taken, and records each part
        taken before the next goes out."""
        try:
            outcome = await self.client.submit(
                source=getattr(command, "from"),
                destination=command.to,
                text=command.content.text,
                key=command.message_id,
                expires_at=command.expires_at.ToDatetime(tzinfo=UTC) if command.HasField("expires_at") else None,
                lane=lane_of(command.priority),
                resume=progress.resume if progress else None,
                on_parts_accepted=progress.parts_accepted if progress else None,
            )
        except SmppRefusedForNow as exc:
            # A fault of the moment at the SMSC (it answered: not in doubt): tried again later.
            raise CarrierUnavailable(f"{self.name}: {exc}", reason="SMSC_TEMPORARY_ERROR") from exc
        except SmppTimeout as exc:
            raise CarrierUnavailable(f"{self.name}: {exc}", reason="RESPONSE_TIMEOUT", in_doubt=exc.in_doubt) from exc
        except SmppUnavailable as exc:
            raise CarrierUnavailable(
                f"{self.name}: {exc}",
                reason="CONNECTION_LOST" if exc.in_doubt else "NOT_CONNECTED",
                in_doubt=exc.in_doubt,
            ) from exc
        if outcome.ok:
            return SubmitResult(carrier_ids=tuple(self.submit_id_key(i) for i in outcome.message_ids))
        return SubmitResult(failure=submit_failure(self.name, outcome.command_status))

    def metrics(self) -> CarrierMetrics:
        """The SMPP client's own stats, as every carrier kind reports them."""
        stats = self.client.stats()
        return CarrierMetrics(
            kind="smpp",
            sessions=dict(stats.bound),
            current_tps=stats.current_tps,
            in_flight=stats.window_in_use,
            submits=stats.submits_total,
            submit_failures=stats.submit_failures_total,
            throttled=stats.throttled_total,
            reconnects=stats.reconnects_total,
            receipts=stats.receipts_total,
            inbound=stats.mo_total,
            extra_gauges={"window_in_use": stats.window_in_use, "window_size": stats.window_size},
        )

    async def _deliver(self, deliver: InboundDeliver) -> None:
        if deliver.is_receipt:
            if deliver.receipted_message_id:
                await self._reports.on_receipt(
                    self.name,
                    self.receipt_id_key(deliver.receipted_message_id),
                    delivery_state_of(deliver.state),
                    deliver.state or "",
                    deliver.error_code or "",
                )
            else:
                # Which fields came, not their values: a receipt's text often quotes the message's body.
                log.warning(
                    "receipt without a message id on %s (fields: %s); it cannot be matched to a message",
                    self.name,
                    ", ".join(sorted(deliver.raw or {})),
                )
        else:
            raw = deliver.raw or {}
            concat = deliver.concat
            await self._reports.on_inbound(
                self.name,
                smpp_to_e164(deliver.source, raw.get("source_addr_ton", 0)),
                smpp_to_e164(deliver.destination, raw.get("dest_addr_ton", 0)),
                deliver.text or "",
                concat_reference=concat.reference if concat else 0,
                part_number=concat.sequence if concat else 0,
                total_parts=concat.total if concat else 0,
            )


def smpp_to_e164(address: str, ton: int) -> str:
    """SMPP addresses carry no '+': international (TON 1) and long numbers are E.164 with it."""
    if address.startswith("+") or not address.isdigit():
        return address
    return f"+{address}" if ton == 1 or len(address) > 8 else address
