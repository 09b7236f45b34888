import pytest

from smsgw.domain import errors as de
from smsgw_intake.cursors import CursorCodec, decode_cursor, encode_cursor, is_after


def test_round_trip_and_position_rule():
    positions = {0: 12, 5: 3}
    assert decode_cursor(encode_cursor(positions)) == positions
    assert is_after(positions, 0, 12) and not is_after(positions, 0, 11)
    assert is_after(positions, 7, 0)  # a partition not covered yet: everything in it is new


def _b64(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Found by test_hostile_input.py: a nesting bomb (RecursionError), an infinite offset
# (OverflowError) and a very long cursor each reached the client as UNKNOWN.
@pytest.mark.parametrize(
    "bad",
    [
        "!!!",
        "eyJhIjoiYiJ9",
        "eyIwIjotMX0",
        "WzFd",
        _b64(b"[" * 1500 + b"]" * 1500),
        _b64(b'{"0": 1e400}'),
        _b64(b'{"0": 1}') + "A" * 5000,
    ],
)
def test_bad_cursor_is_invalid_argument(bad):
    with pytest.raises(de.InvalidArgument) as info:
        decode_cursor(bad)
    assert info.value.field == "cursor"


# Signed cursors (CursorCodec): what the Watch streams hand out and take back.
SECRET = b"0123456789abcdef0123456789abcdef"


def test_a_signed_cursor_round_trips_for_the_account_it_was_issued_to():
    codec = CursorCodec(SECRET)
    positions = {0: 12, 5: 3}
    cursor = codec.encode("acme", positions)
    assert codec.decode("acme", cursor) == positions
    # Another replica with the same secret takes it too.
    assert CursorCodec(SECRET).decode("acme", cursor) == positions


def _refused(codec: CursorCodec, account: str, cursor: str) -> de.InvalidArgument:
    with pytest.raises(de.InvalidArgument) as info:
        codec.decode(account, cursor)
    assert info.value.field == "cursor"
    return info.value


def test_another_accounts_cursor_an_altered_one_and_an_unsigned_one_are_refused_alike():
    codec = CursorCodec(SECRET)
    cursor = codec.encode("acme", {0: 12})
    payload, _, mac = cursor.partition(".")
    forged_positions = encode_cursor({0: 0})
    refusals = [
        _refused(codec, "mallory", cursor),  # issued to another account
        _refused(codec, "acme", f"{forged_positions}.{mac}"),  # positions changed
        _refused(codec, "acme", payload),  # the signature left off
        _refused(codec, "acme", f"{payload}.{mac[:-2]}AA"),  # the signature changed
        _refused(codec, "acme", f"{payload}.!!!"),  # not base64
        _refused(CursorCodec(b"another secret of enough bytes"), "acme", cursor),  # another deployment's
    ]
    # One message for all: which check failed would only help whoever is guessing.
    assert len({str(r) for r in refusals}) == 1
    assert "not a cursor this API issued to this account" in str(refusals[0])


def test_a_signed_cursor_is_checked_before_its_positions_are_decoded():
    codec = CursorCodec(SECRET)
    bomb = _b64(b"[" * 1500 + b"]" * 1500)
    assert "signature" in str(_refused(codec, "acme", bomb + ".AAAA"))
    assert "characters" in str(_refused(codec, "acme", "A" * 5000))


def test_a_short_secret_is_refused():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        CursorCodec(b"short")


def test_cursor_payload_is_the_compact_json_of_the_positions_by_partition():
    # Formatted by hand for speed: it must stay the JSON cursors were always made of, so a client's
    # cursor from an earlier release reads the same positions (and compares equal to a new one).
    import base64
    import json

    positions = {11: 7, 0: 123_456_789_012, 3: 0}
    raw = base64.urlsafe_b64decode(encode_cursor(positions) + "==")
    assert raw == json.dumps({"0": 123_456_789_012, "3": 0, "11": 7}, separators=(",", ":")).encode()
    assert encode_cursor({}) == base64.urlsafe_b64encode(b"{}").decode().rstrip("=")
