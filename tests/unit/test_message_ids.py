"""New message ids: UUIDv7, so the stores keyed by message id insert at the right edge of their B-trees."""

from __future__ import annotations

import time
import uuid

from smsgw.events.envelope import derived_id, message_id_for_idempotency_key, new_message_id, random_id


def test_a_new_message_id_is_a_uuid_of_version_7_carrying_the_time_of_acceptance():
    before_ms = time.time_ns() // 1_000_000
    parsed = uuid.UUID(new_message_id())
    after_ms = time.time_ns() // 1_000_000
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before_ms <= parsed.int >> 80 <= after_ms  # the leading 48 bits: Unix time in ms


def test_ids_made_one_after_another_sort_in_the_order_they_were_made():
    ids = [new_message_id() for _ in range(20_000)]  # many within the same millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_an_idempotency_key_still_names_the_same_message_every_time():
    # Keyed messages keep their derived (version 5) id: two replicas must agree without talking.
    assert message_id_for_idempotency_key("acct", "k1") == message_id_for_idempotency_key("acct", "k1")
    assert uuid.UUID(message_id_for_idempotency_key("acct", "k1")).version == 5


def test_derived_ids_are_the_standard_librarys_uuid5_of_the_same_name():
    """Ids already in logs, stores and changelogs were made with uuid.uuid5: the faster uuid_utils
    must give each name the same id, or a re-processed event would not be known as a copy."""
    namespace = uuid.UUID("7b0f3c52-5a52-4c1e-9a63-5f1d2c7c9a10")
    names = [
        ("0190abcd-1234-7000-8000-123456789abc", "MessageRouted", ""),
        ("e-1", "DeliveryReported", "part 2/3"),
        ("ünïcødé ✓", "kind", "ä/ö"),
        ("", "", ""),
        *((str(uuid.uuid4()), f"k{n}", str(n)) for n in range(200)),
    ]
    for cause, kind, discriminator in names:
        assert derived_id(cause, kind, discriminator) == str(uuid.uuid5(namespace, f"{cause}/{kind}/{discriminator}"))
    assert message_id_for_idempotency_key("acct", "k1") == str(uuid.uuid5(namespace, "idempotency/acct/k1"))


def test_a_random_id_is_a_uuid_of_version_4_in_the_canonical_text_form_and_never_repeats():
    ids = [random_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:100]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert text == str(parsed)  # lower case, hyphenated: what the standard library writes
    # 122 random bits: every hex digit but the version's takes many values across the ids.
    assert all(len({text.replace("-", "")[i] for text in ids[:2000]}) == 16 for i in range(32) if i not in (12, 16))
