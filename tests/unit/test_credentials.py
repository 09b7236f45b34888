"""API keys and the directory of accounts and keys (pure: no broker, no gRPC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from smsgw.domain import credentials as cr
from smsgw.domain import errors as de
from smsgw.v1 import accounts_pb2 as ac

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def directory_with(*accounts: str) -> cr.Directory:
    directory = cr.Directory()
    for account in accounts:
        directory.apply(directory.create_account(account, account.upper(), actor="admin1", now=NOW))
    return directory


def issue(directory: cr.Directory, account: str, scopes=(cr.SEND, cr.READ)) -> tuple[str, str]:
    event, key = directory.create_key(account, scopes, "test", actor="admin1", now=NOW)
    assert directory.apply(event)
    return event.api_key_created.key_id, key


def test_a_new_key_has_its_id_inside_and_256_random_bits():
    key_id, key = cr.new_key()
    assert key.startswith(f"sgw_{key_id}_") and len(key_id) == 16
    assert cr.key_id_of(key) == key_id
    assert len(key.split("_", 2)[2]) == 43  # 32 bytes, URL-safe base64
    assert cr.new_key()[1] != key
    for not_a_key in (
        "",
        "sgw",
        f"sgw_{key_id}",
        f"sgw_{key_id}_short",
        f"xyz_{key_id}_" + "a" * 43,
        "sgw_NOTHEX0000000000_" + "a" * 43,
    ):
        assert cr.key_id_of(not_a_key) is None


def test_only_the_hash_of_a_key_is_in_the_event():
    directory = directory_with("acme")
    event, key = directory.create_key("acme", [cr.SEND], "backend", actor="admin1", now=NOW)
    assert key not in event.SerializeToString().decode("latin-1")
    assert event.api_key_created.secret_sha256 == cr.digest(key)
    assert (event.account_id, event.actor, event.type) == ("acme", "admin1", "smsgw.v1.ApiKeyCreated")


def test_a_key_authenticates_as_its_account_with_its_scopes():
    directory = directory_with("acme")
    key_id, key = issue(directory, "acme", [cr.SEND])
    principal = directory.authenticate(f"Bearer {key}")
    assert principal == cr.Principal("acme", key_id, frozenset({cr.SEND}))
    assert directory.authenticate(f"bearer  {key} ").account_id == "acme"  # scheme is case-insensitive
    principal.require(cr.SEND, "SendMessage")
    with pytest.raises(de.PermissionDenied) as denied:
        principal.require(cr.READ, "GetMessage")
    assert "GetMessage needs an API key with the 'read' scope" in denied.value.message
    assert denied.value.metadata == {"required_scope": "read", "key_id": key_id}


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer sgw_0000000000000000_" + "a" * 43, "Bearer not-a-key"]
)
def test_every_bad_credential_reads_the_same(header):
    directory = directory_with("acme")
    _, key = issue(directory, "acme")
    with pytest.raises(de.Unauthenticated) as refused:
        directory.authenticate(header)
    assert refused.value.message == cr._UNAUTHENTICATED
    # A real key id with a wrong secret: the same words, nothing about the id.
    key_id = cr.key_id_of(key)
    with pytest.raises(de.Unauthenticated) as wrong_secret:
        directory.authenticate(f"Bearer sgw_{key_id}_" + "b" * 43)
    assert wrong_secret.value.message == refused.value.message and key_id not in wrong_secret.value.message


def test_a_revoked_key_stops_working_and_rotation_swaps_keys():
    directory = directory_with("acme")
    key_id, key = issue(directory, "acme")
    events, new = directory.rotate_key(key_id, actor="admin2", now=NOW + timedelta(minutes=1))
    for event in events:
        directory.apply(event)
    with pytest.raises(de.Unauthenticated):
        directory.authenticate(f"Bearer {key}")
    principal = directory.authenticate(f"Bearer {new}")
    assert principal.account_id == "acme" and principal.scopes == frozenset({cr.SEND, cr.READ})
    replaced = directory.keys[principal.key_id]
    assert replaced.rotated_from == key_id and replaced.created_by == "admin2"
    assert directory.keys[key_id].revoked_at == NOW + timedelta(minutes=1)
    with pytest.raises(de.ApiKeyNotFound):
        directory.revoke_key(key_id, "again", actor="admin2", now=NOW)  # revoked already


def test_only_an_act_as_key_may_name_another_account():
    directory = directory_with("acme", "platform")
    _, customer = issue(directory, "acme")
    _, service = issue(directory, "platform", [cr.SEND, cr.ACT_AS_ANY_ACCOUNT])
    with pytest.raises(de.PermissionDenied) as denied:
        directory.authenticate(f"Bearer {customer}", acting_for="globex")
    assert denied.value.field == "x-smsgw-account"
    assert directory.authenticate(f"Bearer {customer}", acting_for="acme").account_id == "acme"
    assert directory.authenticate(f"Bearer {service}", acting_for="globex").account_id == "globex"
    assert directory.authenticate(f"Bearer {service}").account_id == "platform"
    with pytest.raises(de.InvalidArgument):
        directory.authenticate(f"Bearer {service}", acting_for="not an id!")


def test_the_directory_is_the_fold_of_its_events_and_ignores_copies():
    first = directory_with("acme")
    _, key = issue(first, "acme")
    replay = cr.Directory()
    for event in first.events + first.events:  # every event twice, as an at-least-once log may
        replay.apply(event)
    assert replay.accounts == first.accounts and replay.keys == first.keys
    assert len(replay.events) == len(first.events) == 2
    assert replay.authenticate(f"Bearer {key}").account_id == "acme"


def test_admin_decisions_check_their_input():
    directory = directory_with("acme")
    with pytest.raises(de.AccountExists):
        directory.create_account("acme", "", actor="a", now=NOW)
    with pytest.raises(de.InvalidArgument, match="id: 'a b' is not an account id"):
        directory.create_account("a b", "", actor="a", now=NOW)
    with pytest.raises(de.AccountNotFound):
        directory.create_key("globex", [cr.SEND], "", actor="a", now=NOW)
    with pytest.raises(de.InvalidArgument, match="unknown scope value"):
        directory.create_key("acme", [99], "", actor="a", now=NOW)
    event, _ = directory.create_key("acme", [], "", actor="a", now=NOW)
    assert set(event.api_key_created.scopes) == cr.DEFAULT_SCOPES
    with pytest.raises(de.ApiKeyNotFound):
        directory.revoke_key("0123456789abcdef", "", actor="a", now=NOW)


def test_configured_keys_work_and_are_changed_only_in_configuration():
    _, key = cr.new_key()
    document = {"keys": [cr.configured_entry(key, "operator", ["admin"], "first admin")]}
    directory = cr.Directory()
    for record in cr.configured_keys(document):
        directory.add_configured(record)
    principal = directory.authenticate(f"Bearer {key}")
    assert (principal.account_id, principal.scopes) == ("operator", frozenset({cr.ADMIN}))
    with pytest.raises(de.InvalidArgument, match="bootstrap key"):
        directory.revoke_key(principal.key_id, "", actor="x", now=NOW)
    # A revocation in the log cannot switch a configured key off either.
    directory.apply(
        ac.AccountEvent(
            event_id="e1", account_id="operator", actor="x", api_key_revoked=ac.ApiKeyRevoked(key_id=principal.key_id)
        )
    )
    assert directory.authenticate(f"Bearer {key}").key_id == principal.key_id


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"id": "xyz", "account": "a", "scopes": ["admin"], "sha256": "0" * 64}, "keys[0].id"),
        ({"id": "0" * 16, "account": "a b", "scopes": ["admin"], "sha256": "0" * 64}, "keys[0].account"),
        ({"id": "0" * 16, "account": "a", "scopes": ["admin"], "sha256": "abc"}, "keys[0].sha256"),
        ({"id": "0" * 16, "account": "a", "scopes": ["root"], "sha256": "0" * 64}, "unknown scope 'root'"),
        ({"id": "0" * 16, "account": "a", "scopes": [], "sha256": "0" * 64}, "keys[0].scopes"),
    ],
)
def test_a_bad_bootstrap_file_is_refused_with_the_entry_and_field(entry, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        cr.configured_keys({"keys": [entry]})
