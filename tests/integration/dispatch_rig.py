"""The real Dispatcher on a real broker, with carriers a test opens and closes (GatedCarrier).

Shared by the dispatcher's integration tests (parking, deferral to the delay topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter

from aiokafka.structs import TopicPartition

from smsgw.events.envelope import decode_event, derived_id, encode, new_event
from smsgw.events.topics import CARRIER_DISPATCH, CARRIER_REPORTS, MESSAGE_EVENTS, TopicSpec
from smsgw.kafka.clients import ensure_topics, make_group_consumer, make_producer, make_reader, wait_for_partitions
from smsgw.settings import ServiceSettings
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev
from smsgw_carrier_adapter.carrier import CarrierUnavailable, SubmitProgress, SubmitResult
from smsgw_carrier_adapter.dispatcher import SERVICE, Dispatcher
from smsgw_carrier_adapter.finished_outcomes import FinishedOutcomes
from smsgw_carrier_adapter.reports import ReportWriter
from smsgw_dev.platform import broker_env

SHARE, WINDOW = 5, 30


class GatedCarrier:
    """Refuses every submit (NOT_CONNECTED) until `up` is set; records who tried and who got in."""

    in_doubt_policy = "retry"
    concurrency = None
    connected = None

    def __init__(self, name: str, up: bool = True) -> None:
        self.name = name
        self.up = asyncio.Event()
        if up:
            self.up.set()
        self.tried: set[str] = set()
        self.accepted: Counter[str] = Counter()  # by command id
        self.accepted_messages: Counter[str] = Counter()  # by message id (a deferred one changes command id)

    async def submit(self, command: cp.DispatchCommand, progress: SubmitProgress | None = None) -> SubmitResult:
        self.tried.add(command.command_id)
        if not self.up.is_set():
            raise CarrierUnavailable(f"{self.name} is down", reason="NOT_CONNECTED")
        self.accepted[command.command_id] += 1
        self.accepted_messages[command.message_id] += 1
        return SubmitResult(carrier_ids=(f"{self.name}-{command.command_id}",))

    def holds_part_of(self, message_id: str) -> bool:
        return False

    def share_rate(self, share: float) -> None:
        """No rate limit here."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def dispatch_command(carrier: str, n: int) -> cp.DispatchCommand:
    return cp.DispatchCommand(
        command_id=f"{carrier}-{n}",
        message_id=f"m-{carrier}-{n}",
        account_id="acct",
        carrier=carrier,
        to="+14155550100",
        content=ev.MessageContent(text=f"{carrier} {n}"),
        segments=1,
        sequence=1,
    )


async def until(predicate, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


class Rig:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.producer = make_producer(settings)

    def dispatcher(
        self, carriers: list[GatedCarrier], finished_outcomes: FinishedOutcomes | None = None, **overrides
    ) -> Dispatcher:
        consumer = make_group_consumer(self.settings, "carrier-adapter", self.settings.topic(CARRIER_DISPATCH))
        return Dispatcher(
            consumer=consumer,
            producer=self.producer,
            events_topic=self.settings.topic(MESSAGE_EVENTS),
            reports=ReportWriter(self.producer, self.settings.topic(CARRIER_REPORTS), "test"),
            carriers={c.name: c for c in carriers},
            producer_name="test",
            retry_min=0.05,
            retry_max=0.2,
            max_in_flight=WINDOW,
            max_in_flight_per_carrier=SHARE,
            drain_timeout=2.0,
            finished_outcomes=finished_outcomes,
            make_reader=lambda: make_reader(self.settings, bounded=True),
            **overrides,
        )

    async def run(self, dispatcher: Dispatcher):
        await dispatcher.consumer.start()
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        await asyncio.wait_for(dispatcher.assigned.wait(), 30)
        return stop, task

    async def stop(self, dispatcher: Dispatcher, stop: asyncio.Event, task: asyncio.Task) -> None:
        stop.set()
        await asyncio.wait_for(task, 30)
        await dispatcher.consumer.stop()

    async def send(self, commands: list[cp.DispatchCommand]) -> None:
        for command in commands:
            await self.producer.send_and_wait(
                self.settings.topic(CARRIER_DISPATCH),
                key=command.message_id.encode(),
                value=command.SerializeToString(),
            )


@contextlib.asynccontextmanager
async def open_rig(broker, tmp_path, monkeypatch):
    """A Rig on its own topics of `broker`, its producer started."""
    for name, value in broker_env(broker.kind).items():
        monkeypatch.setenv(name, value)
    settings = ServiceSettings(
        kafka_bootstrap=broker.bootstrap, topic_prefix=f"dp{uuid.uuid4().hex[:8]}.", state_dir=str(tmp_path / "state")
    )
    await ensure_topics(broker.bootstrap, settings.topic_prefix)
    rig = Rig(settings)
    await rig.producer.start()
    yield rig
    await rig.producer.stop()


async def accepted_before_a_crash(rig, command: cp.DispatchCommand, carrier_ids: list[str] | None = None) -> None:
    """CarrierAccepted for `command`, as an adapter writes it just before it is killed: its
    offset in the dispatch topic was never committed (nor, maybe, its correlations written)."""
    accepted = new_event(
        ev.CarrierAccepted(
            carrier=command.carrier,
            carrier_message_ids=carrier_ids or [f"sim-{command.command_id}"],
            segments=len(carrier_ids or [None]),
        ),
        service=SERVICE,
        producer="killed-adapter",
        message_id=command.message_id,
        account_id=command.account_id,
        sequence=command.sequence + 2,
        event_id=derived_id(command.command_id, "outcome"),
        causation_id=command.command_id,
    )
    await rig.producer.send_and_wait(
        rig.settings.topic(MESSAGE_EVENTS), key=command.message_id.encode(), value=encode(accepted)
    )


async def read_until(rig, spec: TopicSpec, on_record, done, timeout: float, what: str) -> None:
    """Reads one of the rig's topics from its beginning, handing each record to `on_record`,
    until `done()` (or fails after `timeout` seconds)."""
    reader = make_reader(rig.settings)
    await reader.start()
    try:
        topic = rig.settings.topic(spec)
        partitions = [TopicPartition(topic, p) for p in await wait_for_partitions(rig.settings.kafka_bootstrap, topic)]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            assert loop.time() < deadline, f"timed out waiting for {what}"
            for records in (await reader.getmany(timeout_ms=200)).values():
                for record in records:
                    on_record(record)
    finally:
        await reader.stop()


async def events_of(rig, message_ids: set[str], kinds: set[str], timeout: float) -> dict[str, list[str]]:
    """The payload kinds written for each message, once each has one of `kinds`."""
    found: dict[str, list[str]] = {m: [] for m in message_ids}

    def on_record(record) -> None:
        envelope = decode_event(record.value)
        if envelope.message_id in found:
            found[envelope.message_id].append(envelope.WhichOneof("payload"))

    await read_until(
        rig,
        MESSAGE_EVENTS,
        on_record,
        lambda: all(kinds & set(found[m]) for m in message_ids),
        timeout,
        f"{kinds}: {found}",
    )
    return found


async def correlations_of(rig, keys: set[str], timeout: float) -> dict[str, tuple[str, int, int, int]]:
    """The SubmitCorrelated on the carrier-reports topic under `keys`, once all are there:
    (message id, part index, total parts, sequence) by key."""
    found: dict[str, tuple[str, int, int, int]] = {}

    def on_record(record) -> None:
        report = cp.CarrierReport.FromString(record.value)
        if report.WhichOneof("report") == "submit_correlated":
            sc = report.submit_correlated
            found[record.key.decode()] = (sc.message_id, sc.part_index, sc.total_parts, sc.sequence)

    await read_until(
        rig, CARRIER_REPORTS, on_record, lambda: keys <= found.keys(), timeout, f"the correlations of {keys}: {found}"
    )
    return found
