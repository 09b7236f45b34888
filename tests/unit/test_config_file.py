"""The platform's configuration file: `smsgw config check`, line-level errors, sections in services."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from smsgw import config_file
from smsgw.cli import main as smsgw
from smsgw.domain.route_schema import load_route_section
from smsgw.settings import ServiceSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "smsgw.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "smsgw.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_shipped_example_is_valid_and_every_section_has_a_reader(capsys):
    assert smsgw(["config", "check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "OK (2 carriers, 5 routes, carrier_health, 1 numbers, receipt_policies, webhooks, 1 accounts)" in out
    document = yaml.safe_load(EXAMPLE.read_text())
    assert set(document) == set(config_file.section_loaders())


def test_each_problem_is_printed_with_its_line_column_and_place(tmp_path, capsys):
    path = write(
        tmp_path,
        """\
        carriers:
          - name: smsc-main
            kind: smpp
            system_id: smsgw
            password: much-too-long
            port: 99999
        routes:
          - prefix: "44"
            carrier: smsc-main
          - prefix: "+1"
            carrier: smsc-main
            strategy: cheapest
        receipt_policies:
          default: {on_timeout: never}
        numbers:
          numbers:
            "4155550000": {account: acme}
        route: []
        """,
    )
    assert smsgw(["config", "check", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}:5:15: carriers[0].password: String should have at most 8 characters",
        f"{path}:6:11: carriers[0].port: Input should be less than or equal to 65535",
        f"{path}:8:13: routes[0].prefix: '44' must be '+' followed by up to 15 digits (e.g. \"+44\"), or empty "
        "for every number",
        f"{path}:12:15: routes[1].strategy: Input should be 'failover', 'weighted' or 'least_cost'",
        f"{path}:14:25: receipt_policies.default.on_timeout: Input should be 'expire' or 'keep_sent'",
        f"{path}:17:5: numbers.numbers: ['4155550000']: our numbers are E.164 (\"+14155550000\", quoted in YAML) "
        "or 3-8 digit short codes",
        f"{path}:18:8: route: unknown section; the sections are accounts, carrier_health, carriers, numbers, "
        "receipt_policies, routes, webhooks",
        f"{path}: 7 problems",
    ]
    assert "much-too-long" not in "\n".join(err), "a carrier's password is never echoed"


def test_a_route_naming_an_undeclared_carrier_is_refused_at_its_line(tmp_path, capsys):
    path = write(
        tmp_path,
        """\
        carriers:
          - {name: smsc-main, kind: smpp, system_id: a, password: b}
        routes:
          - carrier: smsc-main
          - prefix: "+44"
            carriers: [smsc-main, smsc-uk]
        receipt_policies:
          carriers:
            smsc-old: {receipt_timeout: 60}
        """,
    )
    assert smsgw(["config", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:6:27: routes[1].carriers[1]: carrier 'smsc-uk' is not in `carriers` (smsc-main)" in err
    assert f"{path}:9:15: receipt_policies.carriers.smsc-old: carrier 'smsc-old' is not in `carriers`" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("routes:\n  - carrier: a\n    carrier: b\n", ":3:5: not valid YAML: 'carrier' given twice (first at line 2)"),
        ("routes: [\n", ":2:1: not valid YAML: expected the node content"),
        ("- just\n- a list\n", ":1:1: the file must be a mapping of sections"),
    ],
)
def test_a_file_that_is_not_a_mapping_of_sections_is_refused_at_its_line(tmp_path, capsys, text, expected):
    path = tmp_path / "smsgw.yaml"
    path.write_text(text)
    assert smsgw(["config", "check", str(path)]) == 1
    assert f"{path}{expected}" in capsys.readouterr().err


def test_a_missing_file_is_named(tmp_path, capsys):
    assert smsgw(["config", "check", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read the file" in capsys.readouterr().err


class _Settings(ServiceSettings):
    routes: str = '{"routes": [{"carrier": "x"}]}'


def test_a_service_reads_its_section_and_refuses_it_together_with_its_variable(tmp_path, monkeypatch):
    path = write(tmp_path, 'routes:\n  - {prefix: "+44", carrier: uk}\n  - {carrier: rest}\n')
    monkeypatch.setenv("SMSGW_CONFIG_FILE", str(path))
    table = _Settings().config_section("routes", load_route_section, replaces="routes")
    assert table is not None and table.pick("+447911123456").carrier == "uk"
    assert _Settings().config_section("carrier_health", lambda v: v) is None, "no such section: None"
    monkeypatch.setenv("SMSGW_ROUTES", '{"routes": [{"carrier": "y"}]}')
    with pytest.raises(SystemExit, match="has a `routes` section and SMSGW_ROUTES is set too"):
        _Settings().config_section("routes", load_route_section, replaces="routes")
    monkeypatch.delenv("SMSGW_ROUTES")
    path.write_text("routes:\n  - {prefix: '1', carrier: uk}\n")
    with pytest.raises(SystemExit, match=r"smsgw.yaml:2:14: routes\[0\].prefix"):
        _Settings().config_section("routes", load_route_section, replaces="routes")


def test_routes_explain_names_the_route_the_carrier_and_why_the_others_do_not_match(capsys):
    code = smsgw(["routes", "explain", "+447911123456", "--from", "ACME", "--config", str(EXAMPLE)])
    out = capsys.readouterr().out
    assert code == 0
    assert "-> 1. uk-mobile" in out and "matches" in out
    assert "3. otp" in out and "no: tags ['otp'] not on the message" in out
    assert "chosen: route uk-mobile, carrier smsc-backup (least cost of smsc-main:0.032, smsc-backup:0.029)" in out
    assert "sender:" not in out  # uk-mobile keeps the message's sender


def test_routes_explain_shows_a_route_rewriting_the_sender(capsys):
    assert smsgw(["routes", "explain", "+14155550100", "--from", "ACME", "--config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "-> 2. us  [prefix +1; failover: smsc-main; rewrites alphanumeric senders to +14155550123]" in out
    assert "sender: rewritten to +14155550123 by the route (the carrier gets it instead of ACME)" in out


def test_routes_explain_says_when_nothing_matches(tmp_path, capsys):
    path = write(tmp_path, 'routes:\n  - {prefix: "+44", carrier: uk}\n')
    assert smsgw(["routes", "explain", "+14155550100", "--config", str(path)]) == 2
    out = capsys.readouterr().out
    assert "1. +44->uk" in out and "no: prefix +44" in out and "no route matches" in out


def test_the_development_platform_writes_a_file_that_passes_the_check(tmp_path):
    from smsgw_dev.platform import Platform

    platform = Platform(bootstrap="127.0.0.1:9", idempotence=True, run_dir=tmp_path / "run", tls=False)
    path = platform.write_config_file()
    document, problems = config_file.check(path)
    assert problems == [] and document is not None
    assert set(document.data) == {"carriers", "routes", "numbers", "receipt_policies", "webhooks"}
    # A test that sets a section's variable itself gets it: the section is left out of the file.
    platform.extra_env["SMSGW_CARRIERS"] = '{"carriers": []}'
    assert "carriers" not in yaml.safe_load(platform.write_config_file().read_text())


@pytest.mark.parametrize("module", ["smsgw_routing", "smsgw_intake", "smsgw_receipt", "smsgw_carrier_adapter"])
def test_a_service_given_a_file_with_a_problem_stops_at_start_naming_its_line(tmp_path, module):
    import os
    import subprocess
    import sys

    path = write(
        tmp_path,
        """\
        carriers:
          - {name: smsc-main, kind: smpp, system_id: a, password: b, port: 0}
        routes:
          - {prefix: "+44", carrier: smsc-main, strategy: cheapest}
        numbers: {numbers: {"123": {account: acme, colour: red}}}
        receipt_policies: {default: {receipt_timeout: -1}}
        """,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    env.update(
        SMSGW_CONFIG_FILE=str(path),
        SMSGW_KAFKA_BOOTSTRAP="127.0.0.1:9",  # never reached
        SMSGW_STATE_DIR=str(tmp_path),
        SMSGW_ENVIRONMENT="development",
        SMSGW_GRPC_PLAINTEXT="true",
    )
    done = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    # Each service stops at the first section of its own that has a problem, at that line.
    expected = {
        "smsgw_routing": f"{path}:4:51: routes[0].strategy: Input should be 'failover', 'weighted' or 'least_cost'",
        "smsgw_intake": f"{path}:4:51: routes[0].strategy: Input should be 'failover', 'weighted' or 'least_cost'",
        "smsgw_receipt": f"{path}:5:52: numbers.numbers.123.colour: Extra inputs are not permitted",
        "smsgw_carrier_adapter": f"{path}:2:68: carriers[0].port: Input should be greater than or equal to 1",
    }[module]
    assert expected in done.stderr, done.stderr[-2000:]
