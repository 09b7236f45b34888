"""Removes from its consumer group the member of a process killed here before this one started.

A process killed without leaving its group (kill -9, OOM, a node's power) stays a member until its
session times out (SMSGW_KAFKA_SESSION_TIMEOUT_MS; Kafka allows no less than 6 s by default), and
no rebalance completes before: its partitions wait, and so do the process that replaces it and
every other member. Scheduled messages due meanwhile go out that much late. Kubernetes restarts a
crashed container in the same pod, with the same emptyDir: so each member writes its member id in
the state directory once it has joined, and the next process started there sends LeaveGroup for
that id before it joins, as the dead one would have on a clean stop. The rebalance then goes on
at once, without waiting for the session to expire.

A member that left cleanly has removed its file. An id that is no longer a member (its session
expired meanwhile) is answered UNKNOWN_MEMBER_ID, which is fine. Each process has a state
directory of its own; two live processes sharing one would remove each other at start, which costs
a rebalance, not a record (commits are fenced by the group's generation).
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from smsgw.kafka.aiokafka_internals import group_member_id, leave_group_as
from smsgw.kafka.connection import KafkaConnection

log = logging.getLogger(__name__)

#: LeaveGroup for an id the coordinator no longer knows.
UNKNOWN_MEMBER_ID = 25


class MemberFile:
    """Where a process records its group member id (one file per group in its state directory)."""

    def __init__(self, state_dir: str | Path, group_id: str) -> None:
        self.group_id = group_id
        self.path = Path(state_dir) / f"group-member.{group_id}"
        self._written = ""  # what this process wrote last (cheap to call remember() often)

    def read(self) -> str:
        try:
            return self.path.read_text().strip()
        except FileNotFoundError:
            return ""

    def write(self, member_id: str) -> None:
        if member_id and member_id != self._written:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(member_id)
            tmp.replace(self.path)
            self._written = member_id

    def remember(self, consumer: AIOKafkaConsumer) -> None:
        """After an assignment: the id this member has now."""
        self.write(group_member_id(consumer))

    def clear(self) -> None:
        """After a clean stop: the member left by itself."""
        self.path.unlink(missing_ok=True)
        self._written = ""


async def remove_predecessor(file: MemberFile, kafka: KafkaConnection) -> str:
    """Before this process joins: LeaveGroup for the member a process killed here left behind.
    Returns what happened, for the log and the tests; never raises (at worst the join waits for
    the old session to expire, as without this)."""
    group_id, member_id = file.group_id, file.read()
    if not member_id:
        return "none recorded"
    try:
        code = await leave_group_as(kafka.client_kwargs(), group_id, member_id)
    except Exception as exc:  # noqa: BLE001 - best effort: the session expires anyway
        log.warning("%s: could not remove the previous process's member %s (%r)", group_id, member_id, exc)
        return f"failed: {exc!r}"
    file.clear()
    if code == 0:
        log.info("%s: removed member %s, left behind by the previous process here", group_id, member_id)
        return "removed"
    if code == UNKNOWN_MEMBER_ID:
        return "already gone"
    log.warning("%s: LeaveGroup for the previous member %s answered error %d", group_id, member_id, code)
    return f"error {code}"


async def start_in_place(consumer: AIOKafkaConsumer, file: MemberFile | None, kafka: KafkaConnection) -> None:
    """Starts a group consumer after removing the member a process killed here left (no file:
    nothing is recorded for this consumer, it just starts)."""
    if file is not None:
        await remove_predecessor(file, kafka)
    await consumer.start()


async def stop_in_place(consumer: AIOKafkaConsumer, file: MemberFile | None) -> None:
    """Stops a group consumer (it leaves the group) and forgets its member id."""
    await consumer.stop()
    if file is not None:
        file.clear()
