"""A producer the brokers no longer know (its idempotent sequence lost) ends the service, so that
its restart brings a new one; a passing broker error does not."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError, NotEnoughReplicasError, OutOfOrderSequenceNumber, UnknownProducerId

from smsgw.kafka.broken_producer import ProducerHealth


async def test_only_an_error_that_breaks_the_producer_ends_the_service():
    health = ProducerHealth()
    watched = asyncio.create_task(health.until_broken(asyncio.Event()))
    for passing in (KafkaTimeoutError(), NotEnoughReplicasError()):
        health.observe(passing)  # the cluster is away for a while: the producer will write again
    await asyncio.sleep(0.05)
    assert not watched.done()
    health.observe(OutOfOrderSequenceNumber())
    with pytest.raises(RuntimeError, match="can write no more"):
        await asyncio.wait_for(watched, 1)
    other = ProducerHealth()
    other.observe(UnknownProducerId())
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(other.until_broken(asyncio.Event()), 1)


async def test_the_watch_ends_quietly_when_the_service_stops_first():
    # A watched task that never ended held intake's shutdown until it was killed (10 s a stop).
    stop = asyncio.Event()
    watched = asyncio.create_task(ProducerHealth().until_broken(stop))
    await asyncio.sleep(0.05)
    stop.set()
    assert await asyncio.wait_for(watched, 1) is None
