"""The producers' partitioner (smsgw.kafka.partitioner) puts every keyed record where Kafka's
default partitioner does: the partitions of routing's and receipt's state depend on it."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from smsgw.kafka.partitioner import Murmur2Partitioner, murmur2

ALL = list(range(1000))


def test_the_java_clients_partitions():
    # Kafka's Java producer with 1,000 partitions (the vectors its clients share, e.g. kafka-python's).
    expected = {b"": 681, b"a": 524, b"ab": 434, b"abc": 107, b"123456789": 566, b"\x00 ": 742}
    partitioner = Murmur2Partitioner()
    assert {key: partitioner(key, ALL, ALL) for key in expected} == expected


def test_the_same_hash_as_aiokafkas_for_every_length_and_byte():
    rng = random.Random(7)
    for length in range(101):
        for _ in range(50):
            key = rng.randbytes(length)
            assert murmur2(key) == aiokafka_murmur2(key), key
    for key in (b"\xff" * 37, b"\x80" * 5, str(range(10)).encode()):
        assert murmur2(key) == aiokafka_murmur2(key)


def test_the_same_partition_as_aiokafkas_default_also_for_a_key_seen_before():
    rng = random.Random(11)
    ours, theirs = Murmur2Partitioner(), DefaultPartitioner()
    keys = [rng.randbytes(rng.randrange(1, 60)) for _ in range(500)]
    for partitions in ([0], list(range(12)), list(range(48))):
        for key in keys + keys:  # the second time from the recent keys' hashes
            assert ours(key, partitions, partitions) == theirs(key, partitions, partitions)
    assert ours(bytearray(b"abc"), ALL, ALL) == 107  # any bytes-like key, as aiokafka takes


def test_a_record_without_a_key_goes_to_an_available_partition():
    partitioner = Murmur2Partitioner()
    assert {partitioner(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
    assert {partitioner(None, [0, 1], []) for _ in range(50)} <= {0, 1}
