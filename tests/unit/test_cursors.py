import pytest

from smsgw.domain import errors as de
from smsgw_intake.cursors import decode_cursor, encode_cursor, is_after


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
@pytest.mark.parametrize("bad", ["!!!", "eyJhIjoiYiJ9", "eyIwIjotMX0", "WzFd", _b64(b"[" * 1500 + b"]" * 1500),
                                 _b64(b'{"0": 1e400}'), _b64(b'{"0": 1}') + "A" * 5000])
def test_bad_cursor_is_invalid_argument(bad):
    with pytest.raises(de.InvalidArgument) as info:
        decode_cursor(bad)
    assert info.value.field == "cursor"
