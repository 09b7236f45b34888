"""Every Makefile target works as written: `make -n` (print, do not run) succeeds for each one,
and each script or module a target runs exists. A renamed script otherwise surfaces only when
someone runs that target, as `make bench` once did (its script did not exist)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = (ROOT / "Makefile").read_text()


def _phony() -> list[str]:
    match = re.search(r"^\.PHONY:(.*)$", MAKEFILE, re.MULTILINE)
    assert match, "the Makefile declares its targets in .PHONY"
    return match.group(1).split()


def test_every_rule_named_like_a_command_is_phony():
    rules = {m.group(1) for m in re.finditer(r"^([a-z][a-z0-9-]*):", MAKEFILE, re.MULTILINE)}
    assert rules - set(_phony()) == set(), "add these to .PHONY (or they are skipped when a file of that name exists)"


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
@pytest.mark.parametrize("target", _phony())
def test_the_target_dry_runs_and_what_it_runs_exists(target):
    done = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    commands = done.stdout
    assert commands.strip(), f"make -n {target} printed no command"
    for path in re.findall(r"(?<![\w/.-])((?:[\w.-]+/)+[\w.-]+\.(?:py|sh))\b", commands):
        assert (ROOT / path).exists(), f"make {target} runs {path}, which does not exist"
    for module in re.findall(r"python -m ([\w.]+)", commands):
        assert importlib.util.find_spec(module) is not None, f"make {target} runs module {module}, which is not there"
