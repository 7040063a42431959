"""Validated tasks a block at a time, for bulk loads into a queue.

`iter_tasks` hands out one `Task` at a time, and for a million-line JSON Lines file that costs
more than the insert: a Python loop a task that parses, checks, builds a Task, then serialises it
again for the queue. A load does not need Task objects, only each task's id and its JSON text. So
a JSONL file is read in blocks of about half a megabyte, and each block is checked by C code as a
whole: msgspec decodes the block as one JSON list into structs that admit only `id` (a string),
`data` (an object) and `after` (a list of strings: the tasks of a flow stay on this path), and the
ids, joined into one string, pass a handful of string tests (ASCII, printable, no `/`, `\\` or
`"`, none empty, none over 200 characters, none starting with `.`); so do the ids in `after`.
The lines themselves are the task bodies the queue stores. (An object that repeats its `id` key
counts by its last one, in msgspec here as in orjson when a worker reads the body back.)

Whatever a block's fast check refuses (a bad entry, but also a blank line, a non-ASCII id, a
`task_id` key, a task without `data`) goes through the exact, line-by-line
validation of `taskfleet.tasks`, which either accepts it or raises the error naming the line. So
the fast path decides nothing on its own: it only recognises blocks that are plainly fine.

Duplicate ids are left to the consumer when it asks (`check_duplicates=False`): the SQLite queue
finds them in its unique index for free, where a Python table of a million ids costs half a
second. Other sources (JSON lists, YAML, iterables) go through `iter_tasks` and come out in
batches of the same shape.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from taskfleet.errors import TaskFileError
from taskfleet.tasks.limits import SurrogateGuard, TaskLimits
from taskfleet.tasks.readers import (
    BOM,
    MAX_TASK_ID_BYTES,
    DataCheck,
    DuplicateTracker,
    Task,
    TaskSource,
    check_skip_and_limit,
    file_progress,
    iter_jsonl_entries,
    open_task_file,
    read_entries,
    task_iterable,
    validated,
)

BLOCK_BYTES = 1 << 19
# A local JSON list up to this size is decoded whole when its tasks are plain (see
# `_plain_json_list`); a larger one, or one from a pipe or a URL, is streamed.
WHOLE_JSON_LIST_BYTES = 64 << 20
# Tasks a batch from a source without a fast path (JSON lists, YAML, iterables).
GENERIC_BATCH = 4096


@functools.cache
def _block_decoder() -> Any:
    """The decoder of a block into the shape the fast path accepts. Made on the first JSONL
    block: a run from a JSON list or a YAML file starts without importing msgspec."""
    import msgspec

    class _PlainTask(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        """Exactly `id` (a string) and `data` (an object), and maybe `after` (a list of
        strings, checked by `_after_is_plain`)."""

        id: str
        data: dict
        after: list[str] | None = None

    return msgspec.json.Decoder(list[_PlainTask])


_PLAIN_MEMBER = '"{}":{}'.format  # a plain id needs no escaping between quotes
_MEMBER = "{}:{}".format


@dataclass(slots=True)
class TaskBatch:
    """Validated tasks: their ids, their JSON texts (`{"id": ..., "data": {...}}`) and where
    each came from, so that a consumer that finds a problem later (a duplicate id) can name
    the line.

    `plain_ids` says every id is printable ASCII without `"` or `\\`, so that it can be written
    into JSON between quotes as it is.
    """

    source: str
    unit: str
    positions: Sequence[int]
    ids: list[str]
    bodies: list[str]
    plain_ids: bool
    #: the tasks that wait for others (id -> the ids), where the fast path decoded them
    #: already; None: not known, read the bodies
    afters: dict[str, list[str]] | None = field(default=None, repr=False, compare=False)
    #: the tasks themselves, where the batch was made of `Task`s (a Python source): a queue
    #: of this process takes them as they are instead of decoding `bodies` again
    tasks: list[Task] | None = field(default=None, repr=False, compare=False)
    _json: str | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ids)

    def where(self, index: int) -> str:
        """`FILE: line N` of the task at `index`, for error messages."""
        return f"{self.source}: {self.unit} {self.positions[index]}"

    def place(self, index: int) -> Place:
        """`where`, made into text only if an error needs it (a flow's check keeps one for
        each task that waits, and most loads have no error to report)."""
        return Place(self, index)

    def json_object(self) -> str:
        """The batch as one JSON object `{id: task, ...}` in order, duplicates kept.

        SQLite's json_each walks such an object handing out each id as the key and each task
        as the value, without parsing the task a second time to find its id (which, measured,
        was half the cost of the insert). Built once: a loader's read-ahead thread builds it
        while the previous batch is being inserted.
        """
        if self._json is None:
            if self.plain_ids:
                members = map(_PLAIN_MEMBER, self.ids, self.bodies)
            else:
                keys = [orjson.dumps(task_id).decode() for task_id in self.ids]
                members = map(_MEMBER, keys, self.bodies)
            self._json = "{" + ",".join(members) + "}"
        return self._json

    def sliced(self, start: int, stop: int | None = None) -> TaskBatch:
        return TaskBatch(
            self.source,
            self.unit,
            self.positions[start:stop],
            self.ids[start:stop],
            self.bodies[start:stop],
            self.plain_ids,
            tasks=None if self.tasks is None else self.tasks[start:stop],
        )


class Place:
    """Where a task of a batch is; `str()` gives `FILE: line N`."""

    __slots__ = ("batch", "index")

    def __init__(self, batch: TaskBatch, index: int) -> None:
        self.batch = batch
        self.index = index

    def __str__(self) -> str:
        return self.batch.where(self.index)


def _plain_afters(entries: list[Any]) -> dict[str, list[str]] | None:
    """The `after` lists of decoded entries (id -> ids, for those that wait) if they are
    plainly valid: their ids plain (see `ids_are_plain`), none repeated within a list; None
    if not (the slow path then decides). A flow's tasks stay on the fast path; whether the
    ids name tasks of the load is the queue's check, which sees the whole load."""
    afters = {entry.id: entry.after for entry in entries if entry.after}
    if not afters:
        return afters
    lists = afters.values()
    named = [task_id for after in lists for task_id in after]
    # No id twice in one list: only a list of two or more can repeat one, and the lengths
    # are compared in C (most of a flow's tasks wait for a single task).
    longer = [after for after in lists if len(after) > 1]
    if ids_are_plain(named) and list(map(len, longer)) == list(map(len, map(set, longer))):
        return afters
    return None


def ids_are_plain(ids: list[str]) -> bool:
    """Whether every id is valid and plainly so: 1 to 200 printable ASCII characters, no `/`,
    `\\` or `"`, not starting with `.`. Each test runs in C over all ids at once."""
    if not ids:
        return True
    joined = "/".join(ids)
    return (
        joined.isascii()
        and joined.isprintable()
        and joined.count("/") == len(ids) - 1
        and "\\" not in joined
        and '"' not in joined
        and "/." not in joined
        and not joined.startswith(".")
        and min(map(len, ids)) > 0
        and max(map(len, ids)) <= MAX_TASK_ID_BYTES
    )


def iter_task_batches(
    source: TaskSource,
    *,
    skip: int = 0,
    limit: int | None = None,
    check_duplicates: bool = True,
    block_bytes: int = BLOCK_BYTES,
    limits: TaskLimits | None = None,
    batch_size: int = GENERIC_BATCH,
) -> Iterator[TaskBatch]:
    """Yield the tasks of `source` in validated batches, in order (`batch_size` tasks each
    where the source is not a JSON Lines file, which comes in blocks of `block_bytes`).

    Accepts what `iter_tasks` accepts and refuses what it refuses, with the same messages.
    `check_duplicates=False` leaves ids repeated within the load to the consumer (which must
    then name the place with `TaskBatch.where`); with `skip` the reader checks all the same,
    as the skipped tasks never reach the consumer.
    """
    check_skip_and_limit(skip, limit)
    if limit == 0:
        return
    check_duplicates = check_duplicates or skip > 0
    limits = limits or TaskLimits.from_env()
    if not isinstance(source, (str, os.PathLike)):
        entries = enumerate(task_iterable(source))
        positioned = validated(
            "task source", "item", entries, DataCheck.PYTHON, limits, skip, limit, check_duplicates
        )
        yield from _batches_of(positioned, "task source", "item", batch_size)
        return
    with open_task_file(source) as (f, name, fmt):
        if fmt == "jsonl":
            tracker = DuplicateTracker(file_progress(f)) if check_duplicates else None
            wanted = None if limit is None else skip + limit
            batches = _jsonl_batches(f, name, block_bytes, wanted, limits)
            yield from _skip_and_limit(batches, skip, limit, tracker)
            return
        stream: IO[bytes] = f
        if fmt == "json" and _whole_file_bytes(f) <= WHOLE_JSON_LIST_BYTES:
            raw = f.read()
            batch = _plain_json_list(raw, name, limits)
            if batch is not None:
                tracker = DuplicateTracker() if check_duplicates else None
                yield from _skip_and_limit([batch], skip, limit, tracker)
                return
            stream = io.BytesIO(raw)  # not plainly fine: the streaming reader says why
        unit, entries, check = read_entries(stream, name, fmt, limits)
        positioned = validated(
            name, unit, entries, check, limits, skip, limit, check_duplicates, file_progress(f)
        )
        yield from _batches_of(positioned, name, unit, batch_size)


def _whole_file_bytes(f: IO[bytes]) -> float:
    """The size of a local regular file still to be read; infinite for pipes and URLs."""
    try:
        return os.fstat(f.fileno()).st_size - f.tell()
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return float("inf")


def _plain_json_list(raw: bytes, name: str, limits: TaskLimits) -> TaskBatch | None:
    """A JSON list of plain tasks checked whole by C code, as one batch; None for anything
    else (a bad or unusual entry, a limit that might be broken), which the streaming reader
    then accepts or refuses with the message that names the entry.

    A local run from a JSON list reads the file here: decoding it whole with msgspec takes a
    fraction of what the streaming parser and the per-task checks take, and start-up waits
    for it."""
    import msgspec

    if raw.startswith(BOM) or limits.text_needs_check(raw, base_depth=2):
        return None
    if SurrogateGuard().feed(raw, final=True) is not None:
        return None
    try:
        bodies = msgspec.json.decode(raw, type=list[msgspec.Raw])
        entries = _block_decoder().decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    ids = [entry.id for entry in entries]
    afters = _plain_afters(entries)
    if (
        not ids
        or not ids_are_plain(ids)
        or afters is None
        or max(map(len, bodies)) > limits.max_bytes
    ):
        return None
    texts = [bytes(body).decode() for body in bodies]
    return TaskBatch(name, "index", range(len(ids)), ids, texts, True, afters)


def _skip_and_limit(
    batches: Iterable[TaskBatch],
    skip: int,
    limit: int | None,
    tracker: DuplicateTracker | None,
) -> Iterator[TaskBatch]:
    """Drop the first `skip` tasks and stop after `limit` more; check for repeated ids (over
    the skipped tasks too) when there is a tracker. Nothing after the limit is checked."""
    wanted = None if limit is None else skip + limit
    consumed = 0
    for batch in batches:
        if wanted is not None and len(batch) > wanted - consumed:
            batch = batch.sliced(0, wanted - consumed)
        if tracker is not None:
            is_duplicate = tracker.is_duplicate
            for index, task_id in enumerate(batch.ids):
                if is_duplicate(task_id):
                    raise TaskFileError(
                        f"{batch.where(index)}: duplicate id {task_id!r}; each task id must "
                        "be unique within a task file."
                    )
        skipped = min(max(skip - consumed, 0), len(batch))
        consumed += len(batch)
        if skipped:
            batch = batch.sliced(skipped)
        if len(batch):
            yield batch
        if wanted is not None and consumed >= wanted:
            return


def _jsonl_batches(
    f: IO[bytes], name: str, block_bytes: int, wanted: int | None, limits: TaskLimits
) -> Iterator[TaskBatch]:
    """Blocks of whole lines, each checked at once, or line by line where that fails.

    `wanted` (skip + limit) stops the reading there: a line after it is not read, so it
    cannot fail the load, as with `iter_tasks`. A file without a task is refused.
    """
    rest = b""
    first_line = 1
    produced = 0
    started = False
    while wanted is None or produced < wanted:
        block = f.read(block_bytes)
        if not started and block:
            started = True
            if block.startswith(BOM):
                block = block[len(BOM) :]
        if not block:
            whole, rest = rest, b""
        else:
            data = rest + block if rest else block
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # a line longer than the block: read on until it ends
                rest = data
                continue
            whole, rest = data[:cut], data[cut:]
        most = None if wanted is None else wanted - produced
        for batch in _checked_block(whole, name, first_line, most, limits):
            produced += len(batch)
            yield batch
        if not block:
            if not produced:
                raise TaskFileError(
                    f"{name}: the file is empty; it should hold one task per line, "
                    '{"id": ..., "data": {...}}.'
                )
            return
        first_line += whole.count(b"\n")


def _checked_block(
    raw: bytes, name: str, first_line: int, most: int | None, limits: TaskLimits
) -> Iterator[TaskBatch]:
    """The lines of `raw` (whole lines; only at the end of a file may the last newline be
    missing) as one batch if the fast check passes, else at most `most` tasks validated line
    by line. The limits are checked on the block's text first: a block that might break one
    (a long line, deep nesting, a long run of digits) goes line by line."""
    import msgspec

    if limits.text_needs_check(raw) or (
        len(raw) > limits.max_bytes and max(map(len, raw.split(b"\n"))) > limits.max_bytes
    ):
        yield from _slow_block(raw, name, first_line, most, limits)
        return
    try:
        text = raw.decode()
        lines = (text[:-1] if text.endswith("\n") else text).split("\n")
        entries = _block_decoder().decode("[" + ",".join(lines) + "]")
    except (UnicodeDecodeError, msgspec.DecodeError, RecursionError):
        yield from _slow_block(raw, name, first_line, most, limits)
        return
    ids = [entry.id for entry in entries]
    afters = _plain_afters(entries)
    if not ids_are_plain(ids) or afters is None:
        yield from _slow_block(raw, name, first_line, most, limits)
        return
    positions = range(first_line, first_line + len(ids))
    yield TaskBatch(name, "line", positions, ids, lines, True, afters)


def _slow_block(
    raw: bytes, name: str, first_line: int, most: int | None, limits: TaskLimits
) -> Iterator[TaskBatch]:
    """The exact line-by-line validation of `taskfleet.tasks`, for a block the fast check
    refused: it raises the error that names the line, or accepts what the fast path is too
    plain for (blank lines, non-ASCII ids, `task_id`, tasks without data)."""
    if most == 0:
        return
    entries = iter_jsonl_entries(io.BytesIO(raw), name, limits, first_line, whole_file=False)
    positioned = validated(name, "line", entries, DataCheck.NONE, limits, 0, most, False)
    yield from _batches_of(positioned, name, "line", len(raw) + 1)


def _batches_of(
    positioned: Iterator[tuple[int, Task]], name: str, unit: str, size: int
) -> Iterator[TaskBatch]:
    """Validated tasks in batches of `size`. At a bad entry the tasks before it still come out
    first, so that a problem earlier in the file (an id the queue finds repeated) is the one
    reported, as `iter_tasks` would."""
    chunk: list[tuple[int, Task]] = []
    try:
        for item in positioned:
            chunk.append(item)
            if len(chunk) == size:
                yield _batch_of(chunk, name, unit)
                chunk = []
    except TaskFileError:
        if chunk:
            yield _batch_of(chunk, name, unit)
        raise
    if chunk:
        yield _batch_of(chunk, name, unit)


def _batch_of(chunk: list[tuple[int, Task]], name: str, unit: str) -> TaskBatch:
    tasks = [task for _, task in chunk]
    ids = [task.id for task in tasks]
    bodies = [task.to_json().decode() for task in tasks]
    positions = [position for position, _ in chunk]
    return TaskBatch(name, unit, positions, ids, bodies, ids_are_plain(ids), tasks=tasks)
