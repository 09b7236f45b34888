"""`smsgw` is the shared library's CLI; services add subcommand families through an entry point
group, so the library names no service (receipt adds `smsgw webhooks`)."""

import ast
import subprocess
import sys
from pathlib import Path

from smsgw.cli import COMMANDS_GROUP, _plugged_in

LIBS = Path(__file__).resolve().parents[2] / "libs" / "smsgw"
SERVICE_PACKAGES = {"smsgw_intake", "smsgw_routing", "smsgw_receipt", "smsgw_carrier_adapter"}


def test_receipt_adds_the_webhooks_command_through_the_entry_point_group():
    assert COMMANDS_GROUP == "smsgw.commands"
    command = _plugged_in("webhooks")
    assert command is not None and command.__module__ == "smsgw_receipt.webhooks.cli"
    assert _plugged_in("send") is None  # the library's own subcommands are not plugged in


def test_smsgw_webhooks_runs_as_a_user_types_it(tmp_path):
    store = tmp_path / "hooks.db"
    done = subprocess.run(
        [sys.executable, "-m", "smsgw.cli", "webhooks", "dead-letters", "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"0 dead letter(s) in {store}" in done.stderr  # the count goes to stderr, the letters to stdout


def test_the_shared_library_imports_no_service():
    offenders = []
    for path in LIBS.rglob("*.py"):
        if "/v1/" in str(path):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.relative_to(LIBS)}: {n}" for n in names if n.split(".")[0] in SERVICE_PACKAGES]
    assert offenders == []
