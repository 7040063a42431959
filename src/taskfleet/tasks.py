"""Tasks and the readers that turn task files into them.

A task is `{"id": str, "data": object}` (`task_id` is accepted for `id`, as rms-cloud-tasks files
use it). Task files are JSON lists (streamed, never loaded whole), JSON Lines, or YAML lists, from
a local path, `-` for standard input, or a URL (`s3://`, `gs://`, `https://`) through fsspec. Any
iterable of dicts or Tasks works too, or a callable that returns one (a task factory).

Validation happens here, once, so that every later layer may use a task id as a file name: ids
are non-empty strings of at most 256 characters without `/`, `\\`, control characters, and not
starting with `.`. Every problem is reported with the file and the line (JSONL, YAML) or index
(JSON) and what to do about it.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from taskfleet.errors import MissingExtraError, TaskFileError

MAX_TASK_ID_LENGTH = 256
_BAD_ID_CHARACTER = re.compile(r"[/\\\x00-\x1f\x7f]")
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "http://", "https://")

TaskSource = str | os.PathLike | Iterable[Any] | Callable[[], Iterable[Any]]


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of work: an id that is safe to use as a file name, and its JSON data."""

    id: str
    data: Any

    def to_json(self) -> bytes:
        """The task as a queue message body (JSON, never pickle)."""
        return orjson.dumps({"id": self.id, "data": self.data})

    @classmethod
    def from_json(cls, body: bytes | str) -> Task:
        obj = orjson.loads(body)
        return cls(obj["id"], obj.get("data", {}))


def task_id_problem(task_id: object) -> str | None:
    """Why `task_id` cannot be used as a task id (and so as a file name), or None if it can."""
    if not isinstance(task_id, str):
        return f"the id must be a string, not {type(task_id).__name__} ({task_id!r})"
    if not task_id:
        return "the id is empty"
    if len(task_id) > MAX_TASK_ID_LENGTH:
        return f"the id is {len(task_id)} characters long; at most {MAX_TASK_ID_LENGTH} are allowed"
    if task_id.startswith("."):
        return f"the id {task_id!r} starts with '.'; ids become file names, so this is not allowed"
    bad = _BAD_ID_CHARACTER.search(task_id)
    if bad is None:
        return None
    ch = bad.group()
    if ch in "/\\":
        return f"the id {task_id!r} contains {ch!r}; ids become file names, so use '-' instead"
    return f"the id {task_id!r} contains the control character {ch!r}"


def task_from_object(obj: object) -> tuple[Task | None, str | None]:
    """Build a Task from one parsed entry; returns (task, None) or (None, problem)."""
    if isinstance(obj, Task):
        problem = task_id_problem(obj.id)
        return (None, problem) if problem else (obj, None)
    if not isinstance(obj, dict):
        kind = type(obj).__name__
        return None, f'the entry is a {kind}, not an object like {{"id": ..., "data": {{...}}}}'
    if "id" in obj:
        task_id = obj["id"]
        if "task_id" in obj:
            return None, "the entry has both 'id' and 'task_id'; keep one"
    elif "task_id" in obj:
        task_id = obj["task_id"]
    else:
        return None, "the entry has no 'id'"
    problem = task_id_problem(task_id)
    if problem:
        return None, problem
    extra = [k for k in obj if k not in ("id", "task_id", "data")]
    if extra:
        return None, (
            f"task {task_id!r} has unknown field(s) {', '.join(map(repr, extra))}; "
            "a task has only 'id' and 'data'"
        )
    data = obj.get("data", {})
    if not isinstance(data, dict):
        return None, f"the data of task {task_id!r} is a {type(data).__name__}, not an object"
    return Task(task_id, data), None


class _DuplicateTracker:
    """Detects an id seen twice in one load without keeping every id string in memory.

    It keeps the 64-bit hash of each id (a few dozen bytes per task instead of the id itself),
    so a million-task file stays within a bounded footprint.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def is_duplicate(self, task_id: str) -> bool:
        h = hash(task_id)
        if h in self._seen:
            return True
        self._seen.add(h)
        return False


def _open_binary(source: str | os.PathLike) -> tuple[IO[bytes], str]:
    """Open a local path, '-', or a URL for binary reading; returns (file, display name)."""
    name = os.fspath(source)
    if name == "-":
        return sys.stdin.buffer, "<stdin>"
    if name.startswith(REMOTE_SCHEMES):
        try:
            import fsspec
        except ImportError as exc:
            raise MissingExtraError(
                f"Reading the task file {name}", "cloud-paths", "fsspec"
            ) from exc
        try:
            return fsspec.open(name, "rb").open(), name
        except ImportError as exc:
            raise MissingExtraError(
                f"Reading the task file {name}", "cloud-paths", exc.name or "fsspec"
            ) from exc
        except Exception as exc:
            from taskfleet.redact import redact

            raise TaskFileError(
                f"{redact(name)}: cannot read the task file: {type(exc).__name__}: "
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


def _detect_format(name: str, head: bytes) -> str:
    lower = name.lower().split("?", 1)[0]
    for suffix, fmt in (
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "json"),
        (".yaml", "yaml"),
        (".yml", "yaml"),
    ):
        if lower.endswith(suffix):
            return fmt
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{"):
        return "jsonl"
    return "yaml"


def _iter_jsonl(f: IO[bytes], name: str) -> Iterator[tuple[str, object]]:
    for lineno, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if _is_bad_utf8(line):
                raise TaskFileError(
                    f"{name}: line {lineno}: the line is not valid UTF-8; save the file as UTF-8."
                ) from None
            raise TaskFileError(f"{name}: line {lineno}: invalid JSON: {exc}.") from None
        yield f"line {lineno}", obj


def _is_bad_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _iter_json_list(f: IO[bytes], name: str) -> Iterator[tuple[str, object]]:
    import ijson

    index = -1
    try:
        head = f.read(64)
        stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        if stripped and not stripped.startswith(b"["):
            raise TaskFileError(
                f"{name}: the top level of a JSON task file must be a list [...] of tasks; "
                "for one task per line, name the file .jsonl."
            )
        stream = io.BufferedReader(_Prefixed(head, f))  # type: ignore[arg-type]
        for index, obj in enumerate(ijson.items(stream, "item", use_float=True)):
            yield f"index {index}", obj
    except ijson.JSONError as exc:
        raise TaskFileError(
            f"{name}: invalid JSON after entry index {index}: {_ijson_message(exc)}."
        ) from None
    except UnicodeDecodeError:
        raise TaskFileError(
            f"{name}: after entry index {index}: the file is not valid UTF-8; save it as UTF-8."
        ) from None
    if index == -1 and not stripped:
        raise TaskFileError(f"{name}: the file is empty; it should hold a JSON list of tasks.")


def _ijson_message(exc: Exception) -> str:
    text = str(exc).strip()
    if "utf-8" in text.lower() or "utf8" in text.lower():
        return "the file is not valid UTF-8; save it as UTF-8"
    return text.splitlines()[0] if text else type(exc).__name__


class _Prefixed(io.RawIOBase):
    """A raw stream that replays bytes already read (for format sniffing) before the rest."""

    def __init__(self, prefix: bytes, rest: IO[bytes]) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._rest.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n


def _iter_yaml(f: IO[bytes], name: str) -> Iterator[tuple[str, object]]:
    import yaml

    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        text = f.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskFileError(
            f"{name}: byte {exc.start}: the file is not valid UTF-8; save it as UTF-8."
        ) from None
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
            where = f"line {item.start_mark.line + 1}"
            yield where, loader.construct_document(item)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TaskFileError(f"{name}: {where}invalid YAML: {problem}.") from None
    finally:
        loader.dispose()


def _iter_file_entries(source: str | os.PathLike) -> Iterator[tuple[str, str, object]]:
    f, name = _open_binary(source)
    try:
        peekable = f if hasattr(f, "peek") else io.BufferedReader(f)  # type: ignore[arg-type]
        head = peekable.peek(64)[:64] if hasattr(peekable, "peek") else b""
        fmt = _detect_format(name, head)
        readers = {"jsonl": _iter_jsonl, "json": _iter_json_list, "yaml": _iter_yaml}
        for where, obj in readers[fmt](peekable, name):
            yield name, where, obj
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def _iter_iterable_entries(source: Iterable[Any], name: str) -> Iterator[tuple[str, str, object]]:
    for index, obj in enumerate(source):
        yield name, f"item {index}", obj


def iter_tasks(
    source: TaskSource,
    *,
    skip: int = 0,
    limit: int | None = None,
    check_duplicates: bool = True,
) -> Iterator[Task]:
    """Yield validated tasks from a file, URL, '-', iterable, or task factory.

    `skip` drops the first tasks and `limit` stops after that many (both after validation, so
    the numbers match the tasks a user sees in the file). Raises `TaskFileError` at the first
    bad entry, naming where it is; tasks yielded before it are valid.
    """
    if skip < 0:
        raise TaskFileError(f"skip must be 0 or more, not {skip}")
    if limit is not None and limit < 0:
        raise TaskFileError(f"limit must be 0 or more, not {limit}")
    if isinstance(source, (str, os.PathLike)):
        entries = _iter_file_entries(source)
    else:
        if callable(source):
            source = source()
        try:
            iterable = iter(source)  # type: ignore[arg-type]
        except TypeError:
            raise TaskFileError(
                f"the task source {source!r} is neither a path, a URL nor an iterable of tasks"
            ) from None
        entries = _iter_iterable_entries(iterable, "task source")
    tracker = _DuplicateTracker() if check_duplicates else None
    produced = 0
    seen = 0
    if limit == 0:
        return
    for name, where, obj in entries:
        task, problem = task_from_object(obj)
        if problem:
            raise TaskFileError(f"{name}: {where}: {problem}.")
        assert task is not None
        if tracker is not None and tracker.is_duplicate(task.id):
            raise TaskFileError(
                f"{name}: {where}: duplicate id {task.id!r}; each task id must be unique "
                "within a task file."
            )
        seen += 1
        if seen <= skip:
            continue
        yield task
        produced += 1
        if limit is not None and produced >= limit:
            return


def load_tasks(source: TaskSource, **kwargs: Any) -> list[Task]:
    """All tasks of a source as a list (for small sources and tests)."""
    return list(iter_tasks(source, **kwargs))
