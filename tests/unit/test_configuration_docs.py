"""docs/configuration.md is the settings models, written out: it says every variable the services
read, each with a description, and nothing else reads SMSGW_* variables behind the models' back."""

from __future__ import annotations

import re
from pathlib import Path

from smsgw_dev.configuration_docs import render, undocumented

ROOT = Path(__file__).resolve().parents[2]


def test_the_page_is_what_the_models_say():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == render(), "docs/configuration.md differs from the settings models: run `make config-docs`"


def test_every_setting_says_what_it_is_for():
    assert undocumented() == []


def test_services_read_their_settings_only_through_the_models():
    # A variable read with os.environ would be a setting no model validates, logs or documents.
    reads = re.compile(r"os\.(environ|getenv)")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "services").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if reads.search(line)
    ]
    assert offenders == []
