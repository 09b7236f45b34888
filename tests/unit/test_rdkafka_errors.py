"""librdkafka's errors reach the services as aiokafka's classes (smsgw.kafka.rdkafka_errors): the
append path tells "the log is unavailable" from "refused for good", and a fatal error marks the
producer broken, as aiokafka's own errors did."""

from __future__ import annotations

import confluent_kafka
import pytest
from aiokafka import errors

from smsgw.kafka.broken_producer import ProducerHealth
from smsgw.kafka.rdkafka_errors import ProducerFatalError, as_aiokafka_error

E = confluent_kafka.KafkaError


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (E._MSG_TIMED_OUT, errors.KafkaTimeoutError),
        (E._TIMED_OUT, errors.KafkaTimeoutError),
        (E._TRANSPORT, errors.KafkaConnectionError),
        (E._ALL_BROKERS_DOWN, errors.KafkaConnectionError),
        (E._PURGE_QUEUE, errors.KafkaConnectionError),
        (E._PURGE_INFLIGHT, errors.KafkaConnectionError),
        (E._UNKNOWN_TOPIC, errors.UnknownTopicOrPartitionError),
        # A broker's code is the same number in both clients.
        (E.NOT_ENOUGH_REPLICAS, errors.NotEnoughReplicasError),
        (E.NOT_LEADER_FOR_PARTITION, errors.NotLeaderForPartitionError),
        (E.MSG_SIZE_TOO_LARGE, errors.MessageSizeTooLargeError),
        (E.TOPIC_AUTHORIZATION_FAILED, errors.TopicAuthorizationFailedError),
        (E._BAD_MSG, errors.KafkaError),  # any other local error: the family's base class
    ],
)
def test_each_error_is_aiokafkas_class_for_the_same_cause(code, expected):
    converted = as_aiokafka_error(E(code))
    assert type(converted) is expected
    assert E(code).name() in str(converted), "the message names librdkafka's error"


def test_retriable_broker_errors_stay_retriable_and_refusals_do_not():
    assert as_aiokafka_error(E(E.NOT_ENOUGH_REPLICAS)).retriable
    assert not as_aiokafka_error(E(E.MSG_SIZE_TOO_LARGE)).retriable


def test_a_fatal_error_breaks_the_producer_whatever_its_code():
    for code in (E.OUT_OF_ORDER_SEQUENCE_NUMBER, E._FENCED, E.UNKNOWN_PRODUCER_ID):
        converted = as_aiokafka_error(E(code, fatal=True))
        assert isinstance(converted, ProducerFatalError) and not converted.retriable
        health = ProducerHealth()
        health.observe(converted)
        assert health.broken.is_set()
    health = ProducerHealth()
    health.observe(as_aiokafka_error(E(E._MSG_TIMED_OUT)))
    assert not health.broken.is_set(), "a timeout leaves the producer usable"
