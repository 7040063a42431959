"""Writing a task list as a task file: JSON, JSON Lines, or the flow text format.

`taskfleet flow convert` turns a `.flow` into the task file every other command and every
queue takes (and back). The file is written beside its destination and renamed over it once
complete, so an interrupted convert never leaves half a task file where a full one is expected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import orjson

from taskfleet.errors import TaskfleetError
from taskfleet.flows.text_format import is_flow_name
from taskfleet.tasks.model import Task

#: the formats `write_tasks` writes, by the destination's suffix
FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".flow": "flow"}


def output_format(path: str | os.PathLike[str]) -> str:
    """The format of a destination, by its suffix; `TaskfleetError` for another."""
    suffix = Path(path).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise TaskfleetError(
            f"{os.fspath(path)}: cannot tell the format to write from {suffix or 'no suffix'!r}; "
            "name the output .json, .jsonl or .flow."
        )
    return fmt


def write_tasks(tasks: list[Task], path: str | os.PathLike[str]) -> None:
    """Write `tasks` to `path` in the format its suffix names, atomically."""
    fmt = output_format(path)
    lines = {"json": _json_lines, "jsonl": _jsonl_lines, "flow": _flow_lines}[fmt](tasks)
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as f:
            for line in lines:
                f.write(line)
        os.replace(temporary, target)
    except OSError as exc:
        raise TaskfleetError(f"{target}: cannot write the task file: {exc.strerror}.") from None
    finally:
        temporary.unlink(missing_ok=True)


def _entry(task: Task) -> bytes:
    if task.after:
        return orjson.dumps({"id": task.id, "data": task.data, "after": task.after})
    return orjson.dumps({"id": task.id, "data": task.data})


def _jsonl_lines(tasks: list[Task]) -> Iterator[bytes]:
    for task in tasks:
        yield _entry(task) + b"\n"


def _json_lines(tasks: list[Task]) -> Iterator[bytes]:
    """A JSON list with one task a line: valid JSON that reads (and diffs) line by line."""
    yield b"[\n"
    for index, task in enumerate(tasks):
        yield b"  " + _entry(task) + (b",\n" if index < len(tasks) - 1 else b"\n")
    yield b"]\n"


def _flow_lines(tasks: list[Task]) -> Iterator[bytes]:
    """The flow text format: one `a, b -> task, ...` line for the tasks that wait for the
    same ones, a lone name for a task nothing touches, and a data line for non-empty data."""
    bad = next((task.id for task in tasks if not is_flow_name(task.id)), None)
    if bad is not None:
        raise TaskfleetError(
            f"task {bad!r} cannot be written as a .flow name (a name holds no blanks and none "
            "of , # = { } [ ] \" ' < >); convert to .json or .jsonl instead."
        )
    waited_for = {other for task in tasks for other in task.after}
    # tasks that wait for the same ones share a line: `prepare -> part-1, part-2, ...`
    groups: dict[tuple[str, ...], list[str]] = {}
    for task in tasks:
        if task.after:
            groups.setdefault(task.after, []).append(task.id)
    yield b"# written by taskfleet flow convert\n"
    for after, ids in groups.items():
        yield f"{', '.join(after)} -> {', '.join(ids)}\n".encode()
    for task in tasks:
        if not task.after and task.id not in waited_for and not task.data:
            yield f"{task.id}\n".encode()
    for task in tasks:
        if task.data:
            yield task.id.encode() + b" = " + orjson.dumps(task.data) + b"\n"
