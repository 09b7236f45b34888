"""A producer the brokers no longer know (its idempotent sequence lost) ends the service, so that
its restart brings a new one; a passing broker error does not."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError, NotEnoughReplicasError, OutOfOrderSequenceNumber, UnknownProducerId

from smsgw.kafka.broken_producer import ProducerHealth


async def test_only_an_error_that_breaks_the_producer_ends_the_service():
    health = ProducerHealth()
    watched = asyncio.create_task(health.until_broken())
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
        await asyncio.wait_for(other.until_broken(), 1)
