"""The carrier-adapter's SMPP carrier against the simulator: config plumbing and per-carrier id radix.

The adapter keys receipts by ``normalize_message_id``. A carrier whose hex ids
happen to be made only of digits ("10000001") is read as decimal by
auto-detection; ``receipt_id_radix`` / ``submit_id_radix`` on the carrier make
every submit id meet its receipt again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from smsgw.smpp import constants as c
from smsgw.v1 import carrier_pb2 as cp
from smsgw_carrier_adapter.smpp.client import SmppCarrierClient
from smsgw_carrier_adapter.smpp.config import SmppCarrier
from smsgw_dev.simulators.smsc import SmscSimulator

pytestmark = pytest.mark.timeout(60)


class Reports:
    """The two CarrierReports calls an SMPP carrier makes, collected."""

    def __init__(self) -> None:
        self.receipts: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.inbound: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_receipt(
        self, carrier: str, carrier_message_id: str, state: int, carrier_state: str = "", error: str = ""
    ) -> None:
        await self.receipts.put((carrier_message_id, carrier_state))

    async def on_inbound(
        self,
        carrier: str,
        source: str,
        destination: str,
        text: str,
        parts: int = 1,
        *,
        concat_reference: int = 0,
        part_number: int = 0,
        total_parts: int = 0,
        media_urls: Sequence[str] = (),
    ) -> None:
        await self.inbound.put(
            {
                "source": source,
                "destination": destination,
                "text": text,
                "reference": concat_reference,
                "part": part_number,
                "total": total_parts,
            }
        )


@asynccontextmanager
async def carrier_against(
    sim_kwargs: dict[str, Any], **config: Any
) -> AsyncIterator[tuple[SmscSimulator, SmppCarrierClient, Reports]]:
    simulator = SmscSimulator(**{"dlr_delay": 0.02, **sim_kwargs})
    await simulator.start()
    reports = Reports()
    carrier = SmppCarrierClient(
        SmppCarrier(name="sim", port=simulator.port, system_id="smsgw", password="secret", **config),
        reports,
    )
    try:
        await carrier.start(wait=5)
        yield simulator, carrier, reports
    finally:
        await carrier.close()
        await simulator.stop()


def dispatch(text: str, to: str = "+447700900123") -> cp.DispatchCommand:
    command = cp.DispatchCommand(to=to)
    command.content.text = text
    setattr(command, "from", "SMSGW")
    return command


async def receipt_keys(reports: Reports, count: int) -> set[str]:
    return {(await asyncio.wait_for(reports.receipts.get(), 5))[0] for _ in range(count)}


@pytest.mark.parametrize(
    ("dlr_format", "radix"),
    [
        # Receipt text in decimal ("0268435457"), submit_sm_resp in hex ("10000001").
        ("text", {"submit_id_radix": 16, "receipt_id_radix": 10}),
        # receipted_message_id TLV repeats the hex id.
        ("tlv", {"receipt_id_radix": 16}),
        # Both forms; the TLV wins.
        ("both", {"receipt_id_radix": 16}),
    ],
)
async def test_digit_only_hex_ids_match_their_receipts_with_the_radix_set(dlr_format: str, radix: dict) -> None:
    sim = {"hex_ids": True, "hex_digits_only": True, "dlr_format": dlr_format}
    async with carrier_against(sim, **radix) as (simulator, carrier, reports):
        results = [await carrier.submit(dispatch(f"message {n}")) for n in range(20)]
        assert all(r.accepted for r in results)
        assert all(s.message_id.isdigit() for s in simulator.submitted)  # hex, but no letter in it
        submitted_keys = {key for r in results for key in r.carrier_ids}
        assert len(submitted_keys) == 20
        assert await receipt_keys(reports, 20) == submitted_keys  # 100 %


async def test_without_the_radix_digit_only_hex_ids_are_orphaned() -> None:
    sim = {"hex_ids": True, "hex_digits_only": True, "dlr_format": "text"}
    async with carrier_against(sim) as (_simulator, carrier, reports):
        results = [await carrier.submit(dispatch(f"message {n}")) for n in range(5)]
        submitted_keys = {key for r in results for key in r.carrier_ids}
        assert not submitted_keys & await receipt_keys(reports, 5)


async def test_config_reaches_the_client_pair_sar_and_tps() -> None:
    config = {"bind_mode": "pair", "long_message": "sar", "max_tps": 20.0}
    async with carrier_against({}, **config) as (simulator, carrier, reports):
        assert simulator.binds == [("smsgw", "receiver"), ("smsgw", "transmitter")]
        result = await carrier.submit(dispatch("s" * 400))
        assert result.accepted and len(result.carrier_ids) == 3
        assert [s.long_message for s in simulator.submitted] == ["sar"] * 3
        assert all(c.TAG_SAR_MSG_REF_NUM in s.tlvs for s in simulator.submitted)
        assert await receipt_keys(reports, 3) == set(result.carrier_ids)
        stats = carrier.client.stats()
        assert stats.bound == {"transmitter": True, "receiver": True} and stats.submits_total == 3


async def test_payload_carrier_reports_one_id_for_a_long_message() -> None:
    async with carrier_against({}, long_message="payload") as (simulator, carrier, reports):
        result = await carrier.submit(dispatch("p" * 400))
        assert result.accepted and len(result.carrier_ids) == 1
        [sent] = simulator.submitted
        assert sent.long_message == "payload" and len(sent.user_data) == 400
        assert await receipt_keys(reports, 1) == set(result.carrier_ids)


def test_carrier_config_validates_the_new_fields() -> None:
    base = {"name": "x", "system_id": "smsgw", "password": "secret"}
    defaults = SmppCarrier(**base)
    assert (defaults.bind_mode, defaults.long_message, defaults.max_tps) == ("transceiver", "udh", None)
    assert (defaults.receipt_id_radix, defaults.submit_id_radix) == (None, None)
    for bad in (
        {"bind_mode": "receiver"},
        {"long_message": "binary"},
        {"max_tps": 0},
        {"receipt_id_radix": 8},
        {"submit_id_radix": 2},
    ):
        with pytest.raises(ValueError):
            SmppCarrier(**base, **bad)


@pytest.mark.parametrize("long_message", ["udh", "udh16", "sar"])
async def test_each_part_of_a_long_mo_is_reported_with_where_it_belongs(long_message: str) -> None:
    text = "".join(f"{n:03d} word " for n in range(40))  # 3 parts
    async with carrier_against({}) as (simulator, _carrier, reports):
        await simulator.send_mo(
            source="447700900123", destination="+14155550000", text=text, long_message=long_message, parts=[2, 3, 1]
        )
        parts = [await asyncio.wait_for(reports.inbound.get(), 5) for _ in range(3)]
        assert [(p["part"], p["total"]) for p in parts] == [(2, 3), (3, 3), (1, 3)]
        assert len({p["reference"] for p in parts}) == 1
        assert {(p["source"], p["destination"]) for p in parts} == {("+447700900123", "+14155550000")}
        assert "".join(p["text"] for p in sorted(parts, key=lambda p: p["part"])) == text


async def test_a_short_or_payload_mo_is_reported_whole() -> None:
    async with carrier_against({}) as (simulator, _carrier, reports):
        await simulator.send_mo(source="447700900123", destination="12345", text="hi")
        await simulator.send_mo(source="447700900123", destination="12345", text="p" * 400, long_message="payload")
        # Two deliver_sm in flight at once: their reports may come in either order.
        short, payload = sorted(
            [await asyncio.wait_for(reports.inbound.get(), 5) for _ in range(2)], key=lambda report: len(report["text"])
        )
        assert (short["text"], short["total"], short["part"]) == ("hi", 0, 0)
        assert (payload["text"], payload["total"]) == ("p" * 400, 0)
