"""Cross-checks with code we did not write, and the simulator's CLI.

smpplib (third-party, synchronous) binds to our simulator; if our codec and
the simulator only agreed with each other, this is where it would show. It
runs in a worker thread so the simulator keeps serving on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import smpplib.client
import smpplib.consts
import smpplib.gsm

from smsgw.domain.encoding import decode_ucs2, parse_concat_udh
from smsgw.smpp.client import SmppClient
from smsgw.smpp.receipts import normalize_message_id, parse_receipt_text
from smsgw_dev.simulators.smsc import SmscSimulator

pytestmark = pytest.mark.timeout(60)


@dataclass
class SmpplibRun:
    message_ids: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    receipts: list[Any] = field(default_factory=list)
    mo: list[Any] = field(default_factory=list)


def smpplib_session(port: int, parts: list[dict[str, Any]], want_receipts: int, want_mo: int = 0) -> SmpplibRun:
    """Bind with smpplib, send the given submit_sm PDUs, read until all resps/receipts arrive (bounded)."""
    run = SmpplibRun()
    # Strict: a TLV smpplib does not know would raise, which is what a cross-check wants.
    client = smpplib.client.Client("127.0.0.1", port, timeout=1, allow_unknown_opt_params=False)

    def sent(pdu: Any) -> None:
        run.statuses.append(pdu.status)
        run.message_ids.append(pdu.message_id.decode() if isinstance(pdu.message_id, bytes) else pdu.message_id)

    def received(pdu: Any) -> None:
        (run.receipts if pdu.esm_class & 0x04 else run.mo).append(pdu)

    client.set_message_sent_handler(sent)
    client.set_message_received_handler(received)
    client.connect()
    try:
        client.bind_transceiver(system_id="smsgw", password="secret")
        for part in parts:
            client.send_message(**part)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (
            len(run.statuses) < len(parts) or len(run.receipts) < want_receipts or len(run.mo) < want_mo
        ):
            client.read_once()
        client.unbind()
    finally:
        client.disconnect()
    return run


async def test_smpplib_submits_and_gets_a_receipt() -> None:
    simulator = SmscSimulator(dlr_delay=0.05)
    await simulator.start()
    try:
        part = dict(
            source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
            source_addr="SMSGW",
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
            destination_addr="447700900123",
            short_message=b"hello from smpplib",
            registered_delivery=1,
        )
        run = await asyncio.to_thread(smpplib_session, simulator.port, [part], want_receipts=1)
    finally:
        await simulator.stop()
    assert run.statuses == [0]
    assert run.message_ids == [simulator.submitted[0].message_id]
    [receipt] = run.receipts
    parsed = parse_receipt_text(receipt.short_message.decode("ascii"))
    assert parsed is not None and parsed.stat == "DELIVRD"
    assert normalize_message_id(parsed.message_id) == normalize_message_id(run.message_ids[0])
    sent = simulator.submitted[0]
    assert (sent.destination, sent.source, sent.short_message) == ("447700900123", "SMSGW", b"hello from smpplib")


async def test_smpplib_multipart_ucs2_with_hex_ids_and_tlv_receipts() -> None:
    text = "Grüße aus dem Test 👋 " * 4
    parts_text, encoding_flag, msg_type_flag = smpplib.gsm.make_parts(text)
    assert encoding_flag == smpplib.consts.SMPP_ENCODING_ISO10646 and len(parts_text) >= 2
    simulator = SmscSimulator(dlr_delay=0.05, hex_ids=True, dlr_format="both")
    await simulator.start()
    try:
        parts = [
            dict(
                source_addr="SMSGW",
                destination_addr="447700900123",
                short_message=part,
                data_coding=encoding_flag,
                esm_class=msg_type_flag,
                registered_delivery=1,
            )
            for part in parts_text
        ]
        run = await asyncio.to_thread(smpplib_session, simulator.port, parts, want_receipts=len(parts))
    finally:
        await simulator.stop()
    assert run.statuses == [0] * len(parts)
    assert run.message_ids == [s.message_id for s in simulator.submitted]
    # smpplib's UDH, parsed by our encoding module, gives back the text.
    decoded = [parse_concat_udh(s.short_message) for s in simulator.submitted]
    assert all(d is not None for d in decoded)
    assert decode_ucs2(b"".join(d[3] for d in sorted(decoded, key=lambda d: d[2]))) == text  # type: ignore[index]
    # Receipts: TLV id is the hex resp id verbatim; the text id is decimal and normalises to it.
    for receipt in run.receipts:
        tlv_id = receipt.receipted_message_id
        tlv_id = tlv_id.decode() if isinstance(tlv_id, bytes) else tlv_id
        assert tlv_id in run.message_ids
        parsed = parse_receipt_text(receipt.short_message.decode("ascii"))
        assert parsed is not None and normalize_message_id(parsed.message_id) == normalize_message_id(tlv_id)


async def test_smpplib_receives_mo() -> None:
    simulator = SmscSimulator()
    await simulator.start()
    try:
        task = asyncio.create_task(asyncio.to_thread(smpplib_session, simulator.port, [], want_receipts=0, want_mo=1))
        for _ in range(500):  # bounded wait for smpplib's bind
            if simulator.bound_count:
                break
            await asyncio.sleep(0.01)
        await simulator.send_mo(source="447700900123", destination="12345", text="STOP")
        run = await asyncio.wait_for(task, 20)
    finally:
        await simulator.stop()
    [mo] = run.mo
    assert mo.short_message == b"STOP" and mo.source_addr == b"447700900123"


async def test_cli_prints_ready_line_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smsgw_dev.simulators.smsc",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--dlr-delay",
        "0.05",
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        prefix = "SMSC simulator listening on 127.0.0.1:"
        assert line.startswith(prefix), line
        port = int(line[len(prefix) :])
        received: asyncio.Queue[Any] = asyncio.Queue()

        async def on_deliver(inbound: Any) -> None:
            await received.put(inbound)

        client = SmppClient(host="127.0.0.1", port=port, system_id="smsgw", password="secret", on_deliver=on_deliver)
        await asyncio.wait_for(client.start(), 5)
        try:
            outcome = await client.submit(source="SMSGW", destination="447700900123", text="via the CLI")
            assert outcome.ok
            receipt = await asyncio.wait_for(received.get(), 5)
            assert receipt.message_id_key == normalize_message_id(outcome.message_ids[0])
        finally:
            await client.close()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
