"""The one place the services reach into aiokafka beyond its public API.

aiokafka is pinned exactly in pyproject.toml and the version is asserted here at import, so an
upgrade fails loudly at start instead of quietly changing what these calls do; the tests that
depend on each call are named beside it.
"""

from __future__ import annotations

from collections.abc import Iterable

import aiokafka
from aiokafka import AIOKafkaConsumer, TopicPartition

#: The release these calls were read against (aiokafka/consumer/group_coordinator.py, client.py,
#: protocol/group.py).
CHECKED_VERSION = "0.14.0"
if aiokafka.__version__ != CHECKED_VERSION:
    raise ImportError(
        f"smsgw.kafka.aiokafka_internals was checked against aiokafka {CHECKED_VERSION}, not "
        f"{aiokafka.__version__}: read fetch_committed_offsets, the coordinator's member_id and "
        f"the client's coordinator_lookup again, then change the pin and this"
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


def group_member_id(consumer: AIOKafkaConsumer) -> str:
    """The member id the group coordinator gave this consumer ("" before it joined). aiokafka keeps
    it on its coordinator only; predecessor.py records it so that the next process in the same
    place can remove a member killed without leaving (tests/unit/test_predecessor.py,
    tests/integration/test_scheduled_delivery.py)."""
    coordinator = consumer._coordinator  # noqa: SLF001 - see the module docstring
    return str(coordinator.member_id) if coordinator is not None else ""


async def leave_group_as(client_kwargs: dict, group_id: str, member_id: str) -> int:
    """Sends LeaveGroup for `member_id` of `group_id` to the group's coordinator, as that member
    would on a clean stop; returns Kafka's error code (0: removed; 25, UNKNOWN_MEMBER_ID: not a
    member any more). aiokafka has no public call for it: its own client and request types do the
    lookup and the request (the same ones its consumer uses when it leaves)."""
    from aiokafka.client import AIOKafkaClient, CoordinationType
    from aiokafka.protocol.group import LeaveGroupRequest

    client = AIOKafkaClient(**client_kwargs)
    try:
        await client.bootstrap()
        node = await client.coordinator_lookup(CoordinationType.GROUP, group_id)
        response = await client.send(node, LeaveGroupRequest(group_id, member_id))
        return int(response.error_code)
    finally:
        await client.close()
