"""Readers that turn task files and task sources into validated tasks.

A task is `{"id": str, "data": object}` (`task_id` is accepted for `id`, as rms-cloud-tasks files
use it). Task files are JSON lists (streamed, never loaded whole), JSON Lines, YAML lists, or
flows in the text format (`.flow`, see `taskfleet.flows.text_format`), from
a local path, `-` for standard input, or a URL (`s3://`, `gs://`, `https://`) through fsspec. Any
iterable of dicts or Tasks works too, or a callable that returns one (a task factory).

Validation happens here, once, so that every later layer may use a task id as a file name: ids
are non-empty strings of at most 256 characters without `/`, `\\`, control characters, and not
starting with `.`. Every problem is reported with the file and the line (JSONL, YAML) or index
(JSON) and what to do about it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

from taskfleet._compat import StrEnum
from taskfleet.errors import MissingExtraError, TaskFileError
from taskfleet.tasks.limits import (
    NestingGuard,
    SurrogateGuard,
    TaskLimits,
    has_long_digit_run,
    max_nesting,
)
from taskfleet.tasks.model import (
    BAD_ID_CHARACTER,
    MAX_TASK_ID_BYTES,
    MISSING,
    Task,
    TaskSource,
    task_from_object,
)

REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "http://", "https://")


class DuplicateTracker:
    """Detects an id seen twice in one load without keeping every id string in memory.

    It keeps the 64-bit hash of each id in an open-addressing table packed into one
    `array('q')`: 8 bytes a slot, at most two thirds full, so 12 to 24 bytes per task (about
    16 MB for a million ids). A `set` of the same hashes costs about 76 bytes per task (a
    36-byte int object plus its slots), far more than a load's memory budget allows.
    Two different ids share a 64-bit hash with odds of about n^2 / 2^65 (1 in 37 million for a
    million ids); such a pair would be reported as a duplicate.

    Re-inserting every hash when the table doubles is a Python loop, and was half the cost of
    the tracker. So when `progress` (the fraction of the source read so far) is known, a
    growing table jumps straight to the size the whole source will need, by at most 32 times
    at once while small and 4 times once large, so that a file whose first entries are much
    shorter than the rest cannot make it overshoot by much.
    """

    __slots__ = ("_count", "_limit", "_mask", "_progress", "_table")

    _INITIAL_SLOTS = 1 << 16

    def __init__(self, progress: Callable[[], float] | None = None) -> None:
        self._progress = progress
        self._table = array("q", [0]) * self._INITIAL_SLOTS
        self._mask = self._INITIAL_SLOTS - 1
        self._count = 0
        self._limit = (2 * self._INITIAL_SLOTS) // 3

    def is_duplicate(self, task_id: str) -> bool:
        h = hash(task_id) or 1  # 0 marks an empty slot
        table, mask = self._table, self._mask
        i = h & mask
        slot = table[i]
        while slot:
            if slot == h:
                return True
            i = (i + 1) & mask
            slot = table[i]
        table[i] = h
        self._count += 1
        if self._count > self._limit:
            self._grow()
        return False

    def _grow(self) -> None:
        """Enlarge the table and re-insert every hash (amortised O(1) per id)."""
        old = len(self._table)
        size = 2 * old
        done = self._progress() if self._progress is not None else 0.0
        if 0.0 < done < 1.0:
            wanted = 1 << int(1.5 * self._count / done).bit_length()
            size = max(size, min(wanted, old * (32 if old < 1 << 20 else 4)))
        table, mask = array("q", [0]) * size, size - 1
        for h in filter(None, self._table):
            i = h & mask
            while table[i]:
                i = (i + 1) & mask
            table[i] = h
        self._table, self._mask, self._limit = table, mask, (2 * size) // 3


# The library each fsspec protocol needs: fsspec raises a bare ImportError that names none.
_REMOTE_LIBRARY = {
    "s3": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "http": "aiohttp",
    "https": "aiohttp",
}
BOM = b"\xef\xbb\xbf"
_BLANK = b" \t\r\n"


def _open_binary(source: str | os.PathLike) -> tuple[IO[bytes], str]:
    """Open a local path, '-', or a URL for binary reading; returns (file, display name).

    The display name of a URL is redacted: it appears in every error message, and signed URLs
    carry their credentials in the query string.
    """
    name = os.fspath(source)
    if name == "-":
        return sys.stdin.buffer, "<stdin>"
    if name.startswith(REMOTE_SCHEMES):
        from taskfleet.redact import redact

        shown = redact(name)
        try:
            import fsspec
        except ImportError as exc:
            raise MissingExtraError(
                f"Reading the task file {shown}", "cloud-paths", "fsspec"
            ) from exc
        try:
            return fsspec.open(name, "rb").open(), shown
        except ImportError as exc:
            library = exc.name or _REMOTE_LIBRARY.get(name.split("://", 1)[0].lower(), "fsspec")
            raise MissingExtraError(
                f"Reading the task file {shown}", "cloud-paths", library
            ) from exc
        except Exception as exc:
            raise TaskFileError(
                f"{shown}: cannot read the task file: {type(exc).__name__}: "
                f"{redact(str(exc))}. Check the URL and your credentials."
            ) from None
    path = Path(name)
    if not path.exists():
        raise TaskFileError(f"{name}: the task file does not exist. Check the path.")
    if path.is_dir():
        raise TaskFileError(f"{name}: is a directory, not a task file.")
    try:
        return path.open("rb"), name
    except OSError as exc:
        raise TaskFileError(f"{name}: cannot open the task file: {exc.strerror}.") from None


# Byte order marks of encodings other than UTF-8 (UTF-32 first: its LE mark starts as UTF-16's).
_OTHER_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def _check_encoding(name: str, head: bytes) -> None:
    """Refuse a file in UTF-16 or UTF-32 by its encoding, before a parser blames its content."""
    marked = [encoding for bom, encoding in _OTHER_BOMS if head.startswith(bom)]
    if marked:
        encoding = marked[0]
    else:
        # Without a mark: ASCII text in UTF-16 has a zero byte beside every character.
        sample = head[:64]
        if len(sample) < 4 or sample.count(0) < len(sample) // 4:
            return
        encoding = "UTF-16 or UTF-32"
    raise TaskFileError(f"{name}: the file is in {encoding}; save it as UTF-8.")


def _detect_format(name: str, head: bytes) -> str:
    lower = name.lower().split("?", 1)[0]
    for suffix, fmt in (
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "json"),
        (".yaml", "yaml"),
        (".yml", "yaml"),
        (".flow", "flow"),
    ):
        if lower.endswith(suffix):
            return fmt
    stripped = head.lstrip(BOM + _BLANK)
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{"):
        return "jsonl"
    return "yaml"


# Readers yield (position, entry): the line number (JSONL, YAML) or the list index (JSON). The
# position is an int and the message is built only on error: formatting "line N" for each of a
# million good lines was a measurable part of a load.


def iter_jsonl_entries(
    f: IO[bytes], name: str, limits: TaskLimits, first_line: int = 1, whole_file: bool = True
) -> Iterator[tuple[int, object]]:
    """(line number, parsed entry) of each non-blank line; `first_line` numbers a part of a
    file read on its own (a block of a bulk load, `whole_file` False). Each line is checked
    against `limits` on its text, before parsing: orjson would turn an integer too large for
    64 bits into a float. A whole file without a task is refused, as an empty JSON list is."""
    entries = 0
    loads = orjson.loads
    lineno = first_line - 1
    # Lines come a block at a time, so that the limits are checked on a block's text at once;
    # only a block that might break one is checked line by line.
    while lines := f.readlines(_LINES_BLOCK_BYTES):
        block = b"".join(lines)
        suspect = limits.text_needs_check(block) or (
            len(block) > limits.max_bytes and max(map(len, lines)) > limits.max_bytes
        )
        for line in lines:
            lineno += 1
            if suspect:
                _check_jsonl_line(line, lineno, name, limits)
            try:
                obj = loads(line)
            except orjson.JSONDecodeError:
                obj = _jsonl_refused(line, lineno, name)
                if obj is MISSING:
                    continue
            entries += 1
            yield lineno, obj
    if whole_file and not entries:
        raise TaskFileError(
            f"{name}: the file is empty; it should hold one task per line, "
            '{"id": ..., "data": {...}}.'
        )


_LINES_BLOCK_BYTES = 1 << 16
_LEADING_ID = re.compile(rb'\s*\{\s*"(?:id|task_id)"\s*:\s*"([ -!#-\[\]-~]{1,200})"')


def _check_jsonl_line(line: bytes, lineno: int, name: str, limits: TaskLimits) -> None:
    if lineno == 1 and line.startswith(BOM):
        line = line[len(BOM) :]
    problem = limits.task_text_problem(line)
    if problem is None:
        return
    leading_id = _LEADING_ID.match(line)  # the usual case, without parsing a line too large
    task_id: object = leading_id.group(1).decode() if leading_id else None
    if task_id is None and len(line) <= limits.max_bytes:
        with contextlib.suppress(ValueError, RecursionError, AttributeError):
            entry = orjson.loads(line)
            task_id = entry.get("id", entry.get("task_id"))
    which = f"task {task_id!r}" if isinstance(task_id, str) else "the task on this line"
    raise TaskFileError(f"{name}: line {lineno}: {which}: {problem}.")


def _jsonl_refused(line: bytes, lineno: int, name: str) -> object:
    """A line orjson refused: blank (`MISSING`: skip it), a UTF-8 byte order mark before the
    first line (tolerated, as editors on Windows write one), or an error naming the line."""
    if lineno == 1 and line.startswith(BOM):
        line = line[len(BOM) :]
    if not line.strip():
        return MISSING
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if _is_bad_utf8(line):
            raise TaskFileError(
                f"{name}: line {lineno}: the line is not valid UTF-8; save the file as UTF-8."
            ) from None
        raise TaskFileError(f"{name}: line {lineno}: invalid JSON: {exc}.") from None


def _is_bad_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _first_bytes(f: IO[bytes]) -> bytes:
    """The bytes read from `f` up to and after its first one that is not blank (nor a BOM).

    Empty only for a file of nothing but blanks. Reading on until a non-blank byte (not just a
    fixed 64 bytes) keeps a long run of leading blanks from hiding a top level that is no list.
    """
    chunk = f.read(64)
    if chunk.startswith(BOM):
        chunk = chunk[len(BOM) :]
    while chunk:
        stripped = chunk.lstrip(_BLANK)
        if stripped:
            return stripped
        chunk = f.read(1 << 16)
    return b""


def _iter_json_list(f: IO[bytes], name: str, limits: TaskLimits) -> Iterator[tuple[int, object]]:
    import ijson

    head = _first_bytes(f)
    if not head:
        raise TaskFileError(f"{name}: the file is empty; it should hold a JSON list of tasks.")
    if not head.startswith(b"["):
        raise TaskFileError(
            f"{name}: the top level of a JSON task file must be a list [...] of tasks; "
            "for one task per line, name the file .jsonl."
        )
    index = -1
    try:
        raw = _GuardedJSON(head, f, name, limits)
        stream = io.BufferedReader(raw)  # type: ignore[arg-type]
        for index, obj in enumerate(ijson.items(stream, "item", use_float=True)):
            if raw.may_hold_large_task:
                _check_list_entry_size(obj, index, name, limits)
            yield index, obj
    except TaskFileError:
        raise
    except ijson.JSONError as exc:
        # The entries up to `index` were whole, so the problem is in the next one or after it.
        message = _ijson_message(exc)
        if not message.startswith("an integer"):
            message = f"invalid JSON: {message}"
        raise TaskFileError(f"{name}: index {index + 1}: {message}.") from None
    except UnicodeDecodeError:
        raise TaskFileError(
            f"{name}: index {index + 1}: the file is not valid UTF-8; save it as UTF-8."
        ) from None


def _check_list_entry_size(obj: object, index: int, name: str, limits: TaskLimits) -> None:
    """Refuse an entry of a JSON list whose JSON is over the size limit, naming it."""
    try:
        size = len(orjson.dumps(obj))
    except orjson.JSONEncodeError:
        return  # not a task; `validated` says what is wrong with it
    if size > limits.max_bytes:
        task_id = obj.get("id", obj.get("task_id")) if isinstance(obj, dict) else None
        which = f"task {task_id!r}" if isinstance(task_id, str) else "the task"
        problem = limits.data_problem(None, size)
        raise TaskFileError(f"{name}: index {index}: {which}: {problem}.")


def _ijson_message(exc: Exception) -> str:
    text = str(exc).strip()
    if "integer overflow" in text:
        return (
            "an integer does not fit in 64 bits and would not come back unchanged; pass it "
            "as a string"
        )
    if "utf-8" in text.lower() or "utf8" in text.lower():
        return "the file is not valid UTF-8; save it as UTF-8"
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


class _GuardedJSON(io.RawIOBase):
    """The raw stream a JSON list is parsed from: it replays the bytes already read (for format
    sniffing) before the rest, and checks each chunk before the parser sees it, for nesting
    deeper than the limit (the parser would build it in memory out of all proportion to the
    file) and for lone surrogate escapes (the parser would turn them into `?`)."""

    def __init__(self, prefix: bytes, rest: IO[bytes], name: str, limits: TaskLimits) -> None:
        self._prefix = prefix
        self._rest = rest
        self._name = name
        self._limits = limits
        # the list itself and each task object are two levels above the data
        self._nesting = NestingGuard(limits.max_depth + 2)
        self._surrogates = SurrogateGuard()
        self.may_hold_large_task = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            data, self._prefix = self._prefix[: len(buffer)], self._prefix[len(buffer) :]
        else:
            data = self._rest.read(len(buffer))
        self._check(data)
        n = len(data)
        buffer[:n] = data
        return n

    def _check(self, data: bytes) -> None:
        line = self._nesting.feed(data)
        if self._nesting.longest_item_bound > self._limits.max_bytes:
            self.may_hold_large_task = True
        if line is not None:
            raise TaskFileError(
                f"{self._name}: line {line}: a task's data nests more than "
                f"{self._limits.max_depth} levels deep (TASKFLEET_MAX_TASK_DEPTH); flatten it "
                "or raise the limit."
            )
        line = self._surrogates.feed(data, final=not data)
        if line is not None:
            raise TaskFileError(
                f"{self._name}: line {line}: a string holds a lone surrogate escape (such as "
                "\\ud800), which is not valid Unicode; fix the text that wrote it."
            )


def _iter_yaml(f: IO[bytes], name: str) -> Iterator[tuple[int, object]]:
    import yaml

    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise TaskFileError(
            f"{name}: line {line}: the file is not valid UTF-8; save it as UTF-8."
        ) from None
    del raw
    loader = loader_cls(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise TaskFileError(f"{name}: the file is empty; it should hold a YAML list of tasks.")
        if not isinstance(root, yaml.SequenceNode):
            raise TaskFileError(
                f"{name}: line {root.start_mark.line + 1}: the top level must be a list of "
                "tasks (entries starting with '- id: ...')."
            )
        for item in root.value:
            yield item.start_mark.line + 1, loader.construct_document(item)
    except RecursionError:
        raise TaskFileError(
            f"{name}: a task's data nests too deeply to be read; flatten it."
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TaskFileError(f"{name}: {where}invalid YAML: {problem}.") from None
    finally:
        loader.dispose()


@contextmanager
def open_task_file(source: str | os.PathLike) -> Iterator[tuple[IO[bytes], str, str]]:
    """Open a task file for reading: yields (file, display name, format).

    The format is "jsonl", "json" or "yaml", by the name's suffix or else by the first bytes.
    A failure to read part way through (a dropped connection to a remote file, a failing disk)
    becomes a TaskFileError naming the file.
    """
    f, name = _open_binary(source)
    remote = name != "<stdin>" and name.startswith(REMOTE_SCHEMES)
    try:
        peekable = f if hasattr(f, "peek") else io.BufferedReader(f)  # type: ignore[arg-type]
        head = peekable.peek(64)[:64] if hasattr(peekable, "peek") else b""
        _check_encoding(name, head)
        yield peekable, name, _detect_format(name, head)
    except TaskFileError:
        raise
    except Exception as exc:
        if not (remote or isinstance(exc, OSError)):
            raise
        raise TaskFileError(
            f"{name}: cannot read the task file: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        if f is not sys.stdin.buffer:
            f.close()


class DataCheck(StrEnum):
    """How much of a task's data `validated` must still check against the limits."""

    #: Checked by its reader, on its text (JSON Lines, JSON lists).
    NONE = "none"
    #: Parsed by a library that admits more than JSON (YAML): everything, walking the data.
    FULL = "full"
    #: Built in Python (a task source): the data's JSON text first, cleared at C speed, and
    #: walked as FULL only where the text cannot clear it. Not for YAML, whose aliases can
    #: make a small file into more text than memory holds (the walk stops on a budget).
    PYTHON = "python"


def read_entries(
    f: IO[bytes], name: str, fmt: str, limits: TaskLimits
) -> tuple[str, Iterator[tuple[int, object]], DataCheck]:
    """(position unit, entries, what `validated` must still check) of an open task file."""
    if fmt == "jsonl":
        return "line", iter_jsonl_entries(f, name, limits), DataCheck.NONE
    if fmt == "json":
        return "index", _iter_json_list(f, name, limits), DataCheck.NONE
    if fmt == "flow":
        # The flow text format (`taskfleet.flows.text_format`): parsed whole, its graph checked.
        from taskfleet.flows.text_format import flow_entries

        entries, needs_check = flow_entries(f, name, limits)
        return "line", entries, DataCheck.FULL if needs_check else DataCheck.NONE
    # YAML can hold what JSON cannot (binary, sets, non-string keys); the queue stores JSON.
    return "line", _iter_yaml(f, name), DataCheck.FULL


def file_progress(f: IO[bytes]) -> Callable[[], float] | None:
    """The fraction of a local regular file read so far (None for pipes, stdin and URLs)."""
    try:
        size = os.fstat(f.fileno()).st_size
        f.tell()
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return None
    if size <= 0:
        return None
    return lambda: f.tell() / size


def check_skip_and_limit(skip: int, limit: int | None) -> None:
    if skip < 0:
        raise TaskFileError(f"skip must be 0 or more, not {skip}")
    if limit is not None and limit < 0:
        raise TaskFileError(f"limit must be 0 or more, not {limit}")


def task_iterable(source: Iterable[Any] | Callable[[], Iterable[Any]]) -> Iterator[Any]:
    """The entries of an iterable, or of what a task factory returns."""
    if callable(source):
        source = source()
    try:
        return iter(source)
    except TypeError:
        raise TaskFileError(
            f"the task source {source!r} is neither a path, a URL nor an iterable of tasks"
        ) from None


def iter_tasks(
    source: TaskSource,
    *,
    skip: int = 0,
    limit: int | None = None,
    check_duplicates: bool = True,
    limits: TaskLimits | None = None,
) -> Iterator[Task]:
    """Yield validated tasks from a file, URL, '-', iterable, or task factory.

    `skip` drops the first tasks and `limit` stops after that many (both after validation, so
    the numbers match the tasks a user sees in the file). Raises `TaskFileError` at the first
    bad entry, naming where it is; tasks yielded before it are valid. `limits` (by default from
    the `TASKFLEET_*` variables) say how large and deep a task may be.
    """
    check_skip_and_limit(skip, limit)
    if limit == 0:
        return
    limits = limits or TaskLimits.from_env()
    if isinstance(source, (str, os.PathLike)):
        with open_task_file(source) as (f, name, fmt):
            unit, entries, check = read_entries(f, name, fmt, limits)
            positioned = validated(
                name,
                unit,
                entries,
                check,
                limits,
                skip,
                limit,
                check_duplicates,
                file_progress(f),
            )
            for _, task in positioned:
                yield task
        return
    entries = enumerate(task_iterable(source))
    positioned = validated(
        "task source", "item", entries, DataCheck.PYTHON, limits, skip, limit, check_duplicates
    )
    for _, task in positioned:
        yield task


def validated(
    name: str,
    unit: str,
    entries: Iterator[tuple[int, object]],
    check: DataCheck,
    limits: TaskLimits,
    skip: int,
    limit: int | None,
    check_duplicates: bool,
    progress: Callable[[], float] | None = None,
) -> Iterator[tuple[int, Task]]:
    """The body of `iter_tasks`: validate each entry, refuse duplicates, apply skip and limit.
    Yields (position, task): the line or index, for messages that come later (a duplicate
    found by the queue)."""
    is_duplicate = DuplicateTracker(progress).is_duplicate if check_duplicates else None
    bad_character = BAD_ID_CHARACTER.search
    produced = 0
    seen = 0
    for position, obj in entries:
        # The usual entry, {"id": "<ASCII id>", "data": {...}}, is accepted inline: this loop
        # runs a million times for a large file, and the full check costs twice as much. All
        # else goes through `task_from_object`, which decides and words the error.
        task_id = data = None
        if type(obj) is dict and len(obj) == 2:
            task_id = obj.get("id")
            data = obj.get("data")
        if type(obj) is Task and check is DataCheck.NONE:
            # Built by a reader that checked its ids itself (the flow text format), from text
            # that cleared the limits: only callers' iterables (always DataCheck.FULL) pass
            # Tasks otherwise.
            task = obj
        elif (
            type(task_id) is str
            and type(data) is dict
            and 0 < len(task_id) <= MAX_TASK_ID_BYTES
            and task_id[0] != "."
            and task_id.isascii()
            and bad_character(task_id) is None
        ):
            task = Task(task_id, data)
        else:
            task, problem = task_from_object(obj)
            if problem is not None:
                raise TaskFileError(f"{name}: {unit} {position}: {problem}.")
            assert task is not None
        if check is DataCheck.PYTHON:
            problem = _python_data_problem(task, limits)
            if problem is not None:
                raise TaskFileError(f"{name}: {unit} {position}: task {task.id!r}: {problem}.")
        elif check is not DataCheck.NONE:
            problem = _data_problem(task, limits)
            if problem is not None:
                raise TaskFileError(f"{name}: {unit} {position}: task {task.id!r}: {problem}.")
        if is_duplicate is not None and is_duplicate(task.id):
            raise TaskFileError(
                f"{name}: {unit} {position}: duplicate id {task.id!r}; each task id must be "
                "unique within a task file."
            )
        seen += 1
        if seen <= skip:
            continue
        yield position, task
        produced += 1
        if produced == limit:
            return


def _python_data_problem(task: Task, limits: TaskLimits) -> str | None:
    """`_data_problem` for data built in Python, most of it cleared on its JSON text.

    What orjson encodes has string keys, valid Unicode, integers within 64 bits (unsigned:
    19 digits or more are checked exactly) and is no deeper than its brackets; a float that is
    not finite becomes `null`, so text holding `null` is checked exactly too. Whatever the text
    cannot clear, or orjson refuses, goes through `_data_problem`, which words every problem
    as before.
    """
    try:
        encoded = orjson.dumps(task.data)
    except orjson.JSONEncodeError:
        return _data_problem(task, limits)
    if (
        b"null" in encoded
        or has_long_digit_run(encoded)
        or (
            encoded.count(b"[") + encoded.count(b"{") > limits.max_depth
            and max_nesting(encoded) > limits.max_depth
        )
    ):
        return _data_problem(task, limits)
    size = len(encoded) + len(orjson.dumps(task.id)) + 15
    if size > limits.max_bytes:
        return limits.data_problem(None, size)
    return None


def _data_problem(task: Task, limits: TaskLimits) -> str | None:
    """Why `task`'s data cannot go into a queue unchanged, or None."""
    problem = limits.data_problem(task.data)
    if problem is not None:
        return problem
    try:
        encoded = orjson.dumps(task.data)
    except orjson.JSONEncodeError as exc:
        return (
            f"its data cannot be stored as JSON ({exc}); use only objects with string keys, "
            "lists, strings, numbers, true, false and null"
        )
    # the size of {"id":<id>,"data":<data>} as the queue stores it
    size = len(encoded) + len(orjson.dumps(task.id)) + 15
    if size > limits.max_bytes:
        return limits.data_problem(None, size)
    return None


def load_tasks(source: TaskSource, **kwargs: Any) -> list[Task]:
    """All tasks of a source as a list (for small sources and tests)."""
    return list(iter_tasks(source, **kwargs))
