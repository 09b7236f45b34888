"""MessagingService: decode the request, call the domain, append events, encode the answer.

Over 500 lines on purpose: the public MessagingService, one method per RPC; what those
methods decide is in admission.py, auth.py, cursors.py, live.py and smsgw.domain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from google.protobuf import unknown_fields
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from smsgw.domain import credentials as cr
from smsgw.domain import errors as de
from smsgw.domain import status as st
from smsgw.domain.destinations import check_destination
from smsgw.domain.limits import AccountUsage, Limits
from smsgw.domain.message_state import MessageState
from smsgw.domain.routes import CarrierCapabilities
from smsgw.events.envelope import (
    derived_id,
    encode,
    message_id_for_idempotency_key,
    new_event,
    new_message_id,
    to_datetime,
)
from smsgw.grpcx.errors import abort_with, grpc_code_for, unary_rpc
from smsgw.kafka.broken_producer import ProducerHealth
from smsgw.lanes import Lane, lane_headers, lane_of
from smsgw.projections.progress import StoreProgress
from smsgw.projections.query import MessageFilter
from smsgw.projections.store import LoggedEvent, MessageStore
from smsgw.telemetry import current_context_carrier, kafka_headers, message_span, start_message_span, tracer
from smsgw.v1 import events_pb2 as ev
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from smsgw.views import inbound_view, message_view

from .admission import AdmissionPolicy, SendCommand, admit
from .append_breaker import AppendBreaker
from .auth import Authenticator, SendGrant
from .backlog_gate import BacklogGate
from .cursors import DEVELOPMENT_SECRET, CursorCodec, is_after
from .inbound_history import InboundHistory
from .inbound_projection import InboundProjection
from .live import LiveMessages

log = logging.getLogger(__name__)
SERVICE = "intake"
MAX_BATCH = 1000
#: Messages of one SendStream in flight at once: beyond that the server stops reading the stream.
STREAM_WINDOW = 1000
#: Batches of one SendStream waiting for their acks at once: a sender that is not waiting on an
#: earlier batch has each message appended as it comes; one that is, has the next ones appended
#: together when a batch's acks are in (natural batching, no timer to wait on).
STREAM_BATCHES = 2
#: Events a WatchMessages replay reads from the store at a time.
REPLAY_PAGE = 500
#: The most updates in one WatchMessageBatches response (its max_updates' default): ~150 KB of
#: views, far below gRPC's 4 MB message limit, and enough that the per-response cost is spread.
MAX_WATCH_BATCH = 500
_tracer = tracer("smsgw.intake")


class Intake:
    """The intake use cases, free of grpc so the batch path can reuse them per item."""

    def __init__(
        self,
        *,
        producer: AIOKafkaProducer,
        topic: str,
        store: MessageStore,
        projector: StoreProgress,
        live: LiveMessages,
        producer_name: str,
        policy: AdmissionPolicy,
        max_in_flight: int,
        lookup_wait: float = 3.0,
        inbound: InboundProjection | None = None,
        inbound_history: InboundHistory | None = None,
        capabilities: CarrierCapabilities | None = None,
        limits: Callable[[str], Limits] | None = None,
        producer_health: ProducerHealth | None = None,
        append_timeout: float = 5.0,
        breaker: AppendBreaker | None = None,
        gate: BacklogGate | None = None,
    ):
        self.capabilities = capabilities
        # Sending limits per account, checked against what every replica accepted (read from the log).
        self.limits_of = limits or (lambda account_id: Limits())
        self.usage = AccountUsage()
        # Every read is answered by the store; `projector` is what tells how far it is and what it
        # holds (the projector, or the store follower when the replicas share one store); `live`
        # adds this replica's appends the store does not have yet, and the watchers.
        self.store = store
        self.projector = projector
        self.live = live
        live.producer_name = producer_name
        # Offset after the last event this replica appended, per partition: what a read must include.
        self.appended: dict[int, int] = {}
        #: Told of every append's error: a producer that can write no more ends the service
        #: (smsgw.kafka.broken_producer; __main__ watches it).
        self.producer_health = producer_health or ProducerHealth()
        self.inbound = inbound if inbound is not None else InboundProjection()
        # Where a WatchInbound that resumes reads what it missed (None: this Intake cannot resume one).
        self.inbound_history = inbound_history
        self.producer = producer
        self.topic = topic
        self.producer_name = producer_name
        self.policy = policy
        self.max_in_flight = max_in_flight
        #: The longest an append waits for the brokers' ack before the caller is answered (in doubt).
        self.append_timeout = append_timeout
        #: Refuses appends at once while the log takes none (append_breaker.py).
        self.breaker = breaker or AppendBreaker()
        self._in_flight = 0
        self.lookup_wait = lookup_wait
        #: Holds NORMAL and LOW sends while routing works through a backlog (backlog_gate.py).
        self.gate = gate

    async def send(
        self, account_id: str, command: SendCommand, grant: SendGrant | None = None, *, within: float | None = None
    ) -> tuple[MessageState, bool]:
        """Admits and appends one message; `within`: seconds left of the caller's deadline, if it set one."""
        (outcome,) = await self.send_many(account_id, [command], grant, within=within)
        if isinstance(outcome, de.DomainError):
            raise outcome
        return outcome

    async def send_many(
        self,
        account_id: str,
        commands: Sequence[SendCommand | de.DomainError],
        grant: SendGrant | None = None,
        *,
        within: float | None = None,
    ) -> list[tuple[MessageState, bool] | de.DomainError]:
        """Admits each command on its own, appends the admitted ones together, and says per command
        what became of it: (state, duplicate) or the error that refused it (an error given in place
        of a command, e.g. a request that did not decode, is passed through at its place).

        Together, not one by one: every record is handed to the producer before any ack is awaited,
        so a batch is one produce request and one wait, not a coroutine, a timer and a wait each.

        While routing works through a backlog, a batch's NORMAL and LOW messages wait at the gate
        (backlog_gate.py) and, refused there, are QUEUE_FULL. Its HIGH messages never wait: in a
        batch that mixes them they are appended first, and only the rest waits, with what is left
        of the call's time (the wait must not eat the time a HIGH append needs)."""
        held = [i for i, c in enumerate(commands) if self._held_at_gate(c)]
        if not held or self.gate is None:
            return await self._send_admitted(account_id, commands, grant, within=within)
        if len(held) == len(commands):
            return await self._send_gated(account_id, commands, grant, within=within)
        started = time.monotonic()
        at_once = sorted(set(range(len(commands))) - set(held))
        first = await self._send_admitted(account_id, [commands[i] for i in at_once], grant, within=within)
        if within is not None:
            within = max(0.0, within - (time.monotonic() - started))
        then = await self._send_gated(account_id, [commands[i] for i in held], grant, within=within)
        placed = dict(zip(at_once, first, strict=True)) | dict(zip(held, then, strict=True))
        return [placed[i] for i in range(len(commands))]

    def _held_at_gate(self, command: SendCommand | de.DomainError) -> bool:
        return not isinstance(command, de.DomainError) and lane_of(command.priority) is not Lane.HIGH

    async def _send_gated(
        self,
        account_id: str,
        commands: Sequence[SendCommand | de.DomainError],
        grant: SendGrant | None,
        *,
        within: float | None,
    ) -> list[tuple[MessageState, bool] | de.DomainError]:
        """NORMAL and LOW commands: room at the gate first (all of them QUEUE_FULL without it)."""
        assert self.gate is not None
        started = time.monotonic()
        # Room for the append and the answer after the wait, before the caller's deadline.
        gate_within = None if within is None else max(0.0, within - 2 * DEADLINE_MARGIN)
        if not await self.gate.admit(len(commands), gate_within):
            return [self._refused_by_gate() for _ in commands]
        if within is not None:
            within = max(0.0, within - (time.monotonic() - started))
        try:
            return await self._send_admitted(account_id, commands, grant, within=within)
        finally:
            self.gate.release(len(commands))

    def _refused_by_gate(self) -> de.QueueFull:
        """What a NORMAL or LOW command the backlog gate found no room for gets."""
        limit = int(self.gate.current_limit()) if self.gate is not None else 0
        return de.QueueFull(
            f"the pipeline is working through a backlog of {limit}+ messages and this send found no "
            "room in time; nothing was accepted, retry after a backoff (MESSAGE_PRIORITY_HIGH sends "
            "are never held)",
            metadata={"backlog_limit": str(limit)},
        )

    async def _send_admitted(
        self,
        account_id: str,
        commands: Sequence[SendCommand | de.DomainError],
        grant: SendGrant | None,
        *,
        within: float | None,
    ) -> list[tuple[MessageState, bool] | de.DomainError]:
        now = datetime.now(UTC)
        limits = self.limits_of(account_id)
        outcomes: list[Any] = []  # per command: (state, duplicate) or its error; None until its append is known
        admitted: list[tuple[int, ev.EventEnvelope, trace.Span]] = []
        for command in commands:
            if isinstance(command, de.DomainError):
                outcomes.append(command)
                continue
            try:
                prepared = await self._admit(account_id, command, grant, now, limits)
            except de.DomainError as error:
                outcomes.append(error)
                continue
            except BaseException:
                # Nothing of this batch is appended (the caller gets the fault): what the items
                # admitted so far counted against the account's limits is given back.
                for _, _, span in admitted:
                    self.usage.refund(account_id, now, limits)
                    span.end()
                raise
            if isinstance(prepared, MessageState):  # an idempotent repeat of a message already accepted
                outcomes.append((prepared, True))
                continue
            envelope, span = prepared
            admitted.append((len(outcomes), envelope, span))
            outcomes.append(None)
        if not admitted:
            return outcomes
        try:
            errors = await self._append_all([envelope for _, envelope, _ in admitted], within=within)
        except BaseException as error:
            for _, _, span in admitted:
                span.record_exception(error)
                span.end()
            raise
        for (index, envelope, span), refusal in zip(admitted, errors, strict=True):
            if refusal is None:
                # Routing may have read the record, and this replica's projector committed the
                # message's later events, before the brokers' ack got back here (slow acks under
                # load): folded onto those, the answer is the newest state, and the QUEUED index
                # (the backlog gate's measure) does not take back a message that has left it.
                projected = self.projector.cached_state(envelope.message_id)
                outcomes[index] = (self.live.apply_own(envelope, projected), False)
            else:
                self.usage.refund(account_id, now, limits)  # not accepted: it does not count
                outcomes[index] = refusal
                span.record_exception(refusal)
                span.set_status(Status(StatusCode.ERROR, type(refusal).__name__))
            span.end()
        return outcomes

    async def _admit(
        self, account_id: str, command: SendCommand, grant: SendGrant | None, now: datetime, limits: Limits
    ) -> MessageState | tuple[ev.EventEnvelope, trace.Span]:
        """Validates one command and counts it against the account's limits: the MessageQueued to
        append and the span of its acceptance (ended by the caller once the append is known), or
        the stored state when it repeats an idempotency key already accepted."""
        queued = admit(
            command,
            now=now,
            policy=self.policy,
            capabilities=self.capabilities,
            own_senders=grant.senders if grant is not None else None,
            sender_pool=grant is not None and grant.sender_pool,
            smart_encoding=grant is not None and grant.smart_encoding,
            account_id=account_id,
        )
        if grant is not None:
            check_destination(queued.to, grant.destinations)
        self.check_not_opted_out(account_id, queued.to, getattr(queued, "from"))
        if command.idempotency_key:
            message_id = message_id_for_idempotency_key(account_id, command.idempotency_key)
            existing = await self.current_state(message_id)
            if existing is not None and existing.status != st.UNSPECIFIED:
                if existing.request_fingerprint != queued.request_fingerprint:
                    raise de.IdempotencyKeyReused(
                        f"idempotency_key: {command.idempotency_key!r} was used for a different request "
                        f"(message {message_id}); use a new key for a new message",
                        field="idempotency_key",
                        metadata={"message_id": message_id},
                    )
                return existing
            event_id: str | None = derived_id(message_id, "queued")
        else:
            message_id = new_message_id()
            event_id = None
        self.usage.admit(account_id, now, limits)  # raises when the account is over a limit
        span, trace_context = start_message_span(_tracer, "intake.accept", message_id)
        envelope = new_event(
            queued,
            service=SERVICE,
            producer=self.producer_name,
            message_id=message_id,
            account_id=account_id,
            sequence=1,
            event_id=event_id,
            trace_context=trace_context,
            occurred_at=now,
        )
        return envelope, span

    def count_committed_elsewhere(self, notice) -> None:
        """What other replicas accepted counts against the account's limits here too."""
        envelope = notice.envelope
        if envelope.WhichOneof("payload") == "message_queued":
            self.usage.record(
                envelope.account_id, to_datetime(envelope.occurred_at), self.limits_of(envelope.account_id)
            )

    async def count_accepted_today(self, now: datetime | None = None) -> int:
        """At start: what the store says each account sent today (UTC) counts against its limits."""
        now = now or datetime.now(UTC)
        midnight = datetime.combine(now.date(), datetime.min.time(), UTC)
        accepted = await self.store.accepted_since(int(midnight.timestamp() * 1_000_000))
        for account_id, created_micros in accepted:
            self.usage.record(
                account_id, datetime.fromtimestamp(created_micros / 1_000_000, UTC), self.limits_of(account_id)
            )
        return len(accepted)

    async def index_queued(self) -> int:
        """At start: the messages the store has in QUEUED are what the redriver watches."""
        queued = await self.store.queued_messages()
        for message_id, updated_micros in queued:
            self.live.queued_since.set(message_id, updated_micros / 1_000_000)
        return len(queued)

    async def current_state(self, message_id: str) -> MessageState | None:
        """The message's newest state known here: the store's, or this replica's own append the
        projector has not committed yet."""
        # In this order: this replica's own append is dropped from `live` only once the projector
        # has committed it (and put it in its cache), so reading it first never misses both.
        own = self.live.own(message_id)
        stored = self.projector.cached_state(message_id)
        if stored is None:
            stored = await self.store.get_state(message_id)
            # A commit may land while the store is read (whose snapshot may predate it).
            stored = stored or self.projector.cached_state(message_id)
        if own is not None and (stored is None or own.version > stored.version):
            return own
        return stored

    async def queued_event(self, state: MessageState) -> ev.EventEnvelope | None:
        """The message's MessageQueued, as the log has it (what a redrive appends again)."""
        for stored in await self.store.history(state.account_id, state.message_id):
            if stored.envelope.WhichOneof("payload") == "message_queued":
                return stored.envelope
        return None

    def check_not_opted_out(self, account_id: str, to: str, sender: str) -> None:
        blocked_by = self.inbound.opt_outs.blocks(account_id, to, sender)
        if blocked_by is None:
            return
        which = f"from {sender}" if blocked_by else "from every number of this account (STOPALL)"
        raise de.RecipientOptedOut(
            f"to: {to} replied STOP and opted out of messages {which}; nothing was sent. "
            "They must reply START (or YES, UNSTOP) before you can message them again",
            field="to",
            metadata={"sender": blocked_by or "*"},
        )

    async def cancel(self, account_id: str, message_id: str, reason: str, timeout: float = 5.0) -> MessageState:
        state = await self.lookup(account_id, message_id)
        if state.status not in (st.QUEUED, st.SCHEDULED):
            raise de.NotCancelable(
                f"id: message {message_id} is {st.status_name(state.status)}; only QUEUED or SCHEDULED messages "
                "can be canceled",
                field="id",
                metadata={"status": st.status_name(state.status)},
            )
        with message_span(_tracer, "intake.cancel", message_id):
            request = new_event(
                ev.CancellationRequested(reason=reason or "canceled by client"),
                service=SERVICE,
                producer=self.producer_name,
                message_id=message_id,
                account_id=account_id,
                sequence=state.last_sequence + 1,
                trace_context=current_context_carrier(),
            )
            await self._append(request)
        self.live.apply_own(request, state)
        # Routing is the one place that knows whether the message already left; wait for its word.
        outcome = await self.wait_for(
            message_id,
            lambda s: (
                s is not None
                and (
                    s.status == st.CANCELED
                    or s.cancellation_outcome == "REJECTED"
                    or st.rank(s.status) > st.rank(st.SCHEDULED)
                )
            ),
            timeout,
        )
        if outcome is None:  # it was there a moment ago (lookup): the store lost it?
            raise de.MessageNotFound(f"id: no message {message_id!r} in this account", field="id")
        if outcome.status != st.CANCELED:
            raise de.NotCancelable(
                f"id: message {message_id} could not be canceled: "
                f"{outcome.cancellation_detail or 'it was already handed to a carrier'} "
                f"(status {st.status_name(outcome.status)})",
                field="id",
                metadata={"status": st.status_name(outcome.status)},
            )
        return outcome

    async def list_messages(self, flt: MessageFilter, page_size: int, page_token: str):
        # Read-your-writes: the store must hold at least what this replica appended.
        await self.projector.wait_until(self.appended, timeout=self.lookup_wait)
        return await self.store.list(flt, page_size, page_token)

    async def history(self, account_id: str, message_id: str):
        await self.lookup(account_id, message_id)
        await self.projector.wait_until(self.appended, timeout=self.lookup_wait)
        return await self.store.history(account_id, message_id)

    async def lookup(self, account_id: str, message_id: str) -> MessageState:
        if not message_id:
            raise de.MissingField("id: required; pass the id SendMessage returned", field="id")
        # A message accepted by another replica a moment ago may still be on its way to the store.
        state = await self.wait_for(
            message_id, lambda s: s is not None and s.status != st.UNSPECIFIED, self.lookup_wait
        )
        if state is None or state.status == st.UNSPECIFIED or state.account_id != account_id:
            raise de.MessageNotFound(f"id: no message {message_id!r} in this account", field="id")
        return state

    async def wait_for(
        self, message_id: str, predicate: Callable[[MessageState | None], bool], timeout: float
    ) -> MessageState | None:
        """Waits until the message's state satisfies `predicate` or `timeout` passes; the state then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        watcher = self.live.watch(message_id)  # before reading: no change falls in between
        try:
            state = await self.current_state(message_id)
            while not predicate(state):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                # A change of this message, or (for one not in the store yet) the projector's next batch.
                waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(watcher.next(remaining))]
                if state is None:
                    waiters.append(asyncio.ensure_future(self.projector.wait_for_progress(remaining)))
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                if watcher.fell_behind:  # it has read the store again just now: start a fresh queue
                    self.live.unwatch(message_id, watcher)
                    watcher = self.live.watch(message_id)
                state = await self.current_state(message_id)
            return state
        finally:
            self.live.unwatch(message_id, watcher)

    async def append(self, envelope: ev.EventEnvelope) -> None:
        """Appends an intake-owned event (also used to redrive a MessageQueued, byte for byte)."""
        await self._append(envelope)

    async def _append(self, envelope: ev.EventEnvelope, *, within: float | None = None) -> None:
        """Appends one event: `_append_all` of one, its error raised."""
        (error,) = await self._append_all([envelope], within=within)
        if error is not None:
            raise error

    async def _append_all(
        self, envelopes: Sequence[ev.EventEnvelope], *, within: float | None = None
    ) -> list[de.DomainError | None]:
        """Appends `envelopes` and waits for the brokers' acks, at most `append_timeout` seconds (or
        `within`, the caller's own deadline less a margin, when that is sooner); per envelope, None
        (in the log) or the error to answer with.

        All are handed to the producer before any ack is awaited (it batches them into few
        requests), then the acks are awaited together, under one time bound. Refused at once while
        the breaker is open (EventLogUnavailable: nothing was sent); beyond `max_in_flight` appends
        waiting, QueueFull. An append the log does not confirm in time is in doubt
        (AcceptanceInDoubt): the record may still land, so the caller is told to retry with the
        same idempotency key. The batch is one trial of the breaker, and gives it one verdict."""
        errors: list[de.DomainError | None] = [None] * len(envelopes)
        take = min(len(envelopes), max(0, self.max_in_flight - self._in_flight))
        for index in range(take, len(envelopes)):
            errors[index] = de.QueueFull(
                f"message queue full: {self._in_flight + take} messages are waiting for the event log; "
                "retry with exponential backoff",
                metadata={"in_flight": str(self._in_flight + take)},
            )
        if not take:
            return errors
        try:
            trial = self.breaker.admit()
        except de.DomainError as refused:
            return [refused] * take + errors[take:]
        bound, callers_bound = self.append_timeout, False
        if within is not None and within - DEADLINE_MARGIN < bound:
            bound, callers_bound = max(0.0, within - DEADLINE_MARGIN), True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        acks: list[asyncio.Future | None] = [None] * take
        verdicts: set[str] = set()  # what the appends told of the log: "failed", "succeeded", "gave_up"
        self._in_flight += take
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    for index in range(take):
                        envelope = envelopes[index]
                        try:
                            acks[index] = await self.producer.send(
                                self.topic,
                                key=envelope.message_id.encode(),
                                value=encode(envelope),
                                headers=kafka_headers(dict(envelope.trace_context)) + _lane(envelope),
                            )
                        except KafkaError as exc:  # refused by the producer: this record was not sent
                            errors[index] = self._append_failed(envelope, exc, sent=False, verdicts=verdicts)
            except TimeoutError:
                pass  # the producer took no more within the bound: the rest were not sent
            waiting = [ack for ack in acks if ack is not None]
            if waiting:
                # asyncio.wait, not a timeout around the futures: cancelling the producer's futures
                # would not take the records back.
                await asyncio.wait(waiting, timeout=max(0.0, deadline - loop.time()))
        except BaseException:
            self.breaker.gave_up(trial)  # cancelled: let another call be the trial
            raise
        finally:
            self._in_flight -= take
        unconfirmed = unsent = 0
        for index in range(take):
            envelope, ack = envelopes[index], acks[index]
            if errors[index] is not None:
                continue
            if ack is None:
                unsent += 1
                errors[index] = de.GatewayUnavailable(
                    f"gateway error: the event log took no write within {bound:.1f} s; the message was NOT "
                    "accepted; retry later",
                    metadata={"cause": "timeout"},
                )
            elif not ack.done():
                unconfirmed += 1
                errors[index] = _in_doubt(envelope, f"the event log did not confirm the append within {bound:.1f} s")
            elif ack.cancelled() or ack.exception() is not None:
                failure = ack.exception() if not ack.cancelled() else KafkaConnectionError("the producer was stopped")
                if isinstance(failure, KafkaError):
                    errors[index] = self._append_failed(envelope, failure, sent=True, verdicts=verdicts)
                else:  # not the Kafka client's own error: nothing says the record did not land
                    log.error("event log append failed unexpectedly: %r", failure)
                    verdicts.add("failed")
                    errors[index] = _in_doubt(envelope, f"the append failed ({type(failure).__name__})")
            else:
                metadata = ack.result()
                self.appended[metadata.partition] = max(self.appended.get(metadata.partition, 0), metadata.offset + 1)
                verdicts.add("succeeded")
        if unconfirmed or unsent:
            # the caller's short deadline says nothing of the log
            verdicts.add("gave_up" if callers_bound else "failed")
            log.warning(
                "event log appends not confirmed within %.1f s: %d sent and unconfirmed, %d not sent",
                bound,
                unconfirmed,
                unsent,
            )
        if "failed" in verdicts:
            self.breaker.failed(trial)
        elif "succeeded" in verdicts:
            self.breaker.succeeded(trial)
        else:
            self.breaker.gave_up(trial)
        return errors

    def _append_failed(
        self, envelope: ev.EventEnvelope, exc: KafkaError, *, sent: bool, verdicts: set[str]
    ) -> de.DomainError:
        """The answer to an append the Kafka client failed, and what it tells the breaker."""
        log.warning("event log append failed: %r", exc)
        self.producer_health.observe(exc)
        if _log_unavailable(exc):
            verdicts.add("failed")
            if sent:
                return _in_doubt(envelope, f"the event log failed the append ({type(exc).__name__})")
        elif sent:
            verdicts.add("succeeded")  # refused for good, by a broker that answered
        else:
            verdicts.add("gave_up")  # refused by the producer itself: nothing learnt of the log
        return de.GatewayUnavailable(
            f"gateway error: the event log refused the append ({type(exc).__name__}); the message was NOT "
            "accepted; retry later",
            metadata={"cause": type(exc).__name__},
        )


#: Answer this long before the caller's deadline, so that it reads our answer, not DEADLINE_EXCEEDED.
DEADLINE_MARGIN = 0.2


def _log_unavailable(error: KafkaError) -> bool:
    """The cluster could not take the write (unreachable, no leader, too few in-sync replicas, timed
    out), as opposed to refusing this record for good (too large, not authorized)."""
    return bool(getattr(error, "retriable", False)) or isinstance(error, (KafkaTimeoutError, KafkaConnectionError))


def _in_doubt(envelope: ev.EventEnvelope, why: str) -> de.AcceptanceInDoubt:
    return de.AcceptanceInDoubt(
        f"{why}: message {envelope.message_id} may still be accepted. Retry with the same idempotency_key "
        "(a retry without one may send the message twice), or look it up later: GetMessage(id)",
        metadata={"message_id": envelope.message_id},
    )


def _reject_unknown_fields(request, path: str = "") -> None:
    """Refuses fields this server does not know, rather than silently dropping them."""
    unknown = unknown_fields.UnknownFieldSet(request)
    if len(unknown):
        numbers = sorted({f.field_number for f in unknown})
        raise de.UnknownField(
            f"{path or 'request'}: unknown field number(s) {numbers}; this server speaks smsgw.v1 "
            f"({request.DESCRIPTOR.full_name}); check the client's generated stubs",
            field=path or request.DESCRIPTOR.name,
            metadata={"field_numbers": ",".join(map(str, numbers))},
        )


def _time_of(request, name: str, path: str = "") -> datetime | None:
    """A Timestamp field as a datetime, or None when unset; one out of Timestamp's range is bad input."""
    if not request.HasField(name):
        return None
    ts = getattr(request, name)
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        field = f"{path}.{name}" if path else name
        raise de.InvalidArgument(
            f"{field}: seconds {ts.seconds}, nanos {ts.nanos} is not a valid timestamp "
            "(years 1-9999, nanos 0-999999999)",
            field=field,
        ) from None


def _duration_of(request, name: str, path: str = "") -> timedelta | None:
    if not request.HasField(name):
        return None
    value = getattr(request, name)
    field = f"{path}.{name}" if path else name
    # Duration's own rule: nanos within a second and of the same sign as the seconds.
    if not -999_999_999 <= value.nanos <= 999_999_999 or (
        value.seconds and value.nanos and (value.seconds > 0) != (value.nanos > 0)
    ):
        raise de.InvalidArgument(
            f"{field}: seconds {value.seconds}, nanos {value.nanos} is not a valid duration", field=field
        )
    try:
        return value.ToTimedelta()
    except (ValueError, OverflowError):
        raise de.InvalidArgument(f"{field}: {value.seconds} seconds is out of range", field=field) from None


def to_command(request: api.SendMessageRequest, path: str = "") -> SendCommand:
    _reject_unknown_fields(request, path)
    return SendCommand(
        to=request.to,
        sender=getattr(request, "from"),
        body=request.body,
        idempotency_key=request.idempotency_key,
        send_at=_time_of(request, "send_at", path),
        validity_period=_duration_of(request, "validity_period", path),
        metadata=dict(request.metadata),
        status_callback_url=request.status_callback_url,
        media_urls=tuple(request.media_urls),
        tags=tuple(request.tags),
        priority=request.priority,
    )


def _item_error_of(error: de.DomainError, path: str) -> api.ItemError:
    """The per-item form of an RPC error; `path` prefixes the field (e.g. "messages[3]")."""
    field = error.field or ""
    if path and field and not field.startswith(path):
        field = f"{path}.{field}"
    return api.ItemError(
        grpc_code=grpc_code_for(error).value[0],
        error_code=error.code,
        reason=error.reason,
        field=field,
        message=error.message,
    )


def _item_error(index: int, error: de.DomainError) -> api.BatchItemResult:
    return api.BatchItemResult(index=index, error=_item_error_of(error, f"messages[{index}]"))


class MessagingServicer(api_grpc.MessagingServiceServicer):
    def __init__(
        self,
        intake: Intake,
        auth: Authenticator,
        max_streams_per_account: int = 100,
        cursors: CursorCodec | None = None,
    ):
        self.intake = intake
        self.auth = auth
        #: Signs the cursors of Watch streams; every replica must share its secret.
        self.cursors = cursors or CursorCodec(DEVELOPMENT_SECRET)
        #: Open streams (Watch*, SendStream) per account on this server: a client that opens
        #: streams in a loop must not take the server's memory and file descriptors.
        self.max_streams_per_account = max_streams_per_account
        self._streams: dict[str, int] = {}

    def _stream_account(self, context: grpc.aio.ServicerContext, scope: int, what: str) -> str:
        """The caller's account, holding one of its stream slots until the call ends."""
        return self._stream_caller(context, scope, what).account_id

    def _stream_caller(self, context: grpc.aio.ServicerContext, scope: int, what: str) -> cr.Principal:
        """The caller, holding one of its account's stream slots until the call ends."""
        principal = self.auth.principal(context, scope, what)
        account = principal.account_id
        open_streams = self._streams.get(account, 0)
        if open_streams >= self.max_streams_per_account:
            raise de.TooManyStreams(
                f"{what}: this account has {open_streams} streams open on this server, the most it may; "
                "close one (or reuse WatchMessages for every message) and retry",
                metadata={"limit": str(self.max_streams_per_account)},
            )
        self._streams[account] = open_streams + 1
        context.add_done_callback(lambda _: self._release_stream(account))
        return principal

    def _release_stream(self, account: str) -> None:
        left = self._streams.get(account, 1) - 1
        if left > 0:
            self._streams[account] = left
        else:
            self._streams.pop(account, None)

    def _account(self, context: grpc.aio.ServicerContext, scope: int, what: str) -> str:
        """The caller's account, if its key may do `what`; the account never comes from the request."""
        return self.auth.principal(context, scope, what).account_id

    def _sender(self, context: grpc.aio.ServicerContext, what: str) -> tuple[str, SendGrant | None]:
        """The sending account and what it may send (senders, destinations)."""
        principal = self.auth.principal(context, cr.SEND, what)
        return principal.account_id, self.auth.grant(principal)

    @unary_rpc
    async def SendMessage(self, request, context):
        account, senders = self._sender(context, "SendMessage")
        state, duplicate = await self.intake.send(
            account, to_command(request), senders, within=context.time_remaining()
        )
        return api.SendMessageResponse(message=message_view(state), duplicate=duplicate)

    @unary_rpc
    async def SendBatch(self, request, context):
        account, senders = self._sender(context, "SendBatch")
        _reject_unknown_fields(request)
        if not request.messages:
            raise de.MissingField("messages: at least one message is required", field="messages")
        if len(request.messages) > MAX_BATCH:
            raise de.BatchTooLarge(
                f"messages: {len(request.messages)} messages; at most {MAX_BATCH} per batch, split it",
                field="messages",
            )

        commands: list[SendCommand | de.DomainError] = []
        for index, item in enumerate(request.messages):
            try:
                commands.append(to_command(item, f"messages[{index}]"))
            except de.DomainError as error:
                commands.append(error)
        outcomes = await self.intake.send_many(account, commands, senders, within=context.time_remaining())
        results = [
            _item_error(index, outcome)
            if isinstance(outcome, de.DomainError)
            else api.BatchItemResult(
                index=index, accepted=api.SendMessageResponse(message=message_view(outcome[0]), duplicate=outcome[1])
            )
            for index, outcome in enumerate(outcomes)
        ]
        return api.SendBatchResponse(results=results)

    async def SendStream(self, request_iterator, context):
        """One response per request, in request order, each once its message is in the log.

        A reader task takes requests while at most STREAM_WINDOW messages are in flight (then it
        stops reading, and gRPC's flow control holds the client). A batcher takes whatever has
        arrived since it last looked (at least one, at most MAX_BATCH) and appends it with one
        `send_many`, without waiting for the previous batch's acks: a slow sender's messages go
        one by one, a fast one's in batches as large as what arrived meanwhile."""
        try:
            caller = self._stream_caller(context, cr.SEND, "SendStream")
            account, senders = caller.account_id, self.auth.grant(caller)
        except de.DomainError as error:
            await abort_with(context, error)
            return
        window = asyncio.Semaphore(STREAM_WINDOW)
        batches = asyncio.Semaphore(STREAM_BATCHES)
        arrived: asyncio.Queue = asyncio.Queue()  # (sequence, request) in request order; None: no more
        answers: asyncio.Queue = asyncio.Queue()  # a task per batch, in request order; None ends the stream

        def command_of(request: api.SendStreamRequest) -> SendCommand | de.DomainError:
            try:
                _reject_unknown_fields(request, "request")
                if not request.HasField("message"):
                    raise de.MissingField("message: required; put the message to send in it", field="message")
                return to_command(request.message, "message")
            except de.DomainError as error:
                return error

        async def one_batch(batch: list[tuple[int, api.SendStreamRequest]]) -> list[api.SendStreamResponse]:
            responses = [api.SendStreamResponse(sequence=sequence, client_ref=r.client_ref) for sequence, r in batch]
            try:
                commands = [command_of(r) for _, r in batch]
                outcomes = await self.intake.send_many(account, commands, senders)
                for response, command, outcome in zip(responses, commands, outcomes, strict=True):
                    if isinstance(outcome, de.DomainError):
                        # the request's own errors name their whole field; admission's are within "message"
                        response.error.CopyFrom(_item_error_of(outcome, "" if outcome is command else "message"))
                    else:
                        state, duplicate = outcome
                        response.accepted.CopyFrom(
                            api.SendMessageResponse(message=message_view(state), duplicate=duplicate)
                        )
            except Exception:
                log.exception("internal error in SendStream")
                fault = _item_error_of(de.ServerError("server-side error; it has been logged, retry later"), "message")
                for response in responses:
                    if not response.HasField("accepted"):
                        response.error.CopyFrom(fault)
            finally:
                batches.release()
                for _ in batch:
                    window.release()
            return responses

        async def read() -> None:
            sequence = 0
            try:
                async for request in request_iterator:
                    await window.acquire()
                    arrived.put_nowait((sequence, request))
                    sequence += 1
            finally:
                arrived.put_nowait(None)

        async def batch() -> None:
            try:
                ended = False
                while not ended:
                    # While STREAM_BATCHES batches wait for their acks, requests gather for the next.
                    await batches.acquire()
                    if (first := await arrived.get()) is None:
                        break
                    taken = [first]
                    while len(taken) < MAX_BATCH and not arrived.empty():
                        if (item := arrived.get_nowait()) is None:
                            ended = True
                            break
                        taken.append(item)
                    answers.put_nowait(asyncio.create_task(one_batch(taken)))
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read())
        batcher = asyncio.create_task(batch())
        try:
            while (answer := await answers.get()) is not None:
                for response in await answer:
                    yield response
            await reader  # a failed read (e.g. a malformed request) ends the call with its error
        finally:
            # Appends already started finish (their messages are accepted; a client that lost
            # the response resends with its idempotency key); nothing more is read.
            reader.cancel()
            batcher.cancel()

    @unary_rpc
    async def GetMessage(self, request, context):
        _reject_unknown_fields(request)
        return message_view(await self.intake.lookup(self._account(context, cr.READ, "GetMessage"), request.id))

    @unary_rpc
    async def ListMessages(self, request, context):
        _reject_unknown_fields(request)
        flt = MessageFilter(
            account_id=self._account(context, cr.READ, "ListMessages"),
            statuses=frozenset(request.statuses),
            to=request.to,
            sender=getattr(request, "from"),
            created_after=_time_of(request, "created_after"),
            created_before=_time_of(request, "created_before"),
            tag=request.tag,
        )
        messages, token = await self.intake.list_messages(flt, request.page_size, request.page_token)
        return api.ListMessagesResponse(messages=messages, next_page_token=token)

    async def WatchMessage(self, request, context):
        try:
            _reject_unknown_fields(request)
            account = self._stream_account(context, cr.READ, "WatchMessage")
            await self.intake.lookup(account, request.id)
        except de.DomainError as error:
            await abort_with(context, error)
            return
        live = self.intake.live
        watcher = live.watch(request.id)
        try:
            # Subscribe before reading the snapshot so no change falls between the two.
            state = await self.intake.current_state(request.id)
            if state is None:
                return  # looked up a moment ago; gone only if the store was rebuilt meanwhile
            last_status, last_version = state.status, state.version
            yield api.MessageUpdate(message=message_view(state))
            while not st.is_final(last_status):
                update = await watcher.next()
                if update is None:
                    # Fell behind (a client that does not read): the store has the newest state.
                    live.unwatch(request.id, watcher)
                    watcher = live.watch(request.id)
                    envelope, newest = None, await self.intake.current_state(request.id)
                else:
                    envelope, newest = update
                if newest is None or newest.version <= last_version:
                    continue  # older than what this stream has shown (an own append came first)
                last_version = newest.version
                if newest.status != last_status:
                    last_status = newest.status
                    yield api.MessageUpdate(
                        message=message_view(newest),
                        event_id=envelope.event_id if envelope else "",
                        event_type=envelope.type if envelope else "",
                    )
        finally:
            live.unwatch(request.id, watcher)

    async def WatchMessages(self, request, context):
        async with aclosing(self._account_watch(request, context, "WatchMessages", batched=False)) as chunks:
            async for account, updates, positions in chunks:
                if not updates:
                    yield api.MessageUpdate(cursor=self.cursors.encode(account, positions))
                for update in updates:
                    yield update

    async def WatchMessageBatches(self, request, context):
        async with aclosing(self._account_watch(request, context, "WatchMessageBatches", batched=True)) as chunks:
            async for account, updates, positions in chunks:
                yield api.WatchMessageBatchesResponse(updates=updates, cursor=self.cursors.encode(account, positions))

    async def _account_watch(self, request, context, method: str, *, batched: bool):
        """An account-wide watch: lists of updates, each with the positions right after its last,
        to be sent before the next is asked for; an empty list is the position the stream starts
        from. WatchMessages (not `batched`): one update a list, each with its own cursor.
        WatchMessageBatches: up to the request's max_updates a list, whose cursor the caller sends."""
        try:
            _reject_unknown_fields(request)
            account = self._stream_account(context, cr.READ, method)
            positions = self.cursors.decode(account, request.cursor) if request.cursor else None
            limit = _watch_batch_limit(request.max_updates) if batched else 1
        except de.DomainError as error:
            await abort_with(context, error)
            return
        live, projector = self.intake.live, self.intake.projector
        statuses = frozenset(request.statuses)
        cursor_each = not batched

        # Only what this stream sends is queued: a status change it asked for.
        def wants(entry: LoggedEvent) -> bool:
            return _sends(entry, statuses)

        def updates_of(entries, at: dict[int, int], live_ones: bool) -> list[api.MessageUpdate]:
            """The updates `entries` make, moving `at` past each entry."""
            updates = []
            for entry in entries:
                # A live entry the store was read past (the replay below) was sent from there.
                if live_ones and not is_after(at, entry.partition, entry.offset):
                    continue
                update = self._account_update(account, entry, at, statuses, cursor_each)
                if update is not None:
                    updates.append(update)
            return updates

        async def replayed(at: dict[int, int]):
            """What the store holds after `at`, in lists of at most `limit` updates (moving `at`)."""
            async for page in self._replayed(account, at):
                for start in range(0, len(page), limit):
                    if updates := updates_of(page[start : start + limit], at, False):
                        yield updates

        watcher = None
        try:
            if positions is not None:
                # Resuming: what the cursor missed is read from the store first, before the
                # stream has a live queue (a long way behind must not fill one meanwhile)...
                yield account, [], positions
                async with aclosing(replayed(positions)) as pages:
                    async for updates in pages:
                        yield account, updates, positions
            # ...then subscribe, and read the store once more for what came in between: a record
            # committed after the subscription is in the queue too, skipped there if read here.
            watcher = live.watch_account(account, wants)
            if positions is None:
                positions = dict(projector.positions)
                yield account, [], positions
                # A follower told only what is watched may pass this account's events it read
                # before it knew of this stream: they are in the store.
                replay = not projector.tells_every_event
            else:
                replay = True
            if replay:
                async with aclosing(replayed(positions)) as pages:
                    async for updates in pages:
                        yield account, updates, positions
            while (entry := await watcher.next()) is not None:
                # What else is waiting goes in the same list: one response for a burst.
                if updates := updates_of([entry, *watcher.ready(limit - 1)], positions, True):
                    yield account, updates, positions
            await self._end_fallen_behind(context, method, account, positions, watcher.queue.maxsize)
        finally:
            if watcher is not None:
                live.unwatch_account(account, watcher)

    async def _replayed(self, account: str, positions: dict[int, int]):
        """The account's events after `positions` that the store holds, page by page (a stream
        reads on only as fast as its client takes them); the caller moves `positions` past each."""
        store = self.intake.store
        for partition in self.intake.projector.partitions:
            start = positions.get(partition, 0)
            while True:
                page = await store.account_events(account, partition, start, limit=REPLAY_PAGE)
                if page:
                    yield page
                    start = page[-1].offset + 1
                if len(page) < REPLAY_PAGE:
                    break

    async def _end_fallen_behind(
        self, context, method: str, account: str, positions: dict[int, int], queue_size: int
    ) -> None:
        """Ends a stream whose client read slower than its updates came (its queue overflowed and
        was released) with the cursor of the last position it was sent: opened again from it,
        the stream reads what it missed from the store or the log, and nothing is lost."""
        log.info("%s of %s fell behind; ended with the cursor to resume from", method, account)
        cursor = self.cursors.encode(account, positions)
        await abort_with(
            context,
            de.WatchFellBehind(
                f"{method}: this stream's client read slower than its updates came, so the server "
                f"stopped keeping them (at most {queue_size} waiting); open it again with "
                "metadata.cursor (the last position sent): nothing after it is lost",
                metadata={"cursor": cursor, "queue_size": str(queue_size)},
            ),
        )

    async def WatchInbound(self, request, context):
        try:
            _reject_unknown_fields(request)
            account = self._stream_account(context, cr.READ, "WatchInbound")
            positions = self.cursors.decode(account, request.cursor) if request.cursor else None
        except de.DomainError as error:
            await abort_with(context, error)
            return
        inbound = self.intake.inbound
        watcher = None
        try:
            if positions is not None:
                # Resuming: what the cursor missed is read from the log first, before the stream
                # has a live queue; then subscribe and read what came in between.
                yield api.InboundMessageUpdate(cursor=self.cursors.encode(account, positions))
                async for update in self._inbound_replayed(account, positions):
                    yield update
                watcher = inbound.watch(account)
                async for update in self._inbound_replayed(account, positions):
                    yield update
            else:
                watcher = inbound.watch(account)
                positions = dict(inbound.positions)
                yield api.InboundMessageUpdate(cursor=self.cursors.encode(account, positions))
            while (entry := await watcher.next()) is not None:
                if is_after(positions, entry.partition, entry.offset):
                    positions[entry.partition] = entry.offset + 1
                    yield api.InboundMessageUpdate(
                        message=inbound_view(entry.event), cursor=self.cursors.encode(account, positions)
                    )
            await self._end_fallen_behind(context, "WatchInbound", account, positions, watcher.queue.maxsize)
        finally:
            if watcher is not None:
                inbound.unwatch(account, watcher)

    async def _inbound_replayed(self, account: str, positions: dict[int, int]):
        """The account's inbound messages after `positions`, up to what the projection has applied
        (later ones reach the stream through its live queue), read from the log; `positions`
        moves past each."""
        history = self.intake.inbound_history
        if history is None:
            raise RuntimeError("WatchInbound cannot resume: this intake has no inbound history reader")
        async for missed in history.read(account, positions, dict(self.intake.inbound.positions)):
            if is_after(positions, missed.partition, missed.offset):
                positions[missed.partition] = missed.offset + 1
                yield api.InboundMessageUpdate(
                    message=inbound_view(missed.event), cursor=self.cursors.encode(account, positions)
                )

    def _account_update(
        self, account: str, entry, positions: dict[int, int], statuses: frozenset[int], with_cursor: bool = True
    ) -> api.MessageUpdate | None:
        positions[entry.partition] = entry.offset + 1
        if not _sends(entry, statuses):
            return None
        update = api.MessageUpdate(event_id=entry.envelope.event_id, event_type=entry.envelope.type)
        if with_cursor:
            update.cursor = self.cursors.encode(account, positions)
        if entry.view is not None:
            # The view the projector rendered for the store: parsed in C, ~1/7 of building it.
            update.message.MergeFromString(entry.view)
        else:
            update.message.CopyFrom(message_view(entry.state))
        return update

    @unary_rpc
    async def CancelMessage(self, request, context):
        _reject_unknown_fields(request)
        state = await self.intake.cancel(self._account(context, cr.SEND, "CancelMessage"), request.id, request.reason)
        return message_view(state)

    @unary_rpc
    async def GetMessageHistory(self, request, context):
        _reject_unknown_fields(request)
        history = await self.intake.history(self._account(context, cr.READ, "GetMessageHistory"), request.id)
        entries = [api.HistoryEntry(event=h.envelope, status_after=h.status_after) for h in history]
        return api.GetMessageHistoryResponse(entries=entries)


def _lane(envelope: ev.EventEnvelope) -> list[tuple[str, bytes]]:
    """A HIGH message's MessageQueued is marked, for routing to take it ahead of a poll's other records."""
    if envelope.WhichOneof("payload") != "message_queued":
        return []
    return lane_headers(envelope.message_queued.priority)


def _watch_batch_limit(max_updates: int) -> int:
    """WatchMessageBatches' max_updates: 0 is the default, more than the most is the most."""
    if max_updates < 0:
        raise de.InvalidArgument(
            f"max_updates: must be 0 (default: {MAX_WATCH_BATCH}) to {MAX_WATCH_BATCH}, not {max_updates}",
            field="max_updates",
        )
    return min(max_updates or MAX_WATCH_BATCH, MAX_WATCH_BATCH)


def _sends(entry: LoggedEvent, statuses: frozenset[int]) -> bool:
    """WatchMessages sends an event that changed its message's status to one the stream asked for
    (any, if it named none); the same test decides what its queue takes."""
    return entry.changed_status and (not statuses or entry.state.status in statuses)
