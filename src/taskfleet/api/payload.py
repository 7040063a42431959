"""The arguments of a code-task as JSON: plain JSON values, and a closed set of tagged types.

A queue message is JSON and never pickle (a queue is a trust boundary), so a task's arguments
must be values that JSON holds, or one of the types below, which are written as a tagged
object `{"$tf": TAG, "v": VALUE}` and read back as what they were:

| type | written as |
|---|---|
| `tuple`, `set`, `frozenset` | their items, as a list (sets sorted by their JSON text) |
| `bytes` | base64 text |
| `datetime.datetime`, `datetime.date`, `datetime.time` | ISO 8601 text (a time zone is kept) |
| `datetime.timedelta` | `[days, seconds, microseconds]` |
| `decimal.Decimal`, `uuid.UUID` | their text |
| an `int` beyond 64 bits, a `float` that is NaN or infinite | their text |
| a `dict` whose keys are not all text, or that has the key `$tf` | a list of `[key, value]` pairs |

Anything else (a numpy array, an open file, an object of a user's class) is refused when the
task is made, with an error that names the task and the argument, and the path inside it: the
message must say what the task will get, and a value that JSON would silently change (a tuple
read back as a list, a NaN written as null) is not that. Encoding is deterministic (sets are
sorted, dict order is kept), so a task's content-derived id is the same on every run.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import math
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from taskfleet.errors import TaskfleetError

TAG = "$tf"
_INT64 = 2**63


class PayloadError(TaskfleetError):
    """A task's argument cannot be written in a queue message (or a message cannot be read:
    never retried, see `taskfleet.worker.attempts.NOT_RETRYABLE`)."""

    taskfleet_not_retryable = True


def _refuse(value: object, where: str) -> PayloadError:
    kind = type(value)
    hint = ""
    if kind.__module__ == "numpy":
        hint = " (convert a numpy value with .tolist() or .item())"
    return PayloadError(
        f"{where} is a {kind.__module__}.{kind.__qualname__}, which a queue message cannot hold"
        f"{hint}; use JSON values, or tuple, set, frozenset, bytes, datetime, date, time, "
        "timedelta, Decimal or UUID (see the README, 'From Python')"
    )


def _sort_key(item: Any) -> bytes:
    return orjson.dumps(item, option=orjson.OPT_SORT_KEYS)


def encode(value: Any, where: str | None) -> Any:
    """`value` as JSON, tagging the extra types. `where` names it in errors (`task f:
    argument 'x'`) and grows with the path inside it; None skips building those names (the
    fast path: a caller that gets a `PayloadError` encodes again with a name to report)."""
    kind = type(value)
    if value is None or kind is str or kind is bool:
        return value
    if kind is int:
        return value if -_INT64 <= value < _INT64 else {TAG: "int", "v": str(value)}
    if kind is float:
        return value if math.isfinite(value) else {TAG: "float", "v": repr(value)}
    if kind is list:
        return _items(value, where)
    if kind is dict:
        if all(type(k) is str for k in value) and TAG not in value:
            return {k: encode(v, _at(where, k)) for k, v in value.items()}
        pairs = [[encode(k, _key(where)), encode(v, _at(where, k))] for k, v in value.items()]
        return {TAG: "dict", "v": pairs}
    encoder = _ENCODERS.get(kind)
    if encoder is None:
        raise _refuse(value, where or "an argument")
    return encoder(value, where)


def _at(where: str | None, key: Any) -> str | None:
    return None if where is None else f"{where}[{key!r}]"


def _key(where: str | None) -> str | None:
    return None if where is None else f"{where} (a key)"


def _items(value: Any, where: str | None) -> list[Any]:
    if where is None:
        return [encode(item, None) for item in value]
    return [encode(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _sorted_items(value: Any, where: str | None) -> list[Any]:
    inside = None if where is None else f"{where} (an item)"
    return sorted((encode(item, inside) for item in value), key=_sort_key)


_ENCODERS: dict[type, Callable[[Any, str], Any]] = {
    tuple: lambda v, w: {TAG: "tuple", "v": _items(v, w)},
    set: lambda v, w: {TAG: "set", "v": _sorted_items(v, w)},
    frozenset: lambda v, w: {TAG: "frozenset", "v": _sorted_items(v, w)},
    bytes: lambda v, w: {TAG: "bytes", "v": base64.b64encode(v).decode("ascii")},
    datetime.datetime: lambda v, w: {TAG: "datetime", "v": v.isoformat()},
    datetime.date: lambda v, w: {TAG: "date", "v": v.isoformat()},
    datetime.time: lambda v, w: {TAG: "time", "v": v.isoformat()},
    datetime.timedelta: lambda v, w: {TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]},
    decimal.Decimal: lambda v, w: {TAG: "decimal", "v": str(v)},
    uuid.UUID: lambda v, w: {TAG: "uuid", "v": str(v)},
}

_DECODERS: dict[str, Callable[[Any], Any]] = {
    "int": int,
    "float": float,
    "tuple": lambda v: tuple(decode(item) for item in v),
    "set": lambda v: {decode(item) for item in v},
    "frozenset": lambda v: frozenset(decode(item) for item in v),
    "dict": lambda v: {decode(k): decode(item) for k, item in v},
    "bytes": base64.b64decode,
    "datetime": datetime.datetime.fromisoformat,
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
    "timedelta": lambda v: datetime.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
}


def decode(value: Any) -> Any:
    """The value `encode` wrote: tagged objects become their types again."""
    if type(value) is list:
        return [decode(item) for item in value]
    if type(value) is dict:
        tag = value.get(TAG)
        if tag is None:
            return {k: decode(v) for k, v in value.items()}
        decoder = _DECODERS.get(tag)
        if decoder is None:
            raise PayloadError(f"unknown tagged value {TAG}={tag!r} in a task's arguments")
        return decoder(value["v"])
    return value
