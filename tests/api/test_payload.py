"""The JSON rules of a code-task's arguments: what round-trips, what is refused, and how."""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

import orjson
import pytest
from tests.api.sample_tasks import add, echo

from taskfleet.api.payload import PayloadError, decode, encode

ROUND_TRIPS: list[Any] = [
    None,
    True,
    -3,
    2.5,
    "héllo ✓",
    [1, [2, {"a": None}]],
    {"nested": {"list": [1, 2]}},
    (1, "two", (3.0,)),
    {3, 1, 2},
    frozenset({"a", "b"}),
    b"\x00\xffbytes",
    datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
    datetime.datetime(2026, 1, 2, 3, 4, 5),
    datetime.date(2026, 1, 2),
    datetime.time(12, 30, 1),
    datetime.timedelta(days=2, seconds=5, microseconds=7),
    decimal.Decimal("1.10"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    2**70,
    -(2**64),
    float("inf"),
    {1: "int key", (1, 2): "tuple key"},
    {"$tf": "a user's own key"},
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=lambda v: type(v).__name__)
def test_documented_types_round_trip_through_json(value: Any) -> None:
    written = orjson.dumps(encode(value, "x"))
    back = decode(orjson.loads(written))
    assert back == value
    assert type(back) is type(value)


def test_nan_round_trips() -> None:
    back = decode(orjson.loads(orjson.dumps(encode(float("nan"), "x"))))
    assert back != back


def test_sets_encode_the_same_whatever_their_order() -> None:
    assert encode({"b", "a", "c"}, "x") == encode({"c", "a", "b"}, "x")
    assert add.task(1, 2).id == add.task(1, 2).id != add.task(2, 1).id


class Opaque:
    pass


def test_other_types_are_refused_naming_the_task_and_the_argument() -> None:
    with pytest.raises(PayloadError, match=r"task tests\.api\.sample_tasks:add: argument 'b'"):
        add.task(1, Opaque())
    with pytest.raises(PayloadError, match=r"argument 'scale'.*Opaque"):
        add.task(1, 2, scale=Opaque())
    with pytest.raises(PayloadError, match=r"argument 'value'\[0\]\['k'\] is a .*Opaque"):
        echo.task([{"k": Opaque()}])
    with pytest.raises(PayloadError, match="IntSubclass"):

        class IntSubclass(int):
            pass

        echo.task(IntSubclass(3))


def test_numpy_arrays_are_refused_with_the_conversion_to_use() -> None:
    numpy = pytest.importorskip("numpy")
    with pytest.raises(PayloadError, match=r"argument 'value' is a numpy.ndarray.*tolist"):
        echo.task(numpy.arange(3))


def test_arguments_that_do_not_fit_the_signature_are_refused() -> None:
    with pytest.raises(PayloadError, match="add: missing a required argument: 'b'"):
        add.task(1)
    with pytest.raises(PayloadError, match="unexpected keyword argument 'c'"):
        add.task(1, 2, c=3)


def test_an_unknown_tag_in_a_message_is_an_error() -> None:
    with pytest.raises(PayloadError, match="unknown tagged value"):
        decode({"$tf": "pickle", "v": "..."})
