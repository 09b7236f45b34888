"""Takes dispatch commands off the topic and hands them to carriers.

At least once: a partition's offset is committed only past commands that have a
recorded outcome (CarrierAccepted or MessageFailed). A carrier that is down
holds its own commands (they wait and retry) instead of failing or dropping
them, while the other carriers' commands go on.

Over 500 lines on purpose: one consume loop and the per-run state it commits from (marks,
parking, rewinds, the held-commit metadata); its pieces are only correct together, and the
carrier clients, outcomes and parking already live in their own modules.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError

from smsgw.dead_letters import letter_headers
from smsgw.domain.phone import numbers_masked
from smsgw.events.envelope import derived_id, encode, new_event, timestamp
from smsgw.kafka.aiokafka_internals import committed_with_metadata
from smsgw.kafka.predecessor import MemberFile
from smsgw.kafka.session_fence import SessionFence
from smsgw.lanes import lane_of
from smsgw.telemetry import kafka_headers, message_scope, tracer
from smsgw.v1 import carrier_pb2 as cp
from smsgw.v1 import events_pb2 as ev

from .attempt_record import UnrecordedAttempts, attempt_is_recorded
from .carrier import CarrierClient, CarrierUnavailable, SubmitResult
from .deferral import DelayTiers, laps_for, validity_left
from .finished_outcomes import FinishedOutcomes, Found
from .offsets import OffsetWatermarks
from .parking import CarrierParking, Queue, carrier_shares
from .recent_commands import DEFAULT_WINDOW, RecentCommands
from .recent_records import Lookup, read_lookups
from .reports import ReportWriter
from .retry_backoff import RetryBackoff
from .submit_ledger import Started, SubmitLedger

log = logging.getLogger(__name__)
SERVICE = "carrier-adapter"
#: The consumer group of the dispatch topic (prefixed by SMSGW_TOPIC_PREFIX, as topics are).
DISPATCH_GROUP = "carrier-adapter"
_tracer = tracer("smsgw.carrier_adapter")


class Dispatcher:
    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        events_topic: str,
        reports: ReportWriter,
        carriers: dict[str, CarrierClient],
        producer_name: str,
        retry_min: float = 0.2,
        retry_max: float = 5.0,
        max_in_flight: int = 2000,
        max_in_flight_per_carrier: int = 100,
        max_parked: int = 100_000,
        parked_in_memory: int = 20_000,
        drain_timeout: float = 10.0,
        commit_interval: float = 0.05,
        dedupe_window: int = DEFAULT_WINDOW,
        dispatch_topic: str = "",
        failover_after: float = 30.0,
        failover_after_attempts: int = 0,
        group: str = DISPATCH_GROUP,
        finished_outcomes: FinishedOutcomes | None = None,
        submit_ledger: SubmitLedger | None = None,
        fence: SessionFence | None = None,
        make_reader: Callable[[], AIOKafkaConsumer] | None = None,
        handover_timeout: float = 1.0,
        delay_tiers: DelayTiers | None = None,
        defer_after: float = 0.0,
        defer_longest: float = 600.0,
        dead_letter_topic: str = "",
        member_file: MemberFile | None = None,
    ):
        self.consumer = consumer
        #: Where this process records its group member id for the next one here (predecessor.py).
        self.member_file = member_file
        self.producer = producer
        self.events_topic = events_topic
        self.reports = reports
        self.carriers = carriers
        self.producer_name = producer_name
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.max_in_flight = max_in_flight
        self.max_parked = max_parked
        #: Times a partition was read again for parked commands not kept in memory (a metric).
        self.parked_rereads = 0
        #: Where a dispatch command this replica cannot decode goes (smsgw dlq list|replay), so
        #: that the partition goes on; "" (tests): the replica stops on it instead.
        self.dead_letter_topic = dead_letter_topic
        self.dead_lettered = 0  # a metric (smsgw_dead_lettered)
        self.drain_timeout = drain_timeout
        # A commit is a broker round trip: under load one per poll was a request every few ms.
        # Committing at most this often costs only a slightly longer replay after a crash.
        self.commit_interval = commit_interval
        self.dedupe_window = dedupe_window
        #: Where a message rerouted to another carrier of its route goes (a new command), and
        #: after how long a carrier that cannot take it (nothing sent) gives it up; 0: never.
        self.dispatch_topic = dispatch_topic
        self.failover_after = failover_after
        self.failover_after_attempts = failover_after_attempts
        #: Where a message whose carrier has failed it for `defer_after` seconds waits (deferral.py):
        #: the delay tiers, the wait a lap and doubling per deferral up to `defer_longest`; 0 or None: never.
        self.delay_tiers = delay_tiers
        self.defer_after = defer_after
        self.defer_lap = delay_tiers.lap if delay_tiers is not None else 0.0
        self.defer_longest = defer_longest
        #: Per carrier, since when (seconds since the epoch) its submits have all failed on this
        #: replica: a command that comes back from the delay topic to a carrier still down is
        #: deferred again after one attempt, not after `defer_after` more seconds.
        self.unavailable_since: dict[str, float] = {}
        #: Messages deferred to the delay topic, by carrier (a metric).
        self.deferred: collections.Counter[str] = collections.Counter()
        #: Copies of a command routing published twice (recent_commands.py), skipped (read by tests and metrics).
        self.copies_skipped = 0
        #: Messages handed to another carrier of their route (MessageRerouted).
        self.rerouted = 0
        #: Reads the events of newly assigned partitions for commands finished but not committed
        #: before a crash (finished_outcomes.py); None: not looked up (tests of other things).
        self.finished_outcomes = finished_outcomes
        #: Commands not submitted again because their outcome was already in the events (a metric).
        self.outcomes_found = 0
        #: Where each attempt's intent is recorded before it goes out, and read back on assignment
        #: (submit_ledger.py); None: not recorded (tests of other things).
        if submit_ledger is not None and finished_outcomes is None:
            # Every finished command has an intent without an end in the ledger: only the outcomes
            # in the events tell a finished command from one left in doubt.
            raise ValueError("a submit ledger needs the finished outcomes look-up")
        if finished_outcomes is not None and make_reader is None:
            raise ValueError("the finished outcomes look-up needs make_reader (its reader)")
        self.submit_ledger = submit_ledger
        #: Checked before each submit: a process that stood still past its group session no longer
        #: owns its commands (session_fence.py); None: not checked (tests of other things).
        self.fence = fence
        #: Makes the reader of what newly assigned partitions' last readers did (`_look_up`);
        #: None: not read (tests of other things).
        self.make_reader = make_reader
        #: How long the commands running when the group takes this member's partitions get to
        #: finish before they go (`hand_over`).
        self.handover_timeout = handover_timeout
        #: Rebalances begun so far (hand-overs). Records a poll returned are started only if no
        #: rebalance began since: their partition may be another's by then, and the new assignment
        #: reads it again from its commit (aiokafka sets each assigned partition's position anew).
        #: The look-ups of new partitions between the poll and the start can outlast a whole
        #: rebalance, so "is one under way" is not enough. Records returned after a rebalance
        #: began are the new assignment's (aiokafka returns none while it is under way): started,
        #: even before the listener's `on_partitions_assigned` has run.
        self.rebalances = 0
        #: Partitions the group took from this member since the run loop last looked: their state
        #: is dropped even if the group gave them back meanwhile (another member may have read
        #: and committed them in between; the commit, not this member's memory, says where they are).
        self.taken: set = set()
        #: What the group gave this member last (to tell which partitions it took since).
        self.given: set = set()
        # Subscribed again to the topic it was made with, now with the hand-over before each rebalance.
        consumer.subscribe(sorted(consumer.subscription()), listener=_HandOver(self))
        #: Attempts a replica that died left without an answer, by (carrier, in_doubt policy): a metric.
        self.restart_doubts: collections.Counter[tuple[str, str]] = collections.Counter()
        #: Submits tried again after the carrier could not take them, by (carrier, reason): a metric.
        self.retries: collections.Counter[tuple[str, str]] = collections.Counter()
        #: For the lag metric (smsgw.kafka.lag): the group and topic this member reads, and the run.
        self.group = group
        self.topic = dispatch_topic
        self._run: _DispatchRun | None = None
        self._next_commit = 0.0  # loop time before which no commit is made (commit_interval)
        self.assigned = asyncio.Event()
        #: Running and parked commands per carrier (read by the metrics); at most
        #: `parked_in_memory` parked ones kept in memory, started from there when their carrier
        #: has room (the others are read again from the topic; 0: none kept).
        self.parking = CarrierParking(
            max_in_flight_per_carrier,
            keep=parked_in_memory,
            shares=carrier_shares({name: c.concurrency for name, c in carriers.items()}, max_in_flight_per_carrier),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Each command in its own task, so a carrier that is down holds only its own commands:
        the others finish and new ones keep coming. A partition's commit stops at its oldest
        command without an outcome (OffsetWatermarks).

        A carrier runs at most its share of commands at once (`max_in_flight_per_carrier`, or twice
        what the carrier takes at once itself if that is more); its further commands
        are parked (CarrierParking: their offsets, the first `parked_in_memory` whole) and start once it has
        drained, so a carrier that is down or slow never fills the window the others need. At
        most `max_in_flight` tasks and `max_parked` parked commands at once; beyond that the
        partitions are paused (polling goes on, so the group keeps us)."""
        run = self._run = _DispatchRun(self, stop)
        loop = asyncio.get_running_loop()
        self._next_commit = loop.time()
        shared_for: set = set()
        committer = asyncio.create_task(self._commit_when_finished(run))
        fencing = asyncio.create_task(self.fence.run(stop)) if self.fence is not None else None
        try:
            while not stop.is_set() and not run.failures:
                assignment = self.consumer.assignment()
                if assignment:
                    self.assigned.set()
                if assignment != shared_for:
                    shared_for = set(assignment)
                    self._share_carrier_rates(shared_for)
                room = self.max_in_flight - len(run.tasks)
                if assignment:
                    paused = self._to_pause(assignment, room, run)
                    self.consumer.pause(*paused)
                    self.consumer.resume(*(assignment - paused))
                batches = await self.consumer.getmany(timeout_ms=100, max_records=max(1, min(500, room)))
                generation = self.rebalances  # no await since the poll returned
                taken, self.taken = self.taken, set()
                for tp in (run.marks.partitions() - set(self.consumer.assignment())) | taken:
                    run.revoked(tp)  # its new owner starts from our last commit
                new = [tp for tp in batches if not run.marks.is_tracked(tp)]
                if new:
                    commits = await self._last_commits(new)
                    for tp, (committed, metadata) in commits.items():
                        run.marks.resume(tp, committed, metadata)
                    await self._look_up(new, commits, run)
                if self.rebalances != generation:
                    # Polled before the hand-over's commit: started now, a command could be its
                    # partition's next reader's too. The new assignment reads it again from its commit.
                    continue
                for tp, records in batches.items():
                    run.read(tp, records)
                owned = set(self.consumer.assignment())
                for tp, offset in self.parking.rewinds().items():
                    if tp in owned and tp not in run.rewinding and offset <= run.newest.get(tp, -1):
                        reread_from = run.start_kept(tp)
                        if reread_from is not None:
                            run.rewinding[tp] = run.newest[tp]
                            self.consumer.seek(tp, reread_from)
                            self.parked_rereads += 1
                if loop.time() >= self._next_commit:
                    self._next_commit = loop.time() + self.commit_interval
                    await self._commit_finished(run.marks)
                if committer.done():
                    await committer  # it ended only by an error: raise it (the process exits)
                if fencing is not None and fencing.done():
                    await fencing  # SessionLost: the process exits, its partitions are another's
            if run.failures:
                # The process exits; what was not committed is redelivered.
                raise run.failures[0]
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            if fencing is not None:
                fencing.cancel()
                await asyncio.gather(fencing, return_exceptions=True)
            if run.tasks:
                # Stopping: submits waiting on a carrier end at once (CarrierUnavailable); others finish.
                _done, pending = await asyncio.wait(set(run.tasks), timeout=self.drain_timeout)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            await self._commit_finished(run.marks)

    async def _commit_when_finished(self, run: _DispatchRun) -> None:
        """Commits soon after a command finishes (at most once a `commit_interval`), not at the
        poll loop's next turn, which waits up to 100 ms for records when the topic is quiet: a
        kill -9 in between would have the command submitted again by whoever reads its partition
        next. What is left of that window is the commit's round trip and the outcome's write."""
        loop = asyncio.get_running_loop()
        while True:
            await run.newly_finished.wait()
            run.newly_finished.clear()
            if (wait := self._next_commit - loop.time()) > 0:
                await asyncio.sleep(wait)
            self._next_commit = loop.time() + self.commit_interval
            await self._commit_finished(run.marks)

    async def hand_over(self) -> None:
        """Before the group moves partitions (eagerly: all of this member's, even those it gets
        back), the commands running get up to `handover_timeout` to finish and what finished is
        committed, so the partitions' next readers neither submit those again nor take them for
        commands left in doubt by a crash. One still running then is its next reader's (the
        submit ledger's in-doubt path, as after a crash)."""
        self.rebalances += 1
        run = self._run
        if run is None:
            return
        if run.tasks:
            await asyncio.wait(set(run.tasks), timeout=self.handover_timeout)
        await self._commit_finished(run.marks)

    def lag(self) -> dict[int, int]:
        """Commands not read yet, per owned partition of the dispatch topic: the broker's end as
        last reported minus the next offset to read (what KEDA scales on, docs/metrics.md)."""
        run = self._run
        if run is None:
            return {}
        behind = {}
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is not None and tp in run.newest:
                behind[tp.partition] = max(0, highwater - run.newest[tp] - 1)
        return dict(sorted(behind.items()))

    def _to_pause(self, assignment: set, room: int, run: _DispatchRun) -> set:
        """The partitions not to read from now. All of them while `max_in_flight` tasks run (they
        end by themselves). With `max_parked` commands parked, all but those read again after a
        rewind: a parked command starts only when its partition reads it again, and until the
        re-read catches up it reads only commands already counted (parked, running or finished),
        so it adds none. Paused too, a full parking never emptied: its carrier back (or its
        commands deferred), nothing started again and every partition stayed paused for good."""
        if room <= 0:
            return set(assignment)
        if self.parking.parked() >= self.max_parked:
            return {tp for tp in assignment if tp not in run.rewinding}
        return set()

    def _share_carrier_rates(self, assignment: set) -> None:
        """A carrier's rate limit holds for the whole group: each replica takes the share of it
        that its partitions are of the dispatch topic's (messages spread over partitions by id,
        so that is its share of the traffic). Three replicas with four partitions each send a
        100-TPS carrier 33.3 submits a second each."""
        topics = {tp.topic for tp in assignment}  # the dispatch topic: the consumer reads only it
        if len(topics) != 1:
            return  # nothing assigned (nothing to send): keep the share it had
        partitions = self.consumer.partitions_for_topic(topics.pop()) or set()
        owned = len(assignment)
        if not partitions:
            return
        share = min(1.0, owned / len(partitions))
        for client in self.carriers.values():
            client.share_rate(share)
        log.info("carrier rate limits: this replica takes %d/%d of each", owned, len(partitions))

    async def _look_up(self, new: list, commits: dict, run: _DispatchRun) -> None:
        """What the newly assigned partitions' last readers did, read with one reader
        (recent_records.py): the ids of the commands up to `dedupe_window` records before each
        commit, so that a copy of one after the commit is known as a copy; what the submit ledger
        says of the commands a replica had started; which commands have their outcome in the
        events. The ledger before the events (see recent_records.py). The look-back is read by
        that reader, not this consumer, which stays at the commit. (It once sought back and read
        them itself; a rebalance that left it the partition set its position back to the commit
        meanwhile, and everything after was taken for the look-back's records and skipped: the
        partition stalled.)"""
        if self.make_reader is None:
            return
        numbers = {tp.partition for tp in new}
        lookups: list[Lookup] = []
        rerouted: dict[int, set[str]] = {}
        dispatch = self._dispatch_look_back(new, commits, run, rerouted)
        lookups.append(dispatch)
        started: dict[int, dict[str, Started]] = {}
        found: dict[int, Found] = {}
        if self.submit_ledger is not None:
            ledger, started = self.submit_ledger.lookup(numbers)
            lookups.append(ledger)
        if self.finished_outcomes is not None:
            outcomes, found = self.finished_outcomes.lookup(numbers)
            lookups.append(outcomes)
            lookups.extend(self.finished_outcomes.deferred(numbers, found))
        total = len(self.consumer.partitions_for_topic(new[0].topic) or ())
        began = time.monotonic()
        await read_lookups(self.make_reader, lookups, total, self.producer.partitions_for)
        log.info(
            "partitions %s taken up in %.0f ms: %s",
            sorted(numbers),
            (time.monotonic() - began) * 1000,
            "; ".join(f"{lookup.topic}: {lookup.records} records read" for lookup in lookups) or "nothing to read",
        )
        for partition, ids in rerouted.items():
            for command_id in ids:
                found.setdefault(partition, {}).setdefault(command_id, ())
        # The ends the reader took, before the other look-ups' (so no command the events show
        # finished is past them); asked of this consumer, they waited behind its held fetch.
        ends = {tp: dispatch.ends.get(tp.partition, 0) for tp in new}
        run.learned(new, found, started, ends)

    def _dispatch_look_back(self, new: list, commits: dict, run: _DispatchRun, rerouted: dict) -> Lookup:
        """The read of the new partitions of the dispatch topic itself: the `dedupe_window`
        records before each commit, for their ids (a copy after the commit is known as one), and
        the records from the commit to the end, for the commands rerouted there
        (`rerouted_from`): a command whose successor for the next carrier is on the topic is
        finished, even if the replica that rerouted it died before its commit. Handled again, it
        would go to its first carrier if that one is back, while its successor goes to the next.
        A partition never committed is read over the outcome look-back's time only."""
        topic = new[0].topic
        commit_of = {tp.partition: offset or 0 for tp, (offset, _metadata) in commits.items()}
        lookback = self.finished_outcomes.lookback_seconds if self.finished_outcomes is not None else 0.0
        # The reader takes every offset: this consumer's requests would wait behind its held fetch.
        starts: dict[int, int | None] = {
            tp.partition: (
                max(0, commit_of[tp.partition] - self.dedupe_window) if commit_of.get(tp.partition) else None
            )
            for tp in new
        }

        def on_record(partition: int, record) -> None:
            try:
                command = _command(record.value)
            except DecodeError:
                return  # no command: the partition's own read dead-letters it, or did before its commit
            if record.offset < commit_of.get(partition, 0):
                run.recent.add(TopicPartition(topic, partition), command.command_id)
            elif command.rerouted_from:
                rerouted.setdefault(partition, set()).add(command.rerouted_from)

        return Lookup(
            topic,
            {tp.partition for tp in new},
            on_record,
            since_ms=int((time.time() - lookback) * 1000),
            starts=starts,
        )

    async def _commit_finished(self, marks: OffsetWatermarks) -> None:
        owned = set(self.consumer.assignment())
        offsets = {
            tp: OffsetAndMetadata(offset, metadata)
            for tp, (offset, metadata) in marks.committable().items()
            if tp in owned
        }
        if offsets:
            await self._commit(offsets)

    async def _last_commits(self, partitions: list) -> dict:
        """Each partition's last committed offset with its metadata (which commands beyond it
        were finished)."""
        return await committed_with_metadata(self.consumer, partitions)

    async def _commit(self, offsets) -> None:
        """Commits exactly what was handled. A commit refused because the group rebalanced meanwhile
        is not fatal: the batch is redelivered to the partition's new owner (a duplicate, never a loss)."""
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            log.warning("offsets %s not committed (%s); the new owner will redeliver them", offsets, exc)

    async def handle(self, command: cp.DispatchCommand, stop: asyncio.Event, started: Started | None = None) -> None:
        """Submits the command and writes its outcome. `started`: what the submit ledger says a
        replica that died did with it (the dispatcher's look-up when the partition was assigned)."""
        with message_scope(
            _tracer,
            "carrier_adapter.dispatch",
            command.message_id,
            command.trace_context,
            attributes={"smsgw.carrier": command.carrier},
        ):
            # MessageSubmitted for attempt 1 is written only if the attempt does not end at once in
            # CarrierAccepted or MessageFailed (which say it was made): one record fewer per
            # message on the way of nearly every message, read by every reader of the events.
            client = self.carriers.get(command.carrier)
            if client is None:
                await self._emit(
                    command,
                    ev.MessageFailed(
                        carrier=command.carrier,
                        error_code=500,
                        reason="UNKNOWN_CARRIER",
                        message=f"no carrier named {command.carrier!r} is configured on this adapter",
                    ),
                    "outcome",
                    command.sequence + 2,
                )
                return
            result = await self._submit_with_retries(client, command, stop, started)
            if result.accepted:
                normalized = list(result.carrier_ids)
                # Together, one round of acknowledged writes (SENT is seen one round sooner): a
                # receipt that comes before its correlation waits for it in receipt, and a
                # CarrierAccepted whose correlations died with this process gets them from the
                # replica that finds it uncommitted (finished_outcomes.py, _DispatchRun.read).
                await asyncio.gather(
                    self.correlate(command, normalized),
                    self._emit(
                        command,
                        ev.CarrierAccepted(
                            carrier=command.carrier, carrier_message_ids=normalized, segments=len(normalized)
                        ),
                        "outcome",
                        command.sequence + 2,
                    ),
                )
            elif result.rerouted is not None:
                await self._reroute(command, result.rerouted)
            elif result.deferred is not None:
                await self._defer(command, result)
            elif result.expired is not None:
                await self._emit(command, result.expired, "outcome", command.sequence + 2)
            else:
                await self._emit(command, result.failure, "outcome", command.sequence + 2)

    def carrier_down(self, carrier: str) -> bool:
        """The carrier has taken nothing on this replica for `defer_after` seconds: every attempt
        since its first failure failed (the delay topic's reader then sends back only probes)."""
        since = self.unavailable_since.get(carrier)
        return bool(self.defer_after) and since is not None and time.time() - since >= self.defer_after

    def _deferral(
        self,
        client: CarrierClient,
        command: cp.DispatchCommand,
        exc: CarrierUnavailable,
        attempt: int,
        doubt: bool,
        validity_left: float | None,
        unavailable_since: float,
    ) -> SubmitResult | None:
        """The message's deferral to the delay topic (deferral.py), or None to keep retrying here.
        Only when nothing of it can have reached the carrier (as for a failover), its carrier has
        failed it (or, on this replica, every message) for `defer_after` seconds, and its validity
        outlasts the first lap: one that ends sooner retries here and expires on time."""
        if not self.defer_after or self.delay_tiers is None or doubt or exc.in_doubt:
            return None
        if client.holds_part_of(command.message_id):
            return None
        if validity_left is not None and validity_left <= self.defer_lap:
            return None
        since = min(unavailable_since, self.unavailable_since.get(command.carrier, unavailable_since))
        if time.time() - since < self.defer_after:
            return None
        deferrals = command.deferrals + 1
        laps = laps_for(deferrals, self.defer_lap, self.defer_longest)
        return SubmitResult(
            deferred=ev.DispatchDeferred(
                carrier=command.carrier,
                attempts=attempt,
                reason=exc.reason,
                retry_in=_duration(laps * self.defer_lap),
                deferrals=deferrals,
            ),
            laps=laps,
            unavailable_since=since,
        )

    async def _defer(self, command: cp.DispatchCommand, result: SubmitResult) -> None:
        """DispatchDeferred, then the message's command on the delay topic (same key: the same
        partition number as here), and this command ends (committed). As with a reroute, both ids
        derive from this command's: a replay after a crash writes the same event (dropped by
        readers) and the same command (the copy is skipped by the dispatcher when it comes back)."""
        deferred = result.deferred
        assert deferred is not None
        later = _successor(command, "deferred")
        later.attempts_made = deferred.attempts
        later.deferrals = deferred.deferrals
        later.laps_left = result.laps
        later.unavailable_since.FromNanoseconds(int(result.unavailable_since * 1e9))
        later.deferred_from = command.command_id
        log.warning(
            "carrier %s could not take %s for %.0fs (%s, %d attempts); it waits on the delay topic for %.0fs",
            command.carrier,
            command.message_id,
            time.time() - result.unavailable_since,
            deferred.reason,
            deferred.attempts,
            result.laps * self.defer_lap,
        )
        assert self.delay_tiers is not None
        topic = self.delay_tiers.topic_for(result.laps, validity_left(command, time.time()))
        await self._hand_on(command, deferred, "deferred", topic, later)
        self.deferred[command.carrier] += 1

    def _failover_carrier(
        self,
        client: CarrierClient,
        command: cp.DispatchCommand,
        exc: CarrierUnavailable,
        failing_for: float,
        failed: int,
        doubt: bool,
    ) -> str:
        """The carrier to reroute the message to now, or "". Only when nothing of it can have
        reached this carrier (no attempt in doubt, no part accepted), it has failed for
        `failover_after` seconds or `failover_after_attempts` attempts (`failed`, here), whichever
        comes first (0: not that one), and the route names another carrier this adapter has."""
        by_time = bool(self.failover_after) and failing_for >= self.failover_after
        by_count = bool(self.failover_after_attempts) and failed >= self.failover_after_attempts
        if not self.dispatch_topic or doubt or exc.in_doubt or not (by_time or by_count):
            return ""
        if client.holds_part_of(command.message_id):
            return ""
        return next((name for name in command.fallback_carriers if name in self.carriers), "")

    async def _reroute(self, command: cp.DispatchCommand, rerouted: ev.MessageRerouted) -> None:
        """MessageRerouted, then the message's command for `carrier` on the dispatch topic (same
        key: the same partition, after this one). Both ids derive from this command's: a replay
        after a crash writes the same event (dropped by readers) and the same command (skipped by
        the dispatcher as a copy, recent_commands.py)."""
        new = _successor(command, "rerouted")
        new.carrier = rerouted.carrier
        del new.fallback_carriers[:]
        new.fallback_carriers.extend(c for c in command.fallback_carriers if c != rerouted.carrier)
        new.rerouted_from = command.command_id
        log.warning(
            "carrier %s could not take %s (%s, %d attempts); rerouted to %s",
            command.carrier,
            command.message_id,
            rerouted.reason,
            rerouted.attempts,
            rerouted.carrier,
        )
        await self._hand_on(command, rerouted, "rerouted", self.dispatch_topic, new)
        self.rerouted += 1

    async def _hand_on(
        self, command: cp.DispatchCommand, event, kind: str, topic: str, successor: cp.DispatchCommand
    ) -> None:
        """`command` ends with `event` (in its outcome's slot) and `successor` carries the message
        on, on `topic`, under the same key (the same partition number). The event first: a crash
        in between replays `command`, which writes both again with the same ids."""
        await self._emit(command, event, kind, command.sequence + 2)
        await self.producer.send_and_wait(
            topic,
            key=command.message_id.encode(),
            value=successor.SerializeToString(),
            headers=kafka_headers(dict(command.trace_context)),
        )

    async def correlate(self, command: cp.DispatchCommand, carrier_ids: Sequence[str]) -> None:
        """Writes the correlation of each carrier id the carrier gave `command`'s message (a
        receipt, keyed the same, meets it in receipt); durable on return."""
        await asyncio.gather(
            *(
                self.reports.write(
                    command.carrier,
                    cid,
                    cp.CarrierReport(
                        submit_correlated=cp.SubmitCorrelated(
                            message_id=command.message_id,
                            account_id=command.account_id,
                            part_index=index,
                            total_parts=len(carrier_ids),
                            sequence=command.sequence + 2,
                        )
                    ),
                    command.trace_context,
                )
                for index, cid in enumerate(carrier_ids)
            )
        )

    async def _submit_with_retries(
        self, client: CarrierClient, command: cp.DispatchCommand, stop: asyncio.Event, started: Started | None = None
    ) -> SubmitResult:
        """Submits until the carrier gives a final answer or the message's validity ends. Every
        failed attempt is in the history (SubmitAttemptFailed, written for some and summed up
        on the next for the others: attempt_record.py), followed by MessageSubmitted for the next
        attempt (for those written); an in-doubt failure ends the message
        when the carrier says so. Retries back off exponentially with jitter (half to all of the
        delay), so the replicas' messages do not all come back to a recovering carrier at once
        (retry_backoff.py)."""
        backoff = RetryBackoff(self.retry_min, self.retry_max)
        # A command back from the delay topic goes on counting where its last stay here ended.
        attempt = command.attempts_made + 1
        loop = asyncio.get_running_loop()
        failing_since: float | None = None  # the first failed attempt
        failed = 0  # attempts failed here (this stay: a command back from the delay topic counts anew)
        # When its carrier first failed the message (seconds since the epoch), over deferrals.
        unavailable_since = (
            command.unavailable_since.ToNanoseconds() / 1e9 if command.unavailable_since.seconds else None
        )
        announced = started is not None  # MessageSubmitted for this stay's first attempt
        unrecorded = UnrecordedAttempts()  # failed attempts with no event yet, for the next to sum up
        # Some attempt may have reached the carrier (or some part of a long message did): the
        # message stays with this carrier.
        doubt = bool(started and (started.open or started.accepted_ids))
        if (left := validity_left(command, time.time())) is not None and left <= 0:
            # Waited for its carrier (parked, or in a backlog) past its validity: not sent (again).
            return SubmitResult(
                expired=ev.DispatchExpired(
                    carrier=command.carrier,
                    attempts=started.attempt if started else command.attempts_made,
                    in_doubt=doubt,
                )
            )
        if started is not None:
            if started.open and (failure := await self._restarted_in_doubt(client, command, started)):
                return failure
            attempt = started.attempt + 1
            if attempt_is_recorded(attempt):
                await self._submitted(command, attempt)
        progress = _LedgerProgress(self.submit_ledger, command, started.resume() if started else None)
        while True:
            try:
                if self.fence is not None:
                    self.fence.check()  # so that a replica woken after its session records no intent
                if self.submit_ledger is not None:
                    # Durable before anything goes out: a replica that reads this command after a
                    # crash knows the attempt may have reached the carrier.
                    await self.submit_ledger.intended(command, attempt)
                progress.attempt = attempt
                if self.fence is not None:
                    self.fence.check()  # woken after its session ended: another replica has this command
                result = await client.submit(command, progress)
                self.unavailable_since.pop(command.carrier, None)  # it answered
                await self._held_attempts(command, unrecorded)  # before its answer is written
                return result
            except CarrierUnavailable as exc:
                if self.submit_ledger is not None:
                    await self.submit_ledger.attempt_ended(command, attempt, in_doubt=exc.in_doubt)
                if stop.is_set():
                    raise
                left = validity_left(command, time.time())
                expiring = left is not None and left <= 0
                failing_since = loop.time() if failing_since is None else failing_since
                failed += 1
                now = time.time()
                unavailable_since = now if unavailable_since is None else unavailable_since
                self.unavailable_since.setdefault(command.carrier, now)
                doubt = doubt or exc.in_doubt
                if not announced:
                    announced = True
                    if attempt_is_recorded(attempt):
                        await self._submitted(command, attempt)
                wait = backoff.next_wait(exc.retry_after)
                if left is not None:
                    wait = min(wait, left)  # back when the validity ends, to expire it then
                give_up = exc.in_doubt and client.in_doubt_policy == "fail"
                failover = self._failover_carrier(client, command, exc, loop.time() - failing_since, failed, doubt)
                deferred = (
                    None
                    if failover or give_up or expiring
                    else self._deferral(client, command, exc, attempt, doubt, left, unavailable_since)
                )
                if deferred is not None:
                    wait = deferred.laps * self.defer_lap  # as the history says
                attempt_failed = ev.SubmitAttemptFailed(
                    carrier=command.carrier,
                    attempt=attempt,
                    reason=exc.reason,
                    detail=str(exc)[:500],
                    in_doubt=exc.in_doubt,
                    retry_in=None if give_up or expiring else _duration(wait),
                )
                # The last of the run (it ends here) is written whatever its number.
                if attempt_is_recorded(attempt) or give_up or expiring or failover or deferred is not None:
                    await self._emit(
                        command,
                        unrecorded.summed_into(attempt_failed),
                        f"attempt-failed/{attempt}",
                        command.sequence + 1,
                    )
                else:
                    unrecorded.hold(attempt_failed)
                if give_up:
                    log.warning(
                        "carrier %s: %s is in doubt after attempt %d (%s); failing it, as configured",
                        command.carrier,
                        command.message_id,
                        attempt,
                        numbers_masked(str(exc)),
                    )
                    return SubmitResult(
                        failure=ev.MessageFailed(
                            carrier=command.carrier,
                            error_code=500,
                            reason="SUBMIT_IN_DOUBT",
                            message=f"the carrier may or may not have taken the message ({exc.reason}: {exc}); "
                            "not resubmitted because this carrier's in_doubt policy is 'fail'",
                        )
                    )
                if expiring:
                    log.info(
                        "carrier %s could not take %s before its validity ended (%s, %d attempts); expired",
                        command.carrier,
                        command.message_id,
                        exc.reason,
                        attempt,
                    )
                    return SubmitResult(
                        expired=ev.DispatchExpired(
                            carrier=command.carrier, attempts=attempt, reason=exc.reason, in_doubt=doubt
                        )
                    )
                if failover:
                    return SubmitResult(
                        rerouted=ev.MessageRerouted(
                            from_carrier=command.carrier, carrier=failover, reason=exc.reason, attempts=attempt
                        )
                    )
                if deferred is not None:
                    return deferred
                log.log(
                    logging.WARNING if exc.in_doubt else logging.INFO,
                    "carrier %s unavailable (%s: %s); retrying %s in %.1fs%s",
                    command.carrier,
                    exc.reason,
                    numbers_masked(str(exc)),  # a provider's text may name the recipient
                    command.message_id,
                    wait,
                    " (in doubt: may be sent twice)" if exc.in_doubt else "",
                )
                self.retries[command.carrier, exc.reason] += 1
                await asyncio.sleep(wait)
                attempt += 1
                if attempt_is_recorded(attempt):
                    await self._held_attempts(command, unrecorded)  # in their order, before this one
                    await self._submitted(command, attempt)

    async def _held_attempts(self, command: cp.DispatchCommand, unrecorded: UnrecordedAttempts) -> None:
        """The newest failed attempt held back, with those before it summed up, if there is one."""
        if (held := unrecorded.last()) is not None:
            await self._emit(command, held, f"attempt-failed/{held.attempt}", command.sequence + 1)

    async def _submitted(self, command: cp.DispatchCommand, attempt: int) -> None:
        """MessageSubmitted for `attempt`, under the event id every replica derives for it (so a
        copy written by a replica that died after writing it is dropped by readers)."""
        await self._emit(
            command,
            ev.MessageSubmitted(carrier=command.carrier, attempt=attempt, segments=command.segments),
            "submitted" if attempt == 1 else f"submitted/{attempt}",
            command.sequence + 1,
        )

    async def _restarted_in_doubt(
        self, client: CarrierClient, command: cp.DispatchCommand, started: Started
    ) -> SubmitResult | None:
        """The replica that made `started.attempt` died before its answer was recorded: the
        attempt is recorded as failed in doubt, and the carrier's `in_doubt` policy decides.
        Returns the message's failure ("fail"), or None to submit again ("retry", counted)."""
        attempt, policy = started.attempt, client.in_doubt_policy
        self.restart_doubts[command.carrier, policy] += 1
        log.warning(
            "carrier %s: attempt %d of %s was on its way to the carrier when its replica stopped without "
            "recording the answer; %s, as its in_doubt policy says",
            command.carrier,
            attempt,
            command.message_id,
            "failing it" if policy == "fail" else "submitting again (the carrier may get it twice)",
        )
        # The ids are those the dead replica would have used: a copy it wrote is dropped by readers.
        await self._submitted(command, attempt)
        await self._emit(
            command,
            ev.SubmitAttemptFailed(
                carrier=command.carrier,
                attempt=attempt,
                reason="ADAPTER_RESTARTED",
                detail="the carrier-adapter replica making this attempt stopped before the carrier's answer was "
                "recorded; the carrier may have the message",
                in_doubt=True,
                retry_in=None if policy == "fail" else _duration(0),
            ),
            f"attempt-failed/{attempt}",
            command.sequence + 1,
        )
        if policy != "fail":
            return None
        return SubmitResult(
            failure=ev.MessageFailed(
                carrier=command.carrier,
                error_code=500,
                reason="SUBMIT_IN_DOUBT",
                message="the carrier may or may not have taken the message (its carrier-adapter replica stopped "
                "before the answer was recorded); not resubmitted because this carrier's in_doubt policy is 'fail'",
            )
        )

    async def dead_letter(self, tp: TopicPartition, record: ConsumerRecord, error: Exception) -> None:
        """A record of the dispatch topic that is no command this code can read (written by a
        newer or broken producer) goes to the dead-letter topic as read; returns once the
        brokers have it, so that the commit may pass it. Decoding is not retried: it fails the
        same way every time."""
        log.error(
            "%s@%d is not a dispatch command this replica can read (%s); sent to %s, the partition goes on",
            tp,
            record.offset,
            type(error).__name__,
            self.dead_letter_topic,
        )
        headers = letter_headers(
            record.headers, source=(tp.topic, tp.partition, record.offset), service=self.group, error=error
        )
        await self.producer.send_and_wait(self.dead_letter_topic, key=record.key, value=record.value, headers=headers)
        self.dead_lettered += 1

    async def _emit(self, command: cp.DispatchCommand, payload, kind: str, sequence: int) -> None:
        envelope = new_event(
            payload,
            service=SERVICE,
            producer=self.producer_name,
            message_id=command.message_id,
            account_id=command.account_id,
            sequence=sequence,
            event_id=derived_id(command.command_id, kind),
            causation_id=command.command_id,
            trace_context=dict(command.trace_context),
        )
        await self.producer.send_and_wait(
            self.events_topic,
            key=command.message_id.encode(),
            value=encode(envelope),
            headers=kafka_headers(dict(command.trace_context)),
        )


class _LedgerProgress:
    """A submit's SubmitProgress: resumes a long message where the submit ledger says a replica
    that died left it, and records each part the carrier takes there."""

    def __init__(
        self, ledger: SubmitLedger | None, command: cp.DispatchCommand, resume: tuple[int, tuple[str, ...]] | None
    ) -> None:
        self.ledger = ledger
        self.command = command
        self.resume = resume
        self.attempt = 1

    async def parts_accepted(self, reference: int, carrier_ids) -> None:
        if self.ledger is not None:
            await self.ledger.parts_accepted(self.command, self.attempt, reference, carrier_ids)


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromMilliseconds(int(seconds * 1000))
    return duration


def _successor(command: cp.DispatchCommand, kind: str) -> cp.DispatchCommand:
    """The command that carries a message on after `command` ends `kind` ("rerouted", "deferred"):
    a copy whose id derives from `command`'s (a replay after a crash writes the same one, skipped
    as a copy) and whose sequence is the slot of `command`'s outcome, never written."""
    successor = cp.DispatchCommand()
    successor.CopyFrom(command)
    successor.command_id = derived_id(command.command_id, kind)
    successor.sequence = command.sequence + 2
    successor.issued_at.CopyFrom(timestamp())
    return successor


class _DispatchRun:
    """What one `Dispatcher.run` keeps while it reads the dispatch partitions: the commands running
    and parked, what each partition has read, and where it re-reads after a rewind or a restart."""

    def __init__(self, dispatcher: Dispatcher, stop: asyncio.Event) -> None:
        self.dispatcher = dispatcher
        self.stop = stop
        self.marks = OffsetWatermarks()
        self.parking = dispatcher.parking
        self.tasks: set[asyncio.Task] = set()
        self.by_command: dict[str, asyncio.Task] = {}
        self.failures: list[BaseException] = []
        #: Per partition, the newest offset read so far: a record at or below it is read again
        #: after a rewind (parked, finished or running), not new.
        self.newest: dict = {}
        #: Partitions read again after a rewind, with the offset where the re-read catches up;
        #: no second rewind before that (it would read the same stretch again and again).
        self.rewinding: dict = {}
        #: Ids of each partition's recent commands: a copy of one is not handed over again.
        self.recent = RecentCommands(dispatcher.dedupe_window)
        #: Set when a command gets its outcome: Dispatcher._commit_when_finished commits it.
        self.newly_finished = asyncio.Event()
        #: Per newly assigned partition: the commands whose outcome is already in the events (their
        #: commit was lost with the process that wrote it), and the partition's end when that was
        #: read (beyond it every command is new, and the ids are dropped).
        self.finished_elsewhere: dict = {}
        #: Per newly assigned partition: what the submit ledger says of the commands a replica had
        #: started (submit_ledger.py); each is handed to the command's handler when it starts.
        self.started_elsewhere: dict = {}

    def learned(self, partitions: list, found: dict, started: dict, ends: dict) -> None:
        """What the look-ups of newly assigned partitions found (Dispatcher._look_up): per
        partition, the commands whose outcome is in the events (`found`), what the ledger says of
        the commands a replica had started (`started`), and the partition's end when read."""
        for tp in partitions:
            done = found.get(tp.partition, {})
            if done:
                self.finished_elsewhere[tp] = (done, ends.get(tp, 0))
            # Every command of the window has an intent; those with an outcome are finished.
            unfinished = {cid: s for cid, s in started.get(tp.partition, {}).items() if cid not in done}
            if unfinished:
                self.started_elsewhere[tp] = unfinished

    def revoked(self, tp) -> None:
        self.marks.drop(tp)
        self.parking.drop(tp)
        self.newest.pop(tp, None)
        self.rewinding.pop(tp, None)
        self.recent.drop(tp)
        self.finished_elsewhere.pop(tp, None)
        self.started_elsewhere.pop(tp, None)

    def read(self, tp, records) -> None:
        """One partition's polled records: new commands start (or park), copies and commands
        finished before a restart are skipped, a re-read after a rewind starts parked ones."""
        marks, parking, recent = self.marks, self.parking, self.recent
        for record in records:
            if record.offset >= self.rewinding.get(tp, record.offset + 1):
                del self.rewinding[tp]
            if record.offset <= self.newest.get(tp, -1):
                # Read again after a rewind: start it if it is parked and its carrier
                # has room; what finished or still runs is skipped.
                queue = parking.parked_queue(tp, record.offset)
                if queue is not None and parking.has_room(*queue):
                    kept = parking.unpark(tp, record.offset)
                    self.launch(tp, record.offset, kept or _command(record.value))
                continue
            self.newest[tp] = record.offset
            try:
                command = _command(record.value)
            except DecodeError as error:
                if marks.finished_before(tp, record.offset):
                    continue  # dead-lettered before a restart or a rebalance; the commit says so
                if not self.dispatcher.dead_letter_topic:
                    raise
                marks.started(tp, record.offset)
                self.finish_after(tp, record.offset, self.dispatcher.dead_letter(tp, record, error))
                continue
            if marks.finished_before(tp, record.offset):
                recent.add(tp, command.command_id)  # so that a copy of it is known too
                continue  # handled before a restart or a rebalance; the commit says so
            if (
                tp in self.finished_elsewhere
                and (carrier_ids := self._finished_elsewhere(tp, record.offset, command)) is not None
            ):
                marks.started(tp, record.offset)
                if carrier_ids:
                    self.correlate_again(tp, record.offset, command, carrier_ids)
                else:
                    marks.finished(tp, record.offset)
                continue
            if recent.seen(tp, command.command_id) and command.command_id not in self.by_command:
                # A copy routing published again (recent_commands.py): the original
                # came earlier in this partition and has its outcome, or will.
                log.warning(
                    "%s@%s: command %s for %s was read before; not submitting it again",
                    tp,
                    record.offset,
                    command.command_id,
                    command.message_id,
                )
                self.dispatcher.copies_skipped += 1
                marks.started(tp, record.offset)
                marks.finished(tp, record.offset)
                continue
            recent.add(tp, command.command_id)
            marks.started(tp, record.offset)
            lane = lane_of(command.priority)
            if command.command_id not in self.by_command and parking.should_park(command.carrier, lane):
                parking.park(tp, record.offset, command.carrier, lane, command)
            else:
                self.launch(tp, record.offset, command)

    def start_kept(self, tp) -> int | None:
        """Starts the partition's parked commands whose carrier lane has room, oldest first,
        from memory; returns the offset of the first such one that was not kept there (its
        partition must be read again from it), None when none was left out."""
        parking = self.parking
        for offset, queue in parking.parked_in(tp):
            if not parking.has_room(*queue):
                continue
            command = parking.kept_command(tp, offset)
            if command is None:
                return offset
            parking.unpark(tp, offset)
            self.launch(tp, offset, command)
        return None

    def _finished_elsewhere(self, tp, offset: int, command: cp.DispatchCommand) -> tuple[str, ...] | None:
        """For a command whose outcome is in the events though no commit said so, the carrier ids
        its CarrierAccepted names (empty for another outcome); None for any other command."""
        done, until = self.finished_elsewhere[tp]
        if offset >= until - 1:
            del self.finished_elsewhere[tp]  # past it, every command is new
        if command.command_id not in done or command.command_id in self.by_command:
            return None
        log.warning(
            "%s@%s: command %s for %s has its outcome in the events already (its commit was lost); "
            "not submitting it again",
            tp,
            offset,
            command.command_id,
            command.message_id,
        )
        self.dispatcher.outcomes_found += 1
        self.recent.add(tp, command.command_id)
        return done[command.command_id]

    def correlate_again(self, tp, offset: int, command: cp.DispatchCommand, carrier_ids: tuple[str, ...]) -> None:
        """Writes again the correlations of a command found accepted but not committed (they were
        written beside its CarrierAccepted, maybe not durably); it is finished once they are."""
        self.finish_after(tp, offset, self.dispatcher.correlate(command, carrier_ids))

    def finish_after(self, tp, offset: int, write: Coroutine[Any, Any, None]) -> None:
        """The record at `offset` is finished once `write` is durable (correlations written again,
        a dead letter); a write that fails stops the run, as a command's failure does."""
        task = asyncio.create_task(write)
        self.tasks.add(task)
        task.add_done_callback(functools.partial(self._written, tp=tp, offset=offset))

    def _written(self, task: asyncio.Task, *, tp, offset: int) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        if (error := task.exception()) is not None:
            self.failures.append(error)
            return
        self.marks.finished(tp, offset)
        self.newly_finished.set()

    def launch(self, tp, offset: int, command: cp.DispatchCommand) -> None:
        running = self.by_command.get(command.command_id)
        if running is not None:
            # Redelivered while we still handle it (the partition came back to us after a
            # rebalance): wait for that outcome, never submit twice.
            task = asyncio.ensure_future(asyncio.shield(running))
        else:
            started = self.started_elsewhere.get(tp, {}).pop(command.command_id, None)
            task = asyncio.create_task(self.dispatcher.handle(command, self.stop, started))
            self.by_command[command.command_id] = task
        self.tasks.add(task)
        lane = lane_of(command.priority)
        self.parking.started(command.carrier, lane)
        task.add_done_callback(
            lambda t, tp=tp, offset=offset, cid=command.command_id, queue=(command.carrier, lane): self.finished(
                t, tp, offset, cid, queue
            )
        )

    def finished(self, task: asyncio.Task, tp, offset: int, command_id: str, queue: Queue) -> None:
        self.tasks.discard(task)
        self.parking.finished(*queue)
        if self.by_command.get(command_id) is task:
            del self.by_command[command_id]
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self.marks.finished(tp, offset)
            self.newly_finished.set()
        elif not (self.stop.is_set() and isinstance(error, CarrierUnavailable)):
            self.failures.append(error)


class _HandOver(ConsumerRebalanceListener):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def on_partitions_revoked(self, revoked) -> None:
        await self.dispatcher.hand_over()

    async def on_partitions_assigned(self, assigned) -> None:
        """A partition is taken up when its first records come (Dispatcher.run), from its commit."""
        dispatcher = self.dispatcher
        if dispatcher.member_file is not None:
            dispatcher.member_file.remember(dispatcher.consumer)
        dispatcher.taken |= dispatcher.given - set(assigned)
        dispatcher.given = set(assigned)


def _command(value: bytes | None) -> cp.DispatchCommand:
    """The record's command; DecodeError when it is none (not protobuf, or without the ids every
    command has: bytes that happen to parse are not a command)."""
    command = cp.DispatchCommand()
    command.ParseFromString(value or b"")
    if not command.command_id or not command.message_id:
        raise DecodeError("no command_id or message_id: not a dispatch command")
    return command
