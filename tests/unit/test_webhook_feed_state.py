"""The webhook feed holds the state of messages in flight only: a message with no webhook URL is
never held, and a message's state is dropped once final (a final status never changes, so nothing
after it makes a webhook). Bounded memory over any number of messages (the bounded-state issue)."""

from __future__ import annotations

import json

from aiokafka import TopicPartition

from smsgw.kafka.connection import KafkaConnection
from smsgw.v1 import events_pb2 as ev
from smsgw_receipt.webhook_feed import WebhookFeed
from smsgw_receipt.webhooks.accounts import StaticAccountSecrets
from tests.unit.test_webhook_payload import delivered_receipt, event, happy_path, queued

TP = TopicPartition("events", 0)


class Hooks:
    def __init__(self) -> None:
        self.sent: list = []

    def enqueue(self, hook, on_settled=None) -> None:
        self.sent.append(hook)
        if on_settled is not None:
            on_settled()


def feed() -> tuple[WebhookFeed, Hooks]:
    hooks = Hooks()
    return WebhookFeed(
        consumer=None,
        kafka=KafkaConnection(bootstrap=""),
        events_topic="events",
        inbound_topic="inbound",
        dispatcher=hooks,  # type: ignore[arg-type]  # records what would be sent, in place of WebhookDispatcher
        secrets=StaticAccountSecrets.single("s" * 20),
    ), hooks


def test_a_message_is_held_while_in_flight_and_dropped_when_final_with_every_webhook_sent():
    webhooks, hooks = feed()
    events = happy_path()
    for offset, envelope in enumerate(events[:-1]):
        webhooks._handle(TP, offset, envelope.SerializeToString())
    assert set(webhooks.states) == {"m1"}
    webhooks._handle(TP, len(events) - 1, events[-1].SerializeToString())
    assert webhooks.states == {}
    # Every transition's webhook, the final one included, as without the eviction.
    assert [json.loads(h.body)["message"]["status"] for h in hooks.sent] == ["QUEUED", "SENDING", "SENT", "DELIVERED"]
    # A copy of the final event, or a late receipt, changes nothing and sends nothing.
    webhooks._handle(TP, 10, events[-1].SerializeToString())
    webhooks._handle(TP, 11, delivered_receipt(6, 9).SerializeToString())
    assert webhooks.states == {} and len(hooks.sent) == 4


def test_memory_stays_flat_over_many_messages():
    webhooks, hooks = feed()
    offset = 0
    for n in range(2000):
        for envelope in happy_path():
            envelope.message_id = f"m{n}"
            webhooks._handle(TP, offset, envelope.SerializeToString())
            offset += 1
        # and as many without a URL, never held at all
        no_url = event(queued(url=""), 1, message_id=f"plain{n}")
        webhooks._handle(TP, offset, no_url.SerializeToString())
        offset += 1
    assert webhooks.states == {} and len(hooks.sent) == 2000 * 4


def test_a_message_that_is_not_final_stays_held():
    webhooks, _ = feed()
    webhooks._handle(TP, 0, event(queued(), 1).SerializeToString())
    webhooks._handle(TP, 1, event(ev.MessageRouted(carrier="smsc-sim", route="*"), 2, seconds=1).SerializeToString())
    assert set(webhooks.states) == {"m1"} and not webhooks.states["m1"].is_final
