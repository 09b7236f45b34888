"""Feeds webhooks from the logs: a status transition of a message, or an inbound message.

Its own consumer group over the message-events and inbound topics. A partition's
offset is committed only up to the first record whose webhook is not yet settled
(delivered or dead-lettered), so an unsettled webhook lives on in Kafka and is
sent again after a crash, with the same event id (receivers dedupe by it).

The state a webhook describes is the fold of the message's events; on each
assignment the partition is re-read up to its committed offset (folding only),
so a replica that takes over a partition knows every message in flight in it.
Only messages that have a webhook URL and are not final are held.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from google.protobuf.message import DecodeError
from opentelemetry.metrics import Meter, Observation

from smsgw.domain.message_state import MessageState, apply
from smsgw.events.envelope import decode_event
from smsgw.kafka.connection import KafkaConnection
from smsgw.kafka.predecessor import MemberFile, start_in_place, stop_in_place
from smsgw.v1 import events_pb2 as ev
from smsgw.views import inbound_view

from .webhooks.accounts import AccountSecrets
from .webhooks.delivery import WebhookDispatcher
from .webhooks.payload import Webhook, encode_body, status_webhook_after

log = logging.getLogger(__name__)
INBOUND_TYPE = "message.inbound"


def inbound_webhook(envelope: ev.EventEnvelope, url: str) -> Webhook | None:
    """An inbound (MO) message to the account's webhook URL."""
    if not url or envelope.WhichOneof("payload") != "inbound_message_received":
        return None
    from google.protobuf.json_format import MessageToDict

    body = {
        "event_id": envelope.event_id,
        "type": INBOUND_TYPE,
        "occurred_at": envelope.occurred_at.ToJsonString(),
        "inbound": MessageToDict(inbound_view(envelope), preserving_proto_field_name=True),
    }
    return Webhook(url=url, account_id=envelope.account_id, event_id=envelope.event_id, body=encode_body(body))


class _Watermarks:
    """Per partition: the offsets whose webhooks are unsettled, and the next offset to read."""

    def __init__(self) -> None:
        self.unsettled: dict[TopicPartition, set[int]] = {}
        self.next_offset: dict[TopicPartition, int] = {}

    def seen(self, tp: TopicPartition, offset: int) -> None:
        self.next_offset[tp] = offset + 1

    def hold(self, tp: TopicPartition, offset: int) -> None:
        self.unsettled.setdefault(tp, set()).add(offset)

    def settle(self, tp: TopicPartition, offset: int) -> None:
        self.unsettled.get(tp, set()).discard(offset)

    def committable(self) -> dict[TopicPartition, int]:
        return {tp: min(self.unsettled.get(tp) or {nxt}) for tp, nxt in self.next_offset.items()}

    def forget(self, tps) -> None:
        """A partition given up: nothing is committed for it until it is read again. Its unsettled
        offsets stay until their webhooks settle: given back to this member (a rejoin after the
        brokers were unreachable gives the same partitions back), its commits must not pass a
        webhook still queued from before, which a crash would lose (a full-cluster restart under
        `make chaos` left webhooks unsent that way)."""
        for tp in tps:
            self.next_offset.pop(tp, None)


class WebhookFeed(ConsumerRebalanceListener):
    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        kafka: KafkaConnection,
        events_topic: str,
        inbound_topic: str,
        dispatcher: WebhookDispatcher,
        secrets: AccountSecrets,
        fetch_max_wait_ms: int = 500,
        store_retry_delay: float = 1.0,
        max_poll_records: int = 1000,
        crowded_wait: float = 0.05,
        member_file: MemberFile | None = None,
    ):
        self.consumer = consumer
        #: Where this process records its group member id for the next one here (predecessor.py).
        self.member_file = member_file
        self.max_poll_records = max_poll_records
        self.crowded_wait = crowded_wait
        self.kafka = kafka
        self.events_topic = events_topic
        self.inbound_topic = inbound_topic
        self.dispatcher = dispatcher
        self.secrets = secrets
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.states: dict[str, MessageState] = {}
        self.marks = _Watermarks()
        self.assigned = asyncio.Event()
        #: Events partitions whose state is rebuilt: only their records are handled. aiokafka hands
        #: out a newly assigned partition's records while on_partitions_assigned still runs, and a
        #: record handled before the fold of its message's earlier events found no state and sent
        #: no webhook (a full-cluster restart under `make chaos` lost the last webhooks that way).
        self.rebuilt: set[TopicPartition] = set()
        self.failure: Exception | None = None
        self.store_retry_delay = store_retry_delay
        #: A webhook the store could not take (disk full), with its event's position: the feed
        #: reads nothing further until it is written (_write_unwritten).
        self.unwritten: tuple[Webhook, TopicPartition, int, Exception] | None = None
        #: Times the webhook store refused a pending row since start (each retried).
        self.store_failures = 0

    def instrument(self, meter: Meter) -> None:
        meter.create_observable_counter(
            "smsgw_webhook_store_failures",
            callbacks=[lambda _: [Observation(self.store_failures)]],
            description="pending webhooks the webhook store could not take (disk full); the feed held and retried",
        )
        meter.create_observable_gauge(
            "smsgw_webhook_feed_held",
            callbacks=[lambda _: [Observation(0 if self.unwritten is None else 1)]],
            description="1 while the webhook feed holds because its store cannot be written",
        )

    async def start(self) -> None:
        self.consumer.subscribe([self.events_topic, self.inbound_topic], listener=self)
        await start_in_place(self.consumer, self.member_file, self.kafka)

    # -- rebalance ---------------------------------------------------------------------
    async def on_partitions_revoked(self, revoked) -> None:
        self.rebuilt.difference_update(revoked)
        if revoked:
            await self._commit()
            self.marks.forget(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        if self.member_file is not None:
            self.member_file.remember(self.consumer)
        events = [tp for tp in assigned if tp.topic == self.events_topic]
        if events:
            self.consumer.pause(*events)  # nothing of them is handled before their state is rebuilt
            try:
                await self._rebuild(events)
            except Exception as error:
                # aiokafka logs a listener's error and goes on: run() raises it instead (the process
                # ends and is started again) rather than send webhooks from a state never rebuilt.
                self.failure = error
                raise
            self.rebuilt.update(events)
            self.consumer.resume(*events)
        self.assigned.set()

    async def _rebuild(self, tps: list[TopicPartition]) -> None:
        """Folds each partition up to its committed offset, sending nothing."""
        targets = {tp: (await self.consumer.committed(tp)) or 0 for tp in tps}
        log.info(
            "webhook feed assigned %s: committed offsets %s",
            sorted(tp.partition for tp in tps),
            {tp.partition: offset for tp, offset in sorted(targets.items())},
        )
        targets = {tp: end for tp, end in targets.items() if end > 0}
        if not targets:
            return
        reader = AIOKafkaConsumer(
            **self.kafka.client_kwargs(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        await reader.start()
        try:
            reader.assign(list(targets))
            await reader.seek_to_beginning(*targets)
            remaining = dict(targets)
            while remaining:
                for tp, records in (await reader.getmany(timeout_ms=200, max_records=2000)).items():
                    for record in records:
                        if record.offset < targets[tp]:
                            try:
                                envelope = decode_event(record.value)
                            except DecodeError:  # one undecodable record must not stop the feed
                                log.warning("skipping undecodable record %s@%d", tp, record.offset)
                                continue
                            self._fold(envelope)
                for tp in list(remaining):
                    if await reader.position(tp) >= remaining[tp]:
                        del remaining[tp]
        finally:
            await reader.stop()
        log.info("webhook feed rebuilt %d messages for %d partitions", len(self.states), len(targets))

    # -- the loop ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, commit_interval: float = 0.5) -> None:
        loop = asyncio.get_running_loop()
        last_commit = loop.time()
        while not stop.is_set():
            if self.failure is not None:
                raise self.failure
            if loop.time() - last_commit >= commit_interval:
                await self._commit()
                last_commit = loop.time()
            # Backpressure: while a healthy endpoint's queue is half full nothing is read, and then
            # no more events than the fullest one has room for (a poll of 1,000 into a half-full
            # queue dead-lettered 273,000 webhooks "queue full" in a 30-minute soak at 250 messages/s
            # with the endpoint up). What is not read is not committed: nothing is lost by waiting.
            # Waiting, not `consumer.pause`: aiokafka drops the records it fetched for a paused
            # partition, each set left as a reference cycle holding its fetch buffer (up to 1 MiB)
            # until a full garbage collection; pausing on every crowded poll held ~150 of them,
            # 150-450 MiB of receipt's memory, in the same soak.
            if self.dispatcher.crowded():
                await asyncio.sleep(self.crowded_wait)
                continue
            batches = await self.consumer.getmany(
                timeout_ms=200, max_records=max(1, min(self.max_poll_records, self.dispatcher.headroom()))
            )
            for tp, records in batches.items():
                if tp.topic == self.events_topic and tp not in self.rebuilt:
                    self.consumer.seek(tp, records[0].offset)  # read again once its state is rebuilt
                    continue
                for record in records:
                    self._handle(tp, record.offset, record.value)
                    if self.unwritten is not None:
                        await self._write_unwritten(stop)
        await self._commit()

    def _fold(self, envelope: ev.EventEnvelope) -> MessageState | None:
        """The message's state after `envelope`; None for a message no webhook is ever sent for.

        Whether a message has a webhook is known from its MessageQueued (its own
        status_callback_url, or its account's default URL), which comes first in its
        partition: the state of a message without one is never kept, and its later events
        cost a dictionary lookup instead of a fold."""
        previous = self.states.get(envelope.message_id)
        if previous is None:
            if envelope.WhichOneof("payload") != "message_queued":
                return None
            if not (
                envelope.message_queued.status_callback_url or self.secrets.default_callback_url(envelope.account_id)
            ):
                return None
        state = apply(previous, envelope)
        if state.is_final:
            # A final status never changes, so no later event of the message makes a webhook:
            # its state is not kept (memory holds the messages in flight, not every message).
            self.states.pop(envelope.message_id, None)
        else:
            self.states[envelope.message_id] = state
        return state

    def _handle(self, tp: TopicPartition, offset: int, value: bytes) -> None:
        self.marks.seen(tp, offset)
        try:
            envelope = decode_event(value)
        except Exception:
            log.exception("skipping undecodable record %s@%d", tp, offset)
            return
        if tp.topic == self.inbound_topic:
            hook = inbound_webhook(envelope, self.secrets.default_callback_url(envelope.account_id))
        else:
            state = self._fold(envelope)
            hook = (
                None
                if state is None
                else status_webhook_after(
                    state, envelope, account_default_url=self.secrets.default_callback_url(envelope.account_id)
                )
            )
        if hook is None:
            return
        self.marks.hold(tp, offset)
        self._enqueue(hook, tp, offset)

    def _enqueue(self, hook: Webhook, tp: TopicPartition, offset: int) -> bool:
        try:
            self.dispatcher.enqueue(hook, on_settled=lambda: self.marks.settle(tp, offset))
        except (sqlite3.Error, OSError) as error:
            self.store_failures += 1
            self.unwritten = (hook, tp, offset, error)
            return False
        return True

    async def _write_unwritten(self, stop: asyncio.Event) -> None:
        """The store refused a webhook's pending row (its disk full, its file gone): the feed
        holds there, retrying every `store_retry_delay` seconds, and reads on once it is written.
        Nothing is lost meanwhile: the event's offset stays held, so nothing after it is committed;
        the rest of the receipt service (matching receipts) goes on."""
        assert self.unwritten is not None
        hook, tp, offset, error = self.unwritten
        log.error(
            "the webhook store cannot be written (%s): the webhook feed holds at %s@%d and tries again every "
            "%.0f s; no webhook is lost (the events from there are read again after a restart)",
            error,
            tp,
            offset,
            self.store_retry_delay,
        )
        tries = 1
        while not stop.is_set():
            await asyncio.sleep(self.store_retry_delay)
            tries += 1
            if self._enqueue(hook, tp, offset):
                self.unwritten = None
                log.info("the webhook store takes writes again (after %d tries): the webhook feed reads on", tries)
                return
            if tries % 30 == 0:
                log.warning("the webhook store still cannot be written (%d tries): %s", tries, self.unwritten[3])

    async def _commit(self) -> None:
        offsets = {tp: off for tp, off in self.marks.committable().items() if tp in self.consumer.assignment()}
        if offsets:
            try:
                await self.consumer.commit(offsets)
            except Exception as exc:  # noqa: BLE001 - a rebalance in flight: the next commit catches up
                log.info("webhook offsets not committed (%s); will retry", exc)

    async def stop(self) -> None:
        await stop_in_place(self.consumer, self.member_file)
