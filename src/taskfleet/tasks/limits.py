"""What a task may be: limits on its size, its nesting and its numbers, checked where it enters.

Every layer after the loader encodes a task's data again (the queue's message body, the pipe to a
child, events): orjson refuses data nested deeper than about 250 levels and integers beyond 64
bits, SQLite's JSON functions and most JSON readers keep integers only to 64 bits signed, and a
float that is not finite has no JSON form at all (it would silently become `null`). A task that
passes the loader must pass all of those, so the loader refuses, naming the task, whatever one of
them would refuse or change:

- the task's JSON (`{"id": ..., "data": ...}`) may be at most `max_bytes` long
  (`TASKFLEET_MAX_TASK_BYTES`, 1 MiB by default);
- its data may nest at most `max_depth` levels (`TASKFLEET_MAX_TASK_DEPTH`, 64 by default,
  at most 200): `{"a": 1}` is one level, `{"a": [1]}` two;
- integers must fit in 64 bits signed (larger ones: pass them as strings), floats must be finite,
  object keys must be strings, strings must be valid Unicode (no lone surrogates).

Checks of raw JSON text run first as cheap C-level filters over whole blocks (a length, a count
of brackets, a regular expression for long digit runs), and only text they cannot clear is
walked exactly, so the bulk load of plain tasks pays almost nothing for them.
"""

from __future__ import annotations

import math
import os
import re
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate

import orjson

from taskfleet.errors import TaskfleetError

DEFAULT_MAX_TASK_BYTES = 1 << 20
DEFAULT_MAX_TASK_DEPTH = 64
#: Deeper data could not be encoded by orjson once wrapped for a message or a child's pipe.
HARDEST_MAX_TASK_DEPTH = 200
MIN_TASK_BYTES = 1 << 10
# Symmetric: one JSON parser in use refuses -2**63 although it is a 64-bit integer.
INT_MIN, INT_MAX = -(2**63 - 1), 2**63 - 1

# A JSON integer outside 64 bits has at least 19 digits: a run that long marks text to check
# exactly (it may also be a long float or digits in a string, which the exact check accepts).
# Found by mapping every digit to "0" and searching for a run of zeros: C string search, many
# times faster than a regular expression over the text.
_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN = b"0" * 19
# JSON text reduced to what decides nesting: brackets and quotes (once escaped quotes are gone;
# the pieces between quotes alternate outside and inside strings, and only brackets outside
# strings nest).
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_NOT_BRACKET_OR_NEWLINE = bytes(sorted(set(range(256)) - set(b"[{\n")))
_DELTAS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


class TaskLimitError(TaskfleetError):
    """A limit is set to a value it cannot have."""


@dataclass(frozen=True, slots=True)
class TaskLimits:
    """The limits in force for a load. `from_env()` reads the `TASKFLEET_*` variables."""

    max_bytes: int = DEFAULT_MAX_TASK_BYTES
    max_depth: int = DEFAULT_MAX_TASK_DEPTH

    def __post_init__(self) -> None:
        if self.max_bytes < MIN_TASK_BYTES:
            raise TaskLimitError(
                f"the task size limit must be at least {MIN_TASK_BYTES} bytes, not {self.max_bytes}"
            )
        if not 1 <= self.max_depth <= HARDEST_MAX_TASK_DEPTH:
            raise TaskLimitError(
                f"the task nesting limit must be from 1 to {HARDEST_MAX_TASK_DEPTH} levels, not "
                f"{self.max_depth}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TaskLimits:
        env = os.environ if environ is None else environ
        values = {}
        for field_name, variable in (
            ("max_bytes", "TASKFLEET_MAX_TASK_BYTES"),
            ("max_depth", "TASKFLEET_MAX_TASK_DEPTH"),
        ):
            text = env.get(variable)
            if text:
                try:
                    values[field_name] = int(text.replace("_", ""))
                except ValueError:
                    raise TaskLimitError(f"{variable}={text!r} is not a whole number") from None
        return cls(**values)

    # -- raw JSON text -----------------------------------------------------------------------

    def text_needs_check(self, text: bytes, *, base_depth: int = 1) -> bool:
        """Whether JSON `text` of whole tasks may break a limit on nesting or numbers; False
        clears it at C speed. `base_depth` is the depth of a task object: 1 for JSON Lines (a
        task per line), 2 for a JSON list.

        Size is left to the caller (it knows where each task starts and ends).
        """
        if has_long_digit_run(text):
            return True
        allowed = self.max_depth + base_depth
        # A line of JSON Lines cannot nest deeper than it has brackets: most lines have a
        # handful, and counting them (strings included) is cheaper than following the strings.
        # (In a JSON list a line starts inside the list, so there the depth is measured.)
        if base_depth == 1:
            openers = text.translate(None, _NOT_BRACKET_OR_NEWLINE).split(b"\n")
            if max(map(len, openers)) <= allowed:
                return False
        return max_nesting(text) > allowed

    def task_text_problem(self, text: bytes) -> str | None:
        """Why the JSON text of one task (`{"id": ..., "data": ...}`, a JSONL line) breaks a
        limit, or None. Exact, for text that `text_needs_check` or its size flagged."""
        if len(text.rstrip()) > self.max_bytes:
            return self._size_problem(len(text.rstrip()))
        if max_nesting(text) > self.max_depth + 1:
            return self._depth_problem()
        if not has_long_digit_run(text):
            return None
        import json  # only here: the standard library keeps integers of any size

        try:
            entry = json.loads(text)
        except (ValueError, RecursionError):
            return None  # not JSON: the reader says so
        if isinstance(entry, dict):
            return self.data_problem(entry.get("data"))
        return None

    # -- parsed data ---------------------------------------------------------------------------

    def data_problem(self, data: object, encoded_size: int | None = None) -> str | None:
        """Why `data` (a task's parsed data) breaks a limit, or None. Exact; walks the data."""
        if encoded_size is not None and encoded_size > self.max_bytes:
            return self._size_problem(encoded_size)
        # A bound on the work: every value costs at least a byte of JSON, so a walk that spends
        # far more than the size limit is over it (aliases in YAML can expand a small file into
        # billions of values); the exact size comes from encoding what passes.
        budget = [4 * self.max_bytes]
        return _walk(data, 1, self.max_depth, budget) or (
            self._size_problem(None) if budget[0] < 0 else None
        )

    def encoded_problem(self, data: object) -> tuple[bytes | None, str | None]:
        """Encode `data` as the queue will, and say why it cannot be stored, or None."""
        problem = self.data_problem(data)
        if problem is not None:
            return None, problem
        try:
            encoded = orjson.dumps(data)
        except orjson.JSONEncodeError as exc:
            return None, f"it cannot be stored as JSON ({exc})"
        if len(encoded) > self.max_bytes:
            return None, self._size_problem(len(encoded))
        return encoded, None

    def _depth_problem(self) -> str:
        return _depth_problem(self.max_depth)

    def _size_problem(self, size: int | None) -> str:
        shown = f"is {size:,} bytes of JSON" if size is not None else "is too large"
        return (
            f"it {shown}; at most {self.max_bytes:,} are allowed (TASKFLEET_MAX_TASK_BYTES): "
            "keep large inputs in files and put their paths in the task"
        )


def has_long_digit_run(text: bytes) -> bool:
    """Whether `text` holds 19 digits in a row (where an integer beyond 64 bits could be)."""
    return _LONG_DIGIT_RUN in text.translate(_DIGITS_AS_ZEROS)


def _without_escaped_quotes(text: bytes) -> bytes:
    """JSON text without the escapes that could be taken for a quote: escaped backslashes
    first (a run of 2k backslashes is k of them), then escaped quotes, left to right as JSON
    reads them. Other escapes (`\\n`, `\\u...`) cannot end a string and stay."""
    if b"\\" not in text:
        return text
    return text.replace(b"\\\\", b"").replace(b'\\"', b"")


def max_nesting(text: bytes, start_depth: int = 0) -> int:
    """The deepest nesting of brackets in JSON `text` (outside strings), from `start_depth`.

    C-level work only: escaped quotes are dropped, the text is reduced to brackets and quotes,
    the pieces between quotes alternate outside and inside strings, and the running depth is a
    sum over a byte array. Text that is not valid JSON gives some number; the parser
    refuses such text anyway.
    """
    pieces = _without_escaped_quotes(text).translate(None, _NOT_STRUCTURE).split(b'"')
    brackets = b"".join(pieces[0::2])
    if not brackets:
        return start_depth
    return max(accumulate(array("b", brackets.translate(_DELTAS)), initial=start_depth))


class NestingGuard:
    """Follows the nesting of a JSON stream read in chunks, so that a streaming parser is never
    handed a document nested deeper than `limit` (a parser building it would use memory out of
    all proportion to the file: a 200 KB list nested 100,000 deep took gigabytes).

    `feed` returns the 1-based line of the bracket that went too deep, or None.
    """

    __slots__ = (
        "_backslashes",
        "_depth",
        "_in_string",
        "_limit",
        "_line",
        "_since_top",
        "longest_item_bound",
    )

    def __init__(self, limit: int) -> None:
        self._limit = limit
        # Bytes since the stream was last at depth 1 or less (between the items of a list),
        # at most: bounds the size of the item being read.
        self._since_top = 0
        #: An upper bound on the size in bytes of every item of the top-level list so far.
        self.longest_item_bound = 0
        self._depth = 0
        self._in_string = False
        self._backslashes = b""  # a run of backslashes at the end of the last chunk
        self._line = 1

    def feed(self, chunk: bytes) -> int | None:
        line = self._line
        self._line += chunk.count(b"\n")
        in_string = self._in_string
        text = self._backslashes + chunk
        whole = text.rstrip(b"\\")  # a run cut by the chunk's end may escape what follows
        self._backslashes = text[len(whole) :]
        pieces = _without_escaped_quotes(whole).translate(None, _NOT_STRUCTURE).split(b'"')
        brackets = b"".join(pieces[1 if in_string else 0 :: 2])
        self._in_string = in_string ^ (len(pieces) % 2 == 0)
        self._since_top += len(chunk)
        self.longest_item_bound = max(self.longest_item_bound, self._since_top)
        if not brackets:
            return None
        start_depth = self._depth
        levels = list(accumulate(array("b", brackets.translate(_DELTAS)), initial=start_depth))
        self._depth = levels[-1]
        if min(levels[1:]) <= 1:  # an item ended in this chunk: it began at most this far back
            self.longest_item_bound = max(self.longest_item_bound, self._since_top)
            self._since_top = len(chunk)
        if max(levels) > self._limit:
            return line + _newlines_before_depth(chunk, start_depth, self._limit, in_string)
        return None


def _newlines_before_depth(chunk: bytes, depth: int, limit: int, in_string: bool) -> int:
    """Lines in `chunk` before the bracket that goes deeper than `limit` (an error path: a
    plain loop, once)."""
    newlines = 0
    escaped = False
    for byte in chunk:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
            continue
        if byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            if depth > limit:
                break
        elif byte in b"]}":
            depth -= 1
        elif byte == 0x0A:
            newlines += 1
    return newlines


# One JSON escape: a surrogate pair, a lone surrogate, or any other (consumed so that an escaped
# backslash before "u" is not taken for the start of one).
_ESCAPE = re.compile(
    rb"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    rb"|(?P<lone>u[dD][89a-fA-F][0-9a-fA-F]{2})|.)",
    re.S,
)
_LONGEST_ESCAPE = 12


class SurrogateGuard:
    """Finds a lone surrogate escape (`"\\ud800"`) in JSON text read in chunks.

    Such a string has no UTF-8 form; one JSON parser refuses it and another turns it into `?`
    without a word, so the text is checked before either sees it. `feed` returns the 1-based
    line of the first lone surrogate, or None; only text with a surrogate escape is scanned.
    """

    __slots__ = ("_carry", "_line")

    def __init__(self) -> None:
        self._carry = b""
        self._line = 1  # the line at which the carried text starts

    def feed(self, chunk: bytes, final: bool = False) -> int | None:
        text = self._carry + chunk
        judged = len(text) if final else len(text) - _LONGEST_ESCAPE
        cut = max(judged, 0)
        if b"\\u" in text:
            for match in _ESCAPE.finditer(text):
                if match.end() > judged:
                    cut = match.start()
                    break
                if match.group("lone") is not None:
                    return self._line + text.count(b"\n", 0, match.start())
                cut = match.end()
        while 0 < cut < len(text) and text[cut - 1 : cut] == b"\\":
            cut -= 1  # keep a run of backslashes whole, so the next scan starts on an escape
        self._line += text.count(b"\n", 0, cut)
        self._carry = text[cut:]
        return None


def _depth_problem(max_depth: int) -> str:
    return (
        f"its data nests more than {max_depth} levels deep (TASKFLEET_MAX_TASK_DEPTH); flatten "
        "it or raise the limit"
    )


def _walk(value: object, depth: int, max_depth: int, budget: list[int]) -> str | None:
    """The first problem in `value`, a container at nesting `depth`; spends `budget` per node."""
    if depth > max_depth:
        return _depth_problem(max_depth)
    if isinstance(value, dict):
        items = value.items()
        budget[0] -= len(value) + 2
        for key, item in items:
            if not isinstance(key, str):
                return f"its data has the key {key!r}, which is not a string"
            budget[0] -= len(key)
            problem = _scalar_problem(key) or _item_problem(item, depth, max_depth, budget)
            if problem is not None or budget[0] < 0:
                return problem
        return None
    budget[0] -= len(value) + 2  # type: ignore[arg-type]
    for item in value:  # type: ignore[attr-defined]
        problem = _item_problem(item, depth, max_depth, budget)
        if problem is not None or budget[0] < 0:
            return problem
    return None


def _item_problem(item: object, depth: int, max_depth: int, budget: list[int]) -> str | None:
    """The first problem in a value held by a container at nesting `depth`."""
    if isinstance(item, (dict, list, tuple)):
        return _walk(item, depth + 1, max_depth, budget)
    if type(item) is str:
        budget[0] -= len(item)
    return _scalar_problem(item)


def _scalar_problem(value: object) -> str | None:
    kind = type(value)
    if kind is int:
        if INT_MIN <= value <= INT_MAX:  # type: ignore[operator]
            return None
        return (
            f"its data holds the integer {value}, which does not fit in 64 bits and would not "
            "come back unchanged; pass it as a string"
        )
    if kind is float:
        if math.isfinite(value):  # type: ignore[arg-type]
            return None
        return f"its data holds the number {value}, which JSON cannot store"
    if kind is str:
        try:
            value.encode("utf-8")  # type: ignore[attr-defined]
        except UnicodeEncodeError:
            return f"its data holds the string {value!r}, which has a lone surrogate"
        return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):  # an int subclass (an IntEnum, numpy's ints are not)
        return _scalar_problem(int(value))
    if isinstance(value, float):
        return _scalar_problem(float(value))
    if isinstance(value, str):
        return _scalar_problem(str(value))
    return None  # left to the encoder, which names what it cannot store
