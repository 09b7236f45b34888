"""SMPP over TLS: our client and the carrier config against the simulator's TLS listener.

A throwaway CA signs the simulator's certificate (localhost, 127.0.0.1) and a
client certificate; another CA trusts neither. Real TLS over real TCP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from smsgw.smpp.client import SmppClient, SmppTlsError
from smsgw.smpp.receipts import normalize_message_id
from smsgw.smpp.tls import TlsConfigError, client_context
from smsgw_carrier_adapter.carriers import CarrierConfigError, load_carriers
from smsgw_carrier_adapter.smpp.client import SmppCarrierClient
from smsgw_carrier_adapter.smpp.config import SmppCarrier
from smsgw_dev.devpki import ThrowawayPki, make_pki
from smsgw_dev.simulators.smsc import SmscSimulator
from tests.integration.test_smpp_carrier_adapter import Reports, dispatch
from tests.integration.test_smpp_client_simulator import Inbox

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> ThrowawayPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@asynccontextmanager
async def tls_smsc(pki: ThrowawayPki, **kwargs: Any) -> AsyncIterator[SmscSimulator]:
    simulator = SmscSimulator(
        dlr_delay=0.05, tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key), **kwargs
    )
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def client(
    simulator: SmscSimulator,
    inbox: Inbox | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    **tls: Any,
) -> SmppClient:
    return SmppClient(
        host=host,
        port=port or simulator.tls_port or 0,
        system_id="smsgw",
        password="secret",
        on_deliver=inbox,
        response_timeout=5.0,
        reconnect_min=0.05,
        reconnect_max=0.2,
        tls=client_context(**tls),
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_bind_submit_and_receipt_over_tls(pki: ThrowawayPki, host: str) -> None:
    async with tls_smsc(pki) as simulator:
        inbox = Inbox()
        esme = client(simulator, inbox, host=host, ca_file=str(pki.ca))
        try:
            await asyncio.wait_for(esme.start(), 5)
            assert simulator.binds == [("smsgw", "transceiver")]
            outcome = await esme.submit(source="SMSGW", destination="447700900123", text="over TLS")
            assert outcome.ok and simulator.submitted[0].user_data == b"over TLS"
            receipt = await inbox.get()
            assert receipt.is_receipt and receipt.message_id_key == normalize_message_id(outcome.message_ids[0])
            await simulator.send_mo(source="447700900123", destination="12345", text="hi back")
            assert (await inbox.get()).text == "hi back"
        finally:
            await esme.close()


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        # The SMSC's certificate was signed by a CA we were not told to trust.
        (
            {"ca_file": "other_ca"},
            r"certificate is not trusted \(unable to get local issuer certificate\); "
            r"check tls_ca_file",
        ),
        # The system CAs (no tls_ca_file) do not know our throwaway CA either.
        ({}, r"certificate is not trusted"),
    ],
)
async def test_an_untrusted_smsc_certificate_fails_the_first_bind_clearly(
    pki: ThrowawayPki, tls: dict, expected: str
) -> None:
    async with tls_smsc(pki) as simulator:
        options: dict[str, Any] = {k: str(getattr(pki, v)) for k, v in tls.items()}
        esme = client(simulator, **options)
        try:
            with pytest.raises(SmppTlsError, match=expected) as failure:
                await asyncio.wait_for(esme.start(), 5)
            assert f"127.0.0.1:{simulator.tls_port}" in str(failure.value)
            assert not esme.bound and simulator.binds == []
        finally:
            await esme.close()


async def test_a_host_the_certificate_does_not_hold_fails(pki: ThrowawayPki) -> None:
    async with tls_smsc(pki) as simulator:
        esme = SmppClient(
            host="127.0.0.1",
            port=simulator.tls_port or 0,
            system_id="smsgw",
            password="secret",
            tls=client_context(ca_file=str(pki.ca)),
            tls_server_hostname="smsc.example.net",
        )
        try:
            with pytest.raises(SmppTlsError, match="Hostname mismatch"):
                await asyncio.wait_for(esme.start(), 5)
        finally:
            await esme.close()


async def test_tls_to_the_plain_port_says_the_peer_does_not_speak_tls(pki: ThrowawayPki) -> None:
    async with tls_smsc(pki) as simulator:
        esme = client(simulator, port=simulator.port, ca_file=str(pki.ca))
        try:
            with pytest.raises(SmppTlsError, match="does not speak TLS there"):
                await asyncio.wait_for(esme.start(), 5)
        finally:
            await esme.close()


async def test_without_verification_any_certificate_is_accepted(pki: ThrowawayPki) -> None:
    async with tls_smsc(pki) as simulator:
        esme = client(simulator, ca_file=str(pki.other_ca), verify=False)
        try:
            await asyncio.wait_for(esme.start(), 5)
            assert (await esme.submit(source="SMSGW", destination="447700900123", text="unverified")).ok
        finally:
            await esme.close()


async def test_mutual_tls_binds_with_the_client_certificate_and_not_without(pki: ThrowawayPki) -> None:
    async with tls_smsc(pki, tls_client_ca_file=str(pki.ca)) as simulator:
        with_cert = client(simulator, ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
        without = client(simulator, ca_file=str(pki.ca))
        try:
            await asyncio.wait_for(with_cert.start(), 5)
            assert (await with_cert.submit(source="SMSGW", destination="447700900123", text="mutual")).ok
            # The SMSC closes the connection on a client without a certificate: it never binds.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(without.start(), 1.5)
            assert not without.bound and simulator.binds == [("smsgw", "transceiver")]
        finally:
            await with_cert.close()
            await without.close()


async def test_the_carrier_config_reaches_the_client_over_tls(pki: ThrowawayPki) -> None:
    async with tls_smsc(pki) as simulator:
        reports = Reports()
        carrier = SmppCarrierClient(
            SmppCarrier(
                name="tls",
                host="localhost",
                port=simulator.tls_port,
                system_id="smsgw",
                password="secret",
                tls=True,
                tls_ca_file=str(pki.ca),
            ),
            reports,
        )
        try:
            await carrier.start(wait=5)
            result = await carrier.submit(dispatch("carrier over TLS"))
            assert result.accepted
            key, state = await asyncio.wait_for(reports.receipts.get(), 5)
            assert (key, state) == (result.carrier_ids[0], "DELIVRD")
        finally:
            await carrier.close()


# --- configuration ------------------------------------------------------------------------------

BASE = {"name": "x", "system_id": "smsgw", "password": "secret"}


def test_tls_config_defaults_and_the_conventional_port(pki: ThrowawayPki) -> None:
    plain = SmppCarrier(**BASE)
    assert (plain.tls, plain.tls_ca_file, plain.tls_verify, plain.port) == (False, None, True, 2775)
    assert plain.tls_context() is None
    assert SmppCarrier(**BASE, tls=True, tls_ca_file=str(pki.ca)).port == 3550
    assert SmppCarrier(**BASE, tls=True, tls_ca_file=str(pki.ca), port=4000).port == 4000
    assert SmppCarrier(**BASE, tls=True).tls_context() is not None  # the system's CAs


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls": True, "tls_ca_file": "/nonexistent/ca.pem"}, "tls_ca_file: no such file: '/nonexistent/ca.pem'"),
        ({"tls": True, "tls_cert_file": "/nonexistent/c.pem"}, "tls_cert_file: no such file"),
        ({"tls": True, "tls_key_file": "KEY"}, "tls_key_file is set without tls_cert_file"),
        ({"tls_ca_file": "CA"}, "tls_ca_file: only for SMPP over TLS; set tls: true"),
        ({"tls_verify": False}, "tls_verify: only for SMPP over TLS"),
        ({"tls": True, "tls_ca_file": "NOT_PEM"}, "tls_ca_file: .* holds no usable PEM certificate"),
        (
            {"tls": True, "tls_cert_file": "SERVER_CERT", "tls_key_file": "CLIENT_KEY"},
            "tls_cert_file/tls_key_file: .* are not a PEM certificate and its private key",
        ),
    ],
)
def test_tls_config_errors_name_the_setting(pki: ThrowawayPki, tmp_path: Path, settings: dict, message: str) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    files = {
        "CA": str(pki.ca),
        "KEY": str(pki.client_key),
        "NOT_PEM": str(not_pem),
        "SERVER_CERT": str(pki.server_cert),
        "CLIENT_KEY": str(pki.client_key),
    }
    settings = {k: files.get(v, v) if isinstance(v, str) else v for k, v in settings.items()}
    with pytest.raises(ValidationError, match=message):
        SmppCarrier(**BASE, **settings)
    # The same error surfaces from the carrier list the adapter loads at start.
    document = {"carriers": [{"kind": "smpp", **BASE, **settings}]}
    with pytest.raises(CarrierConfigError, match=message):
        load_carriers(json.dumps(document))


def test_client_context_errors_are_value_errors_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match="tls_ca_file: no such file"):
        client_context(ca_file=str(tmp_path / "missing.pem"))
    assert issubclass(TlsConfigError, ValueError)


def test_the_simulator_cli_listens_for_tls(pki: ThrowawayPki) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smsgw_dev.simulators.smsc",
            "--port",
            "0",
            "--tls-port",
            "0",
            "--tls-cert",
            str(pki.server_cert),
            "--tls-key",
            str(pki.server_key),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("SMSC simulator listening on 127.0.0.1:")
        assert lines[1].startswith("SMSC simulator listening for TLS on 127.0.0.1:")
        tls_port = int(lines[1].rsplit(":", 1)[1])

        async def bind() -> bool:
            esme = SmppClient(
                host="localhost",
                port=tls_port,
                system_id="smsgw",
                password="secret",
                tls=client_context(ca_file=str(pki.ca)),
            )
            try:
                await asyncio.wait_for(esme.start(), 5)
                return esme.bound
            finally:
                await esme.close()

        assert asyncio.run(bind())
    finally:
        process.terminate()
        process.wait(10)
