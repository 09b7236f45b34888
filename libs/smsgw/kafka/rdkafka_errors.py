"""librdkafka's errors as aiokafka's error classes, so every caller handles one family of errors.

A broker's error code is the same number in both clients (aiokafka's `for_code`). librdkafka's
own (negative) codes are mapped to what aiokafka raises for the same cause: a request or record
that timed out, a connection lost, a record purged because the producer stopped. A fatal error
(the idempotent producer's sequence broken, its id fenced: librdkafka's `fatal()`) means this
producer never writes again, as aiokafka's BROKEN_PRODUCER errors do (smsgw.kafka.broken_producer).
"""

# librdkafka names its own (local) error codes with a leading underscore: public, documented names.
# ruff: noqa: SLF001

from __future__ import annotations

import confluent_kafka
from aiokafka import errors

_LOCAL: dict[int, type[errors.KafkaError]] = {
    confluent_kafka.KafkaError._MSG_TIMED_OUT: errors.KafkaTimeoutError,
    confluent_kafka.KafkaError._TIMED_OUT: errors.KafkaTimeoutError,
    confluent_kafka.KafkaError._TIMED_OUT_QUEUE: errors.KafkaTimeoutError,
    confluent_kafka.KafkaError._TRANSPORT: errors.KafkaConnectionError,
    confluent_kafka.KafkaError._ALL_BROKERS_DOWN: errors.KafkaConnectionError,
    confluent_kafka.KafkaError._RESOLVE: errors.KafkaConnectionError,
    # Purged: the producer stopped before the record was acknowledged. It may have landed (a
    # purged request in flight), as with aiokafka's futures cancelled by stop.
    confluent_kafka.KafkaError._PURGE_QUEUE: errors.KafkaConnectionError,
    confluent_kafka.KafkaError._PURGE_INFLIGHT: errors.KafkaConnectionError,
    confluent_kafka.KafkaError._DESTROY: errors.KafkaConnectionError,
    confluent_kafka.KafkaError._UNKNOWN_TOPIC: errors.UnknownTopicOrPartitionError,
    confluent_kafka.KafkaError._UNKNOWN_PARTITION: errors.UnknownTopicOrPartitionError,
}


class ProducerFatalError(errors.KafkaError):
    """librdkafka's idempotent producer failed for good (its `fatal()` error): no record it is
    given will be written; the service must start a new producer (it exits and is restarted)."""

    retriable = False


def as_aiokafka_error(error: confluent_kafka.KafkaError) -> errors.KafkaError:
    """`error` as the aiokafka error for the same cause (a record too large keeps its broker code:
    librdkafka refuses it with that code before sending)."""
    text = f"{error.str()} (librdkafka {error.name()})"
    if error.fatal():
        return ProducerFatalError(text)
    code = error.code()
    if code in _LOCAL:
        return _LOCAL[code](text)
    if code > 0:
        return errors.for_code(code)(text)
    return errors.KafkaError(text)
