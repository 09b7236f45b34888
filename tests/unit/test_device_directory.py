"""The presence directory's pure rules: how records fold, when a phone is reachable, which
phone holds a message, what a replica writes when a phone changes, and which phone is
picked. Plus the wire forms (presence records, relay answers) and the advertised address."""

from __future__ import annotations

from dataclasses import replace

import pytest

from smsgw.v1 import device_relay_pb2 as dr
from smsgw.v1 import events_pb2 as ev
from smsgw_carrier_adapter.android.directory import (
    Candidate,
    DeviceDirectory,
    Presence,
    Tombstone,
    from_proto,
    pick_phone,
    presence_key,
    record_after_change,
    to_proto,
)
from smsgw_carrier_adapter.android.links import RelayAnswer
from smsgw_carrier_adapter.android.presence import SESSION_HEADER, decode, encode
from smsgw_carrier_adapter.android.relay import advertised_address, from_response, to_response
from smsgw_carrier_adapter.carrier import SubmitResult

NOW = 1_700_000_000.0


def presence(
    replica: str = "b#1",
    session: str = "s1",
    connected_at: float = NOW - 10,
    *,
    device: str = "pixel",
    pending=(),
    connected: bool = True,
    outstanding: int = 0,
    expires_in: float = 45.0,
) -> Presence:
    return Presence(
        account_id="acme",
        device_id=device,
        carrier="acme-phones",
        replica_id=replica,
        replica_address=f"{replica.split('#')[0]}:16053",
        session_id=session,
        connected=connected,
        outstanding=outstanding,
        pending=frozenset(pending),
        connected_at=connected_at,
        seen_at=NOW,
        expires_at=NOW + expires_in,
    )


# --- folding ---------------------------------------------------------------------------------


def test_a_record_then_the_tombstone_of_its_session_removes_the_phone():
    directory = DeviceDirectory()
    assert directory.apply(presence())
    assert directory.get("acme", "pixel").replica_id == "b#1"
    assert directory.apply(Tombstone("acme", "pixel", "s1"))
    assert directory.get("acme", "pixel") is None and len(directory) == 0


def test_the_late_tombstone_of_a_replaced_session_does_not_remove_the_phone_that_moved():
    directory = DeviceDirectory()
    directory.apply(presence("b#1", "s1", NOW - 10))
    directory.apply(presence("a#1", "s2", NOW - 1))  # the phone reconnected to replica a
    assert not directory.apply(Tombstone("acme", "pixel", "s1"))  # b noticed its stream ended, later
    assert directory.get("acme", "pixel").replica_id == "a#1"


def test_a_late_refresh_of_an_older_session_does_not_undo_the_move():
    directory = DeviceDirectory()
    directory.apply(presence("a#1", "s2", NOW - 1))
    assert not directory.apply(presence("b#1", "s1", NOW - 10))
    assert directory.get("acme", "pixel").session_id == "s2"


def test_a_refresh_of_the_same_session_replaces_its_record():
    directory = DeviceDirectory()
    directory.apply(presence(outstanding=1))
    assert directory.apply(presence(outstanding=4))
    assert directory.get("acme", "pixel").outstanding == 4


def test_a_phone_is_reachable_only_while_connected_and_refreshed():
    directory = DeviceDirectory()
    directory.apply(presence(expires_in=45))
    directory.apply(presence(device="galaxy", session="g1", connected=False, pending={"m1"}))
    assert [p.device_id for p in directory.reachable("acme", NOW)] == ["pixel"]
    assert directory.reachable("acme", NOW + 45) == []  # its replica stopped refreshing: gone
    assert directory.reachable("other", NOW) == []
    assert directory.get("acme", "pixel") is not None  # still known: its pending messages stay pinned


# --- which phone holds a message ---------------------------------------------------------------


def test_pending_messages_name_their_phone_even_once_its_replica_is_gone():
    directory = DeviceDirectory()
    directory.apply(presence(pending={"m1", "m2"}, expires_in=1))
    assert directory.holder_of("acme", "m1").device_id == "pixel"
    assert directory.holder_of("acme", "m1").reachable(NOW + 2) is False
    assert directory.holder_of("acme", "m3") is None
    assert directory.holder_of("other-account", "m1") is None


def test_pins_follow_the_latest_record_of_the_phone():
    directory = DeviceDirectory()
    directory.apply(presence("b#1", "s1", NOW - 10, pending={"m1", "m2"}))
    directory.apply(presence("a#1", "s2", NOW - 1, pending={"m2"}))  # m1 was reported meanwhile
    assert directory.holder_of("acme", "m1") is None
    assert directory.holder_of("acme", "m2").replica_id == "a#1"
    directory.apply(Tombstone("acme", "pixel", "s2"))
    assert directory.holder_of("acme", "m2") is None


def test_two_phones_do_not_share_pins():
    directory = DeviceDirectory()
    directory.apply(presence(device="pixel", pending={"m1"}))
    directory.apply(presence(device="galaxy", session="g1", pending={"m2"}))
    directory.apply(presence(device="pixel", pending=()))
    assert directory.holder_of("acme", "m1") is None
    assert directory.holder_of("acme", "m2").device_id == "galaxy"


# --- what a replica writes ---------------------------------------------------------------------


def _after(**kwargs):
    base = dict(
        connected_presence=None,
        account_id="acme",
        device_id="pixel",
        last_published=presence(),
        pending=frozenset(),
        outstanding=0,
        current=presence(),
        now=NOW + 5,
    )
    return record_after_change(**{**base, **kwargs})


def test_a_connected_phone_writes_its_presence():
    live = presence(outstanding=2, pending={"m1"})
    assert _after(connected_presence=live) is live


def test_a_phone_that_left_holding_nothing_writes_the_tombstone_of_its_session():
    assert _after() == Tombstone("acme", "pixel", "s1")


def test_a_phone_that_left_holding_accepted_messages_keeps_them_pinned():
    record = _after(pending=frozenset({"m1"}), outstanding=1)
    assert isinstance(record, Presence)
    assert (record.connected, record.pending, record.session_id) == (False, frozenset({"m1"}), "s1")
    assert not record.reachable(NOW + 5)


def test_nothing_is_written_for_a_phone_never_published_or_already_owned_by_a_newer_session_elsewhere():
    assert _after(last_published=None) is None
    assert _after(current=presence("a#1", "s2", NOW - 1)) is None
    # The directory not yet showing this replica's latest session is no reason to stay silent.
    assert _after(last_published=presence(session="s3", connected_at=NOW), current=presence()) == Tombstone(
        "acme", "pixel", "s3"
    )


# --- picking a phone ---------------------------------------------------------------------------


def test_the_least_busy_phone_wins_wherever_it_is_connected():
    remote = Candidate("galaxy", outstanding=0, presence=presence(device="galaxy"))
    local = Candidate("pixel", outstanding=2)
    assert pick_phone([local, remote]) is remote


def test_on_a_tie_the_phone_connected_here_wins_and_radio_failures_go_last():
    remote = Candidate("galaxy", outstanding=1, presence=presence(device="galaxy"))
    local = Candidate("pixel", outstanding=1, last_dispatch=99.0)
    assert pick_phone([remote, local]) is local
    assert pick_phone([replace(local, radio_down=True), remote]) is remote
    assert pick_phone([]) is None


# --- wire forms --------------------------------------------------------------------------------


def test_presence_records_round_trip_through_protobuf_and_kafka_records():
    record = presence(pending={"m1", "m2"}, outstanding=3)
    assert from_proto(to_proto(record)) == record
    key, value, headers = encode(record)
    assert key == presence_key("acme", "pixel").encode() == b"acme/pixel" and headers == []
    assert decode(key, value, headers) == record
    assert isinstance(dr.DevicePresence.FromString(value), dr.DevicePresence)


def test_a_tombstone_has_no_value_and_names_its_session_in_a_header():
    key, value, headers = encode(Tombstone("acme", "pixel", "s1"))
    assert value is None and headers == [(SESSION_HEADER, b"s1")]
    assert decode(key, value, headers) == Tombstone("acme", "pixel", "s1")
    assert decode(key, None, None) == Tombstone("acme", "pixel", "")  # written by hand: removes whatever is there


@pytest.mark.parametrize(
    "answer",
    [
        RelayAnswer(result=SubmitResult(carrier_ids=("pixel:m1:0", "pixel:m1:1"))),
        RelayAnswer(
            result=SubmitResult(
                failure=ev.MessageFailed(carrier="acme-phones", error_code=500, reason="DEVICE_SEND_FAILED")
            )
        ),
        RelayAnswer(reason="accepted, no report yet", held=True),
        RelayAnswer(reason="RESULT_ERROR_NO_SERVICE", radio_down=True),
        RelayAnswer(reason="not here", not_connected=True),
    ],
    ids=["sent", "failed", "held", "radio-down", "not-connected"],
)
def test_relay_answers_round_trip(answer):
    assert from_response(to_response(answer)) == answer


def test_an_answer_of_a_kind_this_version_does_not_know_is_taken_as_held():
    assert from_response(dr.SubmitResponse()).held


# --- the advertised address --------------------------------------------------------------------


@pytest.mark.parametrize(
    "advertise,host,expected",
    [
        ("", "127.0.0.1", "127.0.0.1:16053"),
        ("10.1.2.3", "0.0.0.0", "10.1.2.3:16053"),
        ("adapter-0.adapters:6000", "0.0.0.0", "adapter-0.adapters:6000"),
        ("fd00::12", "::", "[fd00::12]:16053"),
        ("[fd00::12]:7000", "::", "[fd00::12]:7000"),
    ],
)
def test_the_advertised_address_defaults_to_the_grpc_port(advertise, host, expected):
    assert advertised_address(advertise, host, 16053) == expected


@pytest.mark.parametrize(
    "advertise,host,message",
    [
        ("", "0.0.0.0", "SMSGW_ADVERTISE_ADDRESS is empty and SMSGW_GRPC_HOST is '0.0.0.0'"),
        ("host:99999", "0.0.0.0", "port '99999' is not 1-65535"),
        ("bad host", "0.0.0.0", "SMSGW_ADVERTISE_ADDRESS 'bad host' is not valid"),
        ("[fd00::12", "0.0.0.0", "unclosed"),
        ("[nonsense]:1", "0.0.0.0", "not an IPv6 address"),
    ],
)
def test_a_bad_advertised_address_is_refused_naming_the_setting(advertise, host, message):
    with pytest.raises(ValueError, match="SMSGW_ADVERTISE_ADDRESS") as refused:
        advertised_address(advertise, host, 16053)
    assert message in str(refused.value)
