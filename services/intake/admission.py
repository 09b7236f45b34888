"""Admission of a send request: validate it and turn it into a MessageQueued event.

Pure domain code: no grpc, no Kafka. Every rule raises a named domain error that
names the field, says why, and says what is valid.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from smsgw.domain import encoding as enc
from smsgw.domain import errors as de
from smsgw.domain.phone import normalize_e164
from smsgw.domain.public_urls import UrlPolicy, check_public_url
from smsgw.domain.routes import CarrierCapabilities, MessageFacts
from smsgw.domain.senders import choose_sender, normalize_sender
from smsgw.events.envelope import timestamp
from smsgw.v1 import events_pb2 as ev
from smsgw.v1 import message_pb2 as mp

_ENCODINGS = {enc.Encoding.GSM7: mp.Encoding.GSM7, enc.Encoding.UCS2: mp.Encoding.UCS2}


@dataclass(frozen=True)
class AdmissionPolicy:
    max_segments: int = enc.MAX_SEGMENTS
    default_sender: str = "+14155550000"
    default_validity: timedelta = timedelta(hours=48)
    min_validity: timedelta = timedelta(minutes=1)
    max_validity: timedelta = timedelta(days=7)
    max_schedule_ahead: timedelta = timedelta(days=35)
    # A send_at this little in the past is clock skew: it means "now".
    schedule_skew: timedelta = timedelta(seconds=60)
    max_metadata_entries: int = 20
    max_metadata_key: int = 64
    max_metadata_value: int = 256
    max_idempotency_key: int = 128
    # Callback and media URLs: public https only, unless development settings allow more.
    urls: UrlPolicy = UrlPolicy()
    max_media: int = 10
    max_tags: int = 10
    max_tag_length: int = 64


@dataclass(frozen=True)
class SendCommand:
    """A send request as the domain sees it, decoupled from the wire format."""

    to: str
    sender: str
    body: str
    idempotency_key: str = ""
    send_at: datetime | None = None
    validity_period: timedelta | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    status_callback_url: str = ""
    media_urls: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    priority: mp.MessagePriority = mp.MessagePriority.MESSAGE_PRIORITY_UNSPECIFIED  # unset is NORMAL


def admit(
    command: SendCommand,
    *,
    now: datetime,
    policy: AdmissionPolicy = AdmissionPolicy(),
    capabilities: CarrierCapabilities | None = None,
    own_senders: tuple[str, ...] | None = None,
    sender_pool: bool = False,
    smart_encoding: bool = False,
    account_id: str = "",
) -> ev.MessageQueued:
    """Validates the command; returns the MessageQueued payload it becomes.

    `own_senders`: the account's senders (normalised, the default first) when the caller's
    identity is known; the sender must then be one of them (or the server's default for an
    account with none). None: any valid sender (a trusted-header test harness)."""
    to = normalize_e164(command.to, field="to")
    check_media_urls(command.media_urls, policy)
    check_tags(command.tags, policy)
    if own_senders is None:
        sender = normalize_sender(command.sender or policy.default_sender)
    else:
        requested = normalize_sender(command.sender) if command.sender.strip() else ""
        sender = choose_sender(requested, own_senders, policy.default_sender, to=to if sender_pool else "")
    if capabilities is not None and command.media_urls:
        facts = MessageFacts(to=to, sender=sender, account=account_id, tags=frozenset(command.tags))
        capabilities.check_media(facts, list(command.media_urls))
    # Smart encoding first: a text too long in UCS-2 may fit once it is GSM-7.
    body = (enc.smart_encoded(command.body) if smart_encoding and command.body else None) or command.body
    plan = check_body(body, policy)
    send_at = check_send_at(command.send_at, now, policy)
    validity = check_validity(command.validity_period, policy)
    check_metadata(command.metadata, policy)
    check_callback_url(command.status_callback_url, policy)
    check_idempotency_key(command.idempotency_key, policy)
    check_priority(command.priority)
    queued = ev.MessageQueued(
        to=to,
        content=ev.MessageContent(text=body),
        segments=plan.segments,
        segments_before_smart_encoding=enc.plan_segments(command.body).segments if body != command.body else 0,
        encoding=_ENCODINGS[plan.encoding],
        metadata=command.metadata,
        status_callback_url=command.status_callback_url,
        idempotency_key=command.idempotency_key,
        request_fingerprint=fingerprint(command),
        media_urls=command.media_urls,
        tags=command.tags,
        priority=command.priority,
    )
    setattr(queued, "from", sender)  # `from` is a Python keyword, hence setattr
    if send_at is not None:
        queued.send_at.CopyFrom(timestamp(send_at))
    queued.expires_at.CopyFrom(timestamp((send_at or now) + validity))
    return queued


def check_media_urls(urls: tuple[str, ...], policy: AdmissionPolicy) -> None:
    if len(urls) > policy.max_media:
        raise de.InvalidArgument(f"media_urls: {len(urls)} items; at most {policy.max_media}", field="media_urls")
    for index, url in enumerate(urls):
        check_public_url(url, field=f"media_urls[{index}]", policy=policy.urls, purpose="media the carrier fetches")


def check_tags(tags: tuple[str, ...], policy: AdmissionPolicy) -> None:
    if len(tags) > policy.max_tags:
        raise de.InvalidArgument(f"tags: {len(tags)} tags; at most {policy.max_tags}", field="tags")
    for index, tag in enumerate(tags):
        if not 1 <= len(tag) <= policy.max_tag_length or tag != tag.strip():
            raise de.InvalidArgument(
                f"tags[{index}]: must be 1-{policy.max_tag_length} characters without surrounding spaces",
                field=f"tags[{index}]",
            )


def check_body(body: str, policy: AdmissionPolicy) -> enc.SegmentPlan:
    if not body:
        raise de.EmptyBody("body: must not be empty; send 1 or more characters of text", field="body")
    plan = enc.plan_segments(body)
    if plan.segments > policy.max_segments:
        unit = "GSM-7 septets" if plan.encoding is enc.Encoding.GSM7 else "UCS-2 code units"
        per_part = 153 if plan.encoding is enc.Encoding.GSM7 else 67
        raise de.BodyTooLong(
            f"body: needs {plan.segments} SMS parts ({plan.units} {unit}, {plan.encoding.value}); "
            f"the limit is {policy.max_segments} parts (about {policy.max_segments * per_part} {unit}). "
            "Shorten the text, or avoid characters outside the GSM alphabet (emoji, some accents) which force UCS-2",
            field="body",
            metadata={
                "segments": str(plan.segments),
                "max_segments": str(policy.max_segments),
                "encoding": plan.encoding.value,
            },
        )
    return plan


def check_send_at(send_at: datetime | None, now: datetime, policy: AdmissionPolicy) -> datetime | None:
    if send_at is None:
        return None
    if send_at < now - policy.schedule_skew:
        raise de.InvalidSchedule(
            f"send_at: {send_at.isoformat()} is in the past; leave it unset to send now, or give a future time",
            field="send_at",
        )
    if send_at > now + policy.max_schedule_ahead:
        raise de.InvalidSchedule(
            f"send_at: at most {policy.max_schedule_ahead.days} days ahead",
            field="send_at",
        )
    return send_at if send_at > now else None


def check_validity(validity: timedelta | None, policy: AdmissionPolicy) -> timedelta:
    if validity is None:
        return policy.default_validity
    if not policy.min_validity <= validity <= policy.max_validity:
        raise de.InvalidArgument(
            f"validity_period: {validity.total_seconds():.0f}s is out of range; "
            f"use {policy.min_validity.total_seconds():.0f}s to {policy.max_validity.total_seconds():.0f}s, "
            "or leave it unset for the default",
            field="validity_period",
        )
    return validity


def check_metadata(metadata: dict[str, str], policy: AdmissionPolicy) -> None:
    if len(metadata) > policy.max_metadata_entries:
        raise de.InvalidArgument(
            f"metadata: {len(metadata)} entries; at most {policy.max_metadata_entries}", field="metadata"
        )
    for key, value in metadata.items():
        if not key or len(key) > policy.max_metadata_key:
            raise de.InvalidArgument(
                f"metadata: key {key[:16]!r} must be 1-{policy.max_metadata_key} characters",
                field=f"metadata[{key[:16]}]",
            )
        if len(value) > policy.max_metadata_value:
            raise de.InvalidArgument(
                f"metadata[{key}]: value is {len(value)} characters; at most {policy.max_metadata_value}",
                field=f"metadata[{key}]",
            )


def check_callback_url(url: str, policy: AdmissionPolicy) -> None:
    if url:
        check_public_url(url, field="status_callback_url", policy=policy.urls, purpose="a status callback URL")


_PRIORITIES = {
    mp.MessagePriority.MESSAGE_PRIORITY_UNSPECIFIED,
    mp.MessagePriority.MESSAGE_PRIORITY_NORMAL,
    mp.MessagePriority.MESSAGE_PRIORITY_HIGH,
}


def check_priority(priority: int) -> None:
    if priority not in _PRIORITIES:
        raise de.InvalidArgument(
            f"priority: {priority} is not a MessagePriority; use MESSAGE_PRIORITY_NORMAL (1, the default) "
            "or MESSAGE_PRIORITY_HIGH (2, one-time passwords and alerts)",
            field="priority",
        )


def check_idempotency_key(key: str, policy: AdmissionPolicy) -> None:
    if len(key) > policy.max_idempotency_key:
        raise de.InvalidArgument(
            f"idempotency_key: {len(key)} characters; at most {policy.max_idempotency_key}", field="idempotency_key"
        )


def fingerprint(command: SendCommand) -> str:
    """What makes two requests 'the same' for the idempotency check."""
    canonical = json.dumps(
        {
            "to": command.to,
            "from": command.sender,
            "body": command.body,
            "send_at": command.send_at.isoformat() if command.send_at else None,
            "validity": command.validity_period.total_seconds() if command.validity_period else None,
            "metadata": dict(sorted(command.metadata.items())),
            "cb": command.status_callback_url,
            "media": list(command.media_urls),
            "tags": list(command.tags),
            # Only when set, so that the requests of clients that never set it keep their fingerprints.
            **({"priority": command.priority} if command.priority else {}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
