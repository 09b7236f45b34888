"""A carrier at its share parks its further commands; it gets them back, oldest first, once drained."""

import pytest

from smsgw.lanes import Lane
from smsgw.v1.carrier_pb2 import DispatchCommand
from smsgw_carrier_adapter.parking import CarrierParking, carrier_shares


def test_a_carrier_at_its_share_parks_and_the_others_do_not() -> None:
    parking = CarrierParking(per_carrier=2)
    for _ in range(2):
        assert not parking.should_park("slow")
        parking.started("slow")
    assert parking.should_park("slow")
    parking.park("p0", 10, "slow")
    assert not parking.should_park("fast")  # another carrier has its own share
    assert (
        parking.parked() == 1
        and parking.parked("slow") == 1
        and parking.parked_queue("p0", 10) == ("slow", Lane.NORMAL)
    )


def test_parked_commands_go_first_even_when_a_place_frees_up() -> None:
    parking = CarrierParking(per_carrier=2)
    parking.started("slow")
    parking.started("slow")
    parking.park("p0", 10, "slow")
    parking.finished("slow")
    # Room again, but an older command waits parked: a new one parks behind it (carrier order).
    assert parking.has_room("slow") and parking.should_park("slow")


def test_rewinds_wait_until_the_carrier_drained_to_half_its_share() -> None:
    parking = CarrierParking(per_carrier=4)
    for _ in range(4):
        parking.started("slow")
    parking.park("p0", 12, "slow")
    parking.park("p0", 15, "slow")
    parking.park("p3", 7, "slow")
    parking.finished("slow")
    assert parking.rewinds() == {}  # 3 running: not drained yet (a carrier still down)
    parking.finished("slow")
    assert parking.rewinds() == {"p0": 12, "p3": 7}  # oldest parked offset per partition
    parking.unpark("p0", 12)
    parking.started("slow")
    assert parking.rewinds() == {}  # 3 running again
    parking.finished("slow")
    assert parking.rewinds() == {"p0": 15, "p3": 7}


def test_only_drained_carriers_rewind() -> None:
    parking = CarrierParking(per_carrier=2)
    for carrier in ("down", "down", "back", "back"):
        parking.started(carrier)
    parking.park("p0", 1, "down")
    parking.park("p0", 2, "back")
    parking.finished("back")
    parking.finished("back")
    assert parking.rewinds() == {"p0": 2}


def test_a_share_of_one_rewinds_only_when_idle() -> None:
    parking = CarrierParking(per_carrier=1)
    parking.started("c")
    parking.park("p0", 5, "c")
    assert parking.rewinds() == {}
    parking.finished("c")
    assert parking.rewinds() == {"p0": 5}


def test_a_revoked_partition_takes_its_parked_commands_with_it() -> None:
    parking = CarrierParking(per_carrier=1)
    parking.started("c")
    parking.park("p0", 5, "c")
    parking.park("p1", 6, "c")
    parking.drop("p0")
    assert parking.parked("c") == 1 and parking.parked_queue("p0", 5) is None
    parking.unpark("p1", 6)
    assert parking.parked() == 0
    assert parking.should_park("c")  # still at its share of one
    parking.finished("c")
    assert not parking.should_park("c")


def test_a_share_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CarrierParking(per_carrier=0)
    with pytest.raises(ValueError, match="at least 1"):
        CarrierParking(per_carrier=5, shares={"c": 0})


def test_a_high_command_never_parks_behind_a_campaign_of_the_same_carrier() -> None:
    parking = CarrierParking(per_carrier=2)
    for _ in range(2):
        parking.started("c")
    parking.park("p0", 10, "c")  # the campaign's third command waits
    assert parking.should_park("c") and not parking.should_park("c", Lane.HIGH)
    parking.started("c", Lane.HIGH)
    parking.started("c", Lane.HIGH)
    assert parking.active("c") == 4  # metrics count every lane of the carrier
    parking.park("p0", 11, "c", Lane.HIGH)  # HIGH at its own share parks behind HIGH only
    assert parking.parked("c") == 2 and parking.parked_queue("p0", 11) == ("c", Lane.HIGH)
    parking.finished("c", Lane.HIGH)
    parking.finished("c", Lane.HIGH)
    # HIGH drained (the campaign still runs): its parked command comes back alone
    assert parking.rewinds() == {"p0": 11}
    parking.unpark("p0", 11)
    assert parking.rewinds() == {} and parking.carriers() == {"c"}


def test_a_partitions_parked_commands_come_oldest_first_with_their_lane() -> None:
    # What the dispatcher walks to start parked commands from memory, in offset order.
    parking = CarrierParking(per_carrier=1)
    parking.started("a")
    parking.started("b")
    parking.park("p0", 3, "a")
    parking.park("p1", 4, "b")
    parking.park("p0", 7, "b")
    parking.park("p0", 9, "a", Lane.HIGH)
    assert parking.parked_in("p0") == [(3, ("a", Lane.NORMAL)), (7, ("b", Lane.NORMAL)), (9, ("a", Lane.HIGH))]
    parking.unpark("p0", 7)
    assert parking.parked_in("p0") == [(3, ("a", Lane.NORMAL)), (9, ("a", Lane.HIGH))]
    assert parking.parked_in("p2") == []


def test_parked_commands_are_kept_in_memory_up_to_the_limit_and_given_back_once() -> None:
    parking = CarrierParking(per_carrier=1, keep=2)
    parking.started("c")
    commands = {offset: DispatchCommand(command_id=f"command {offset}") for offset in (1, 2, 3, 4)}
    for offset in (1, 2, 3):
        parking.park("p0", offset, "c", command=commands[offset])
    assert parking.kept() == 2, "the third is parked as an offset only"
    assert [parking.kept_command("p0", o) for o in (1, 2, 3)] == [commands[1], commands[2], None]
    assert parking.unpark("p0", 1) == commands[1] and parking.kept() == 1
    assert parking.unpark("p0", 3) is None
    parking.park("p1", 4, "c", command=commands[4])  # room again under the limit
    parking.drop("p0")
    assert parking.kept() == 1 and parking.kept_command("p1", 4) == commands[4]


def test_a_carrier_that_takes_more_at_once_than_the_share_gets_twice_its_own() -> None:
    # An SMPP bind with a window of 150, one with 10, an HTTP provider with 40, phones (no bound).
    shares = carrier_shares({"wide": 150, "narrow": 10, "http": 40, "phones": None}, per_carrier=200)
    assert shares == {"wide": 300, "narrow": 200, "http": 200, "phones": 200}
    parking = CarrierParking(per_carrier=200, shares=shares)
    for _ in range(299):
        parking.started("wide")
    assert parking.share("wide") == 300 and parking.has_room("wide")
    parking.started("wide")
    assert not parking.has_room("wide") and parking.should_park("wide")
    parking.park("p0", 1, "wide")
    for _ in range(149):
        parking.finished("wide")
    assert parking.rewinds() == {}  # 151 running: not yet half of 300
    parking.finished("wide")
    assert parking.rewinds() == {"p0": 1}
    assert parking.share("unknown") == 200  # a carrier the table did not name: the setting
