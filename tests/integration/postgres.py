"""The tests' PostgreSQL: the session fixture `postgres` starts one throwaway cluster
(smsgw_dev.postgres) and stops it (and removes its directory) at the end of the session. Tests
isolate themselves by schema (`PostgresCluster.new_schema()`), not by cluster.

Without the server binaries the tests that need PostgreSQL are skipped, unless
SMSGW_REQUIRE_POSTGRES is set (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from smsgw_dev.postgres import PostgresCluster, find_bin_dir, start_postgres

__all__ = ["PostgresCluster", "find_bin_dir", "postgres", "start_postgres"]

_shared: PostgresCluster | None = None


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the session; skipped when absent unless SMSGW_REQUIRE_POSTGRES is set."""
    global _shared
    if _shared is None:
        try:
            _shared = start_postgres()
        except FileNotFoundError as missing:
            if os.environ.get("SMSGW_REQUIRE_POSTGRES"):
                pytest.fail(f"SMSGW_REQUIRE_POSTGRES is set but {missing}")
            pytest.skip(f"PostgreSQL tests skipped: {missing} (set SMSGW_REQUIRE_POSTGRES to make this a failure)")
    yield _shared
    # Imported by conftest and by test modules alike: every copy of this fixture shares one
    # cluster, and the first teardown (at session end) stops it.
    cluster, _shared = _shared, None
    if cluster is not None:
        cluster.stop()
