"""The one place the services reach into aiokafka beyond its public API.

aiokafka is pinned exactly in pyproject.toml and the version is asserted here at import, so an
upgrade fails loudly at start instead of quietly changing what these calls do; the tests that
depend on each call are named beside it.
"""

from __future__ import annotations

from collections.abc import Iterable

import aiokafka
from aiokafka import AIOKafkaConsumer, TopicPartition

#: The release these calls were read against (aiokafka/consumer/group_coordinator.py).
CHECKED_VERSION = "0.14.0"
if aiokafka.__version__ != CHECKED_VERSION:
    raise ImportError(
        f"smsgw.kafka.aiokafka_internals was checked against aiokafka {CHECKED_VERSION}, not "
        f"{aiokafka.__version__}: read fetch_committed_offsets again, then change the pin and this"
    )


async def committed_with_metadata(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, tuple[int | None, str | None]]:
    """Each partition's last committed offset *with its metadata* (None, None when nothing was
    committed). aiokafka's public `committed()` drops the metadata; the dispatcher keeps in it which
    commands beyond a held commit already finished (tests/integration/test_carrier_outage.py kills
    the adapter while commits are held and checks nothing is submitted twice)."""
    wanted = list(partitions)
    commits = await consumer._coordinator.fetch_committed_offsets(wanted)  # noqa: SLF001 - see the module docstring
    return {tp: (commits[tp].offset, commits[tp].metadata) if tp in commits else (None, None) for tp in wanted}
