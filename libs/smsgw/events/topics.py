"""Every Kafka topic, defined once: name, key, value type, writer, partitions, retention.

Services never spell a topic name themselves; they take it from here, so a
rename or a new version is one change. docs/topics.md documents the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message as ProtoMessage

from smsgw.v1 import accounts_pb2, carrier_pb2, device_relay_pb2, events_pb2

# 12 divides evenly among 1, 2, 3, 4, 6 and 12 consumers: room to scale out each service.
DEFAULT_PARTITIONS = 12
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    value_type: type[ProtoMessage]
    key: str
    writers: tuple[str, ...]
    partitions: int = DEFAULT_PARTITIONS
    retention_ms: int = -1
    cleanup_policy: str = "delete"
    description: str = ""

    def config(self) -> dict[str, str]:
        if self.cleanup_policy == "compact":
            return {"cleanup.policy": "compact"}
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


MESSAGE_EVENTS = TopicSpec(
    name="smsgw.message-events.v1",
    value_type=events_pb2.EventEnvelope,
    key="message id",
    # Several services append to a message's log; each event type has exactly one
    # owner (EVENT_OWNERS), enforced when an event is built.
    writers=("intake", "routing", "carrier-adapter", "receipt"),
    retention_ms=-1,  # the log of record: kept forever (archival/compaction policy is an operator's choice)
    description="Every event of every message, in the EventEnvelope; a message's state is the fold of its events.",
)

CARRIER_DISPATCH = TopicSpec(
    name="smsgw.carrier-dispatch.v1",
    value_type=carrier_pb2.DispatchCommand,
    key="message id",
    # routing's commands; carrier-adapter's for a message rerouted to another carrier, or back
    # from the delay topic.
    writers=("routing", "carrier-adapter"),
    retention_ms=7 * DAY_MS,
    description="Work for carrier adapters: one command per routed message.",
)

CARRIER_DISPATCH_DELAYED = TopicSpec(
    name="smsgw.carrier-dispatch-delayed.v1",
    value_type=carrier_pb2.DispatchCommand,
    key="message id",
    writers=("carrier-adapter",),
    # Keyed and partitioned as the dispatch topic. Each record waits one lap (the adapter's
    # SMSGW_DISPATCH_DEFER_LAP_SECONDS) after it was written, so a partition's records come due
    # in their order; a longer wait goes to a longer tier (DELAY_TIERS). A week, as the dispatch topic.
    retention_ms=7 * DAY_MS,
    description="Dispatch commands whose carrier could not take them for a while (DispatchDeferred), waiting "
    "here instead of in carrier-adapter until they are due on the dispatch topic again: the one-lap tier.",
)


def _delay_tier(laps: int) -> TopicSpec:
    return TopicSpec(
        name=f"smsgw.carrier-dispatch-delayed-x{laps}.v1",
        value_type=carrier_pb2.DispatchCommand,
        key="message id",
        writers=("carrier-adapter",),
        retention_ms=7 * DAY_MS,
        description=f"As smsgw.carrier-dispatch-delayed.v1, for commands that wait {laps} laps: each record is "
        f"due {laps} laps after it was written.",
    )


#: The delay topics by the laps a record waits on each (services/carrier_adapter/deferral.py,
#: "tiers"): every record of one tier waits as long, so each partition comes due in the order it
#: was written, and a wait of n laps is one write to the longest tier not above n (a few for a
#: wait that is not a power of two), not n writes to the one-lap tier.
DELAY_TIERS: dict[int, TopicSpec] = {1: CARRIER_DISPATCH_DELAYED} | {laps: _delay_tier(laps) for laps in (2, 4, 8, 16)}

CARRIER_REPORTS = TopicSpec(
    name="smsgw.carrier-reports.v1",
    value_type=carrier_pb2.CarrierReport,
    key="<carrier>/<normalised carrier message id>",
    writers=("carrier-adapter",),
    retention_ms=7 * DAY_MS,
    description="Submit correlations and delivery receipts in the carrier's id space, for receipt to match.",
)

SUBMIT_LEDGER = TopicSpec(
    name="smsgw.submit-ledger.v1",
    value_type=carrier_pb2.SubmitLedgerEntry,
    key="message id",
    writers=("carrier-adapter",),
    # As many partitions as the dispatch topic, keyed alike: a command and its ledger entries share
    # a partition number, so the replica given a dispatch partition reads the same ledger partition.
    # Read back only over the last minutes (the outcome look-back) when a partition is assigned.
    retention_ms=DAY_MS,
    description="carrier-adapter's submit intents (recorded before each attempt), attempts ended without an "
    "answer and a long message's parts taken so far: after a crash the next replica knows which commands "
    "may already be at their carrier.",
)

INBOUND_EVENTS = TopicSpec(
    name="smsgw.inbound-events.v1",
    value_type=events_pb2.EventEnvelope,
    key="<account id>/<subscriber number>",
    writers=("receipt",),
    retention_ms=-1,  # the opt-out list is rebuilt from it: kept forever
    description="Inbound (MO) messages and opt-out/opt-in facts, per account and subscriber.",
)

RECEIPT_ORPHANS = TopicSpec(
    name="smsgw.receipt-orphans.v1",
    value_type=carrier_pb2.CarrierReport,
    key="<carrier>/<normalised carrier message id>",
    writers=("receipt",),
    retention_ms=30 * DAY_MS,
    description="Delivery receipts that matched no message within the orphan window (for operators).",
)

ROUTING_RECORDS_CHANGELOG = TopicSpec(
    name="smsgw-routing-routing-records-changelog",
    value_type=events_pb2.EventEnvelope,  # JSON RoutingRecord; typed here only for the registry
    key="message id",
    writers=("routing",),
    cleanup_policy="compact",
    description="routing's per-message record (dedupe, held messages, cancellation), read back when a "
    "partition is assigned (smsgw.kafka.changelog); the name is the one faust gave it.",
)

RECEIPT_CORRELATIONS_CHANGELOG = TopicSpec(
    name="smsgw-receipt-receipt-correlations-changelog",
    value_type=carrier_pb2.CarrierReport,  # JSON CorrelationRecord
    key="<carrier>/<normalised carrier message id>",
    writers=("receipt",),
    cleanup_policy="compact",
    description="receipt's correlation records (carrier id -> message, early receipts), read back when a "
    "partition is assigned; the name is the one faust gave it.",
)

RECEIPT_MO_PARTS_CHANGELOG = TopicSpec(
    name="smsgw-receipt-receipt-mo-parts-changelog",
    value_type=carrier_pb2.CarrierReport,  # JSON SenderParts; typed here only for the registry
    key="<carrier>/mo/<sender>",
    writers=("receipt",),
    cleanup_policy="compact",
    description="receipt's parts of long inbound SMS still being joined (per sender), read back when a "
    "partition is assigned; the name is the one faust gave it.",
)

DEVICE_PRESENCE = TopicSpec(
    name="smsgw.device-presence.v1",
    value_type=device_relay_pb2.DevicePresence,
    key="<account id>/<device id>",
    writers=("carrier-adapter",),
    # A few small records per phone and minute, read whole by every replica: one partition is
    # one fetch per reader and one order for all of a phone's records.
    partitions=1,
    # One key per phone, rewritten every refresh interval: compaction keeps the last of each.
    cleanup_policy="compact",
    description="Which carrier-adapter replica holds each Android phone's stream (a tombstone when it ends); "
    "every replica reads all of it, without a group.",
)

CARRIER_CONNECTIONS = TopicSpec(
    name="smsgw.carrier-connections.v1",
    value_type=carrier_pb2.CarrierConnectionReported,
    key="<carrier>/<replica id>",
    writers=("carrier-adapter",),
    # A record per carrier and replica every few seconds, read whole by every routing and intake
    # replica: one partition is one fetch per reader.
    partitions=1,
    # One key per carrier and replica, rewritten every refresh: compaction keeps the last of each.
    cleanup_policy="compact",
    description="Whether each carrier-adapter replica is connected to each carrier with a connection of its "
    "own (SMPP binds, Android phones), refreshed every few seconds, a tombstone when the replica stops; routing "
    "skips a carrier reported by some replica and connected on none.",
)

ACCOUNT_EVENTS = TopicSpec(
    name="smsgw.account-events.v1",
    value_type=accounts_pb2.AccountEvent,
    key="account id",
    writers=("intake",),
    # A handful of records per account and key, read whole by every intake replica: one partition
    # is one fetch per reader and one order for all changes.
    partitions=1,
    retention_ms=-1,  # the directory of accounts and keys, and the audit trail: kept forever
    description="Accounts and API keys created, rotated and revoked, device tokens, route tables applied (the "
    "admin API's audit trail); every intake replica folds all of it into its directory of keys, every "
    "carrier-adapter its device tokens, every routing replica its route table.",
)

DEAD_LETTERS = TopicSpec(
    name="smsgw.dead-letters.v1",
    value_type=events_pb2.EventEnvelope,  # the record as read: whatever its source topic holds
    key="the source record's key",
    writers=("routing", "receipt", "carrier-adapter"),
    # A few records, read by operators (`smsgw dlq list`): one partition keeps them in one order.
    partitions=1,
    retention_ms=30 * DAY_MS,
    description="Records a service could not handle after repeated attempts, as read, with headers naming the "
    "source topic, partition and offset, the service and the error; `smsgw dlq replay` puts them back.",
)
PUBLIC_TOPICS = (MESSAGE_EVENTS, CARRIER_DISPATCH, CARRIER_REPORTS, INBOUND_EVENTS, RECEIPT_ORPHANS)
ALL_TOPICS = PUBLIC_TOPICS + (
    ROUTING_RECORDS_CHANGELOG,
    RECEIPT_CORRELATIONS_CHANGELOG,
    RECEIPT_MO_PARTS_CHANGELOG,
    DEVICE_PRESENCE,
    CARRIER_CONNECTIONS,
    ACCOUNT_EVENTS,
    DEAD_LETTERS,
    SUBMIT_LEDGER,
    *DELAY_TIERS.values(),
)


def topic_names(prefix: str = "") -> dict[str, str]:
    """Name of each topic, with an optional prefix (tests isolate runs by prefix)."""
    return {spec.name: prefix + spec.name for spec in ALL_TOPICS}
