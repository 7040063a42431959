"""Reading event files: whole lines only, torn lines reported and skipped, optionally following.

Event files are appended by many processes while they are read. A reader therefore takes only
complete lines (ending in a newline) and keeps a trailing partial line for later; only when the
file is known to be finished (or the reader stops) is a partial last line reported as torn (a
writer crashed mid-write). A damaged line is never fatal: it is reported with the file and line
number and skipped, and if a crashed writer's torn bytes were followed by another writer's
complete event on the same line, that event is recovered.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import repeat
from operator import attrgetter
from pathlib import Path
from typing import Annotated, Any

import msgspec
import orjson

_CHUNK = 4 << 20
# Every writer we know of (ours and rms-cloud-tasks') starts an event with its timestamp.
_EVENT_START = b'{"timestamp"'


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that could not be read as an event."""

    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source} line {self.line}: {self.reason}"


BadLineHandler = Callable[[BadLine], None]


# The bounds of the numbers an event may hold: wide enough for any real run, narrow enough
# that every reader can store them (a C long, a double) and draw them.
_Count = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
_Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
_Seconds = Annotated[float, msgspec.Meta(ge=0, le=1e10)]


class EventRecord(msgspec.Struct, gc=False):
    """The fields of an event that statistics and reports read, as read from a file.

    Decoding only these skips a task's `result` and `stack_trace` without building them, and a
    struct is built faster than a dict. The types below are the schema every reader relies
    on: a line whose field has another type, or a number out of bounds, is not an event (the
    reader reports it and skips it, as a torn line), so no reader meets a value it cannot
    handle. A missing field (or null) reads as None. `get` and `[]` make a record read like
    the event dict it came from, so code that folds events takes either.
    """

    timestamp: str | None = None
    hostname: str | None = None
    event_type: str | None = None
    task_id: str | None = None
    attempt: _Count | None = None
    worker_id: _Int32 | None = None
    pid: _Count | None = None
    elapsed_time: _Seconds | None = None
    retry: bool | None = None
    exit_code: _Int32 | None = None
    exception: str | None = None

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None) if key in RECORD_FIELDS else None
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set, as in the line they came from (for messages)."""
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}


RECORD_FIELDS = frozenset(EventRecord.__struct_fields__)
_decode_record = msgspec.json.Decoder(EventRecord).decode
_decode_records = msgspec.json.Decoder(list[EventRecord]).decode


# An event as code that folds events takes it: a dict (from the runtime or an event queue) or
# a record (from a file).
Event = dict[str, Any] | EventRecord
ColumnReader = Callable[[list[Any], str], list[Any]]
_RECORD_GETTERS = {name: attrgetter(name) for name in RECORD_FIELDS}


def _dict_column(events: list[Any], key: str) -> list[Any]:
    return list(map(dict.get, events, repeat(key, len(events))))


def _record_column(events: list[Any], key: str) -> list[Any]:
    return list(map(_RECORD_GETTERS[key], events))


def _any_column(events: list[Any], key: str) -> list[Any]:
    return [e.get(key) if isinstance(e, (dict, EventRecord)) else None for e in events]


def column_reader(batch: list[Any]) -> ColumnReader:
    """How to read one field of every event of `batch` in C (`reader(events, "task_id")`):
    for a batch of dicts, or of records; anything else (a malformed event among them) gets a
    slow reader that gives None for what is not an event."""
    kinds = set(map(type, batch))
    if kinds == {EventRecord}:
        return _record_column
    if kinds == {dict}:
        return _dict_column
    return _any_column


def as_record(event: Any) -> EventRecord:
    """An event (a dict from orjson or an event queue) as a record, checked against the
    schema: raises `msgspec.ValidationError` (saying which field is wrong) for anything
    that is not an event."""
    return msgspec.convert(event, EventRecord)


def schema_error(event: Any) -> str | None:
    """What makes `event` (a dict) not an event, or None when it is one."""
    try:
        as_record(event)
    except msgspec.ValidationError as exc:
        return str(exc)
    return None


def parse_timestamp(value: str) -> float:
    """Seconds since the epoch for an event timestamp; a timestamp without an offset (as
    rms-cloud-tasks writes them) is taken as UTC."""
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


class EventFileReader:
    """Reads events from one JSONL file, from where it stopped last time.

    Call `read()` as often as you like (that is `--follow`): each call yields the events of the
    complete lines appended since the previous call. Call `finish()` once the file is complete
    to report a torn last line. A file that shrinks (it was truncated or replaced) is read again
    from the start, and the reset is reported as a bad line so the user knows.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        on_bad_line: BadLineHandler | None = None,
        *,
        start_offset: int = 0,
    ) -> None:
        self.path = Path(path)
        self.name = str(path)
        self._on_bad_line = on_bad_line or (lambda bad: None)
        self._file: Any = None
        self._inode: int | None = None
        self.offset = start_offset  # bytes consumed (complete lines only)
        self.line_number = 0  # lines consumed
        self._partial = b""
        self.bad_lines = 0

    def _bad(self, line: int, reason: str) -> None:
        self.bad_lines += 1
        self._on_bad_line(BadLine(self.name, line, reason))

    def _open(self) -> bool:
        if self._file is not None:
            return True
        try:
            self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 (kept open to follow)
        except FileNotFoundError:
            return False
        st = os.fstat(self._file.fileno())
        self._inode = st.st_ino
        self._file.seek(self.offset)
        return True

    def _check_replaced(self) -> None:
        """Start again if the file was truncated or replaced by a new file of the same name."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        current = os.fstat(self._file.fileno()).st_size
        if st.st_ino != self._inode or current < self.offset + len(self._partial):
            self._bad(
                self.line_number,
                "the file was truncated or replaced; reading it again from the start",
            )
            self._file.close()
            self._file = None
            self.offset = 0
            self.line_number = 0
            self._partial = b""
            self._open()

    def read(self) -> Iterator[EventRecord]:
        """Yield the events of the complete lines available now."""
        for batch in self.read_batches():
            yield from batch

    def read_batches(self) -> Iterator[list[EventRecord]]:
        """The events of the complete lines available now, a list per chunk read: the fast
        path for folding millions of events (no per-event generator step). A chunk is decoded
        as one JSON list, so msgspec runs once per 4 MiB rather than once per line."""
        if not self._open():
            return
        if self.offset or self._partial:
            self._check_replaced()
        f = self._file
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                return
            if self._partial:
                chunk = self._partial + chunk
            end = chunk.rfind(b"\n")
            self._partial = chunk[end + 1 :]
            if end < 0:
                continue
            whole = chunk[:end]  # complete lines, without the last newline
            base = self.line_number
            self.line_number += whole.count(b"\n") + 1
            self.offset += end + 1
            try:
                events = _decode_records(b"[" + whole.replace(b"\n", b",") + b"]")
            except msgspec.DecodeError:  # a bad or empty line in this chunk: line by line
                events = self._parse_carefully(whole.split(b"\n"), base)
            yield events

    def _parse_carefully(self, lines: list[bytes], base: int) -> list[EventRecord]:
        events: list[EventRecord] = []
        for index, line in enumerate(lines):
            try:
                events.append(_decode_record(line))
                continue
            except msgspec.ValidationError as exc:  # JSON, but not an event
                error: str | None = str(exc)
            except msgspec.DecodeError:
                error = None
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                events.extend(self._salvage(base + index + 1, line))
                continue
            if type(event) is not dict:
                self._bad(base + index + 1, f"not an event object: {line[:80]!r}")
            elif error is not None:
                self._bad(base + index + 1, f"not an event ({error}): {line[:80]!r}")
            else:  # msgspec and orjson disagree about this line: trust the schema check
                events.extend(self._checked(base + index + 1, event, line))
        return events

    def _checked(self, line_number: int, event: dict[str, Any], line: bytes) -> list[EventRecord]:
        """`event` as a record, or nothing (reported) when it breaks the schema."""
        try:
            return [as_record(event)]
        except msgspec.ValidationError as exc:
            self._bad(line_number, f"not an event ({exc}): {line[:80]!r}")
            return []

    def _salvage(self, line_number: int, line: bytes) -> list[EventRecord]:
        if not line.strip():
            return []
        start = line.find(_EVENT_START, 1)
        if start > 0:
            try:
                event = orjson.loads(line[start:])
            except orjson.JSONDecodeError:
                event = None
            try:
                record = as_record(event) if type(event) is dict else None
            except msgspec.ValidationError:
                record = None
            if record is not None:
                self._bad(
                    line_number,
                    f"torn event (a writer crashed mid-write): {line[:start][:80]!r}; "
                    "the complete event after it on the same line was kept",
                )
                return [record]
        self._bad(line_number, f"invalid JSON: {line[:80]!r}")
        return []

    def finish(self) -> None:
        """The file is complete: a partial last line was torn by a crash; report it."""
        if self._partial.strip():
            # A last line that parses completely only lacks its newline: accept it.
            try:
                event = orjson.loads(self._partial)
            except orjson.JSONDecodeError:
                event = None
            if type(event) is not dict:
                self._bad(
                    self.line_number + 1,
                    f"torn last line (a writer crashed mid-write?): {self._partial[:80]!r}",
                )
                self._partial = b""
        self.close()

    def read_all(self) -> Iterator[EventRecord]:
        """Everything in the file, then `finish` (including a last line without newline)."""
        yield from self.read()
        if self._partial.strip():
            try:
                event = orjson.loads(self._partial)
            except orjson.JSONDecodeError:
                event = None
            if type(event) is dict:
                line, self._partial = self._partial, b""
                yield from self._checked(self.line_number + 1, event, line)
        self.finish()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
