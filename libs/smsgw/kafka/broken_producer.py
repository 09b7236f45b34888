"""A producer that can write no more, and the service exit that replaces it.

After some errors an idempotent producer never writes again: the brokers lost its sequence
state (every node of the cluster restarted: `make chaos`, "every node restarted"), or another
producer took its id. Every later send fails the same way, so a service that would otherwise
keep answering UNAVAILABLE forever exits instead (non-zero), and its restart starts a new
producer. The consume loops of routing, receipt and carrier-adapter already end on such an
error; intake, which sends from its request handlers, watches `until_broken`.
"""

from __future__ import annotations

import asyncio

from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

BROKEN_PRODUCER = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    ProducerFenced,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
)


class ProducerHealth:
    def __init__(self) -> None:
        self.broken = asyncio.Event()

    def observe(self, error: BaseException) -> None:
        """Called with each send's error: notes one after which the producer is done for."""
        if isinstance(error, BROKEN_PRODUCER):
            self.broken.set()

    async def until_broken(self, stop: asyncio.Event) -> None:
        """Ends with an error (the service stops, non-zero) once the producer is broken; ends
        quietly when the service stops first (a watched task that never ended would hold the
        shutdown until the process is killed)."""
        waits = {asyncio.create_task(self.broken.wait()), asyncio.create_task(stop.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if not self.broken.is_set():
            return
        raise RuntimeError(
            "the Kafka producer can write no more (the brokers lost its idempotent sequence state); "
            "exiting so that a restart starts a new one"
        )
