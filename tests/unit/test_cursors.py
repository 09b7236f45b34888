import pytest

from smsgw.domain import errors as de
from smsgw_intake.cursors import decode_cursor, encode_cursor, is_after


def test_round_trip_and_position_rule():
    positions = {0: 12, 5: 3}
    assert decode_cursor(encode_cursor(positions)) == positions
    assert is_after(positions, 0, 12) and not is_after(positions, 0, 11)
    assert is_after(positions, 7, 0)  # a partition not covered yet: everything in it is new


@pytest.mark.parametrize("bad", ["!!!", "eyJhIjoiYiJ9", "eyIwIjotMX0", "WzFd"])
def test_bad_cursor_is_invalid_argument(bad):
    with pytest.raises(de.InvalidArgument) as info:
        decode_cursor(bad)
    assert info.value.field == "cursor"
