"""Fixtures of the integration tests that several modules share."""

from __future__ import annotations

import pytest

from tests.integration.dispatch_rig import open_rig


@pytest.fixture
async def rig(broker, tmp_path, monkeypatch):
    """The real Dispatcher's test rig on its own topics of `broker` (dispatch_rig.py)."""
    async with open_rig(broker, tmp_path, monkeypatch) as opened:
        yield opened
