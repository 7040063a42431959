"""What a task is: an id that is safe as a file name, and JSON data.

A task is `{"id": str, "data": object}` (`task_id` is accepted for `id`, as rms-cloud-tasks
files use it), and may list the ids of the tasks it waits for, `"after": [...]` (see
`taskfleet.flows`: it becomes runnable once all of them completed).

Ids are checked here, once, so that every later layer may use one as a file name: a non-empty
string of at most 200 bytes in UTF-8 (so that the id plus a suffix such as `.json.tmp` fits the
255-byte file names of Linux and macOS and the 255 UTF-16 units of Windows), not starting with `.`,
without `/` or `\\`, and without characters that are invisible or change the direction of text
(control and format characters such as U+200B or U+202E, line and paragraph separators, spaces
other than the plain space, surrogates, private-use and unassigned code points): an id must be the
same file name on every system and read as what it is.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from taskfleet.errors import TaskFileError

MAX_TASK_ID_BYTES = 200
# Path separators and control characters (C0, DEL and C1): an id must be usable as a file name.
BAD_ID_CHARACTER = re.compile(r"[/\\\x00-\x1f\x7f-\x9f]")
# Unicode categories of characters that show nothing or reorder text: format (Cf: zero-width
# spaces and joiners, bidirectional overrides), line and paragraph separators, surrogates,
# private use and unassigned code points.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

TaskSource = str | os.PathLike | Iterable[Any] | Callable[[], Iterable[Any]]


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of work: an id that is safe to use as a file name, its JSON data, and the ids
    of the tasks it waits for (empty for the independent tasks most batches are made of)."""

    id: str
    data: Any
    after: tuple[str, ...] = ()
    #: What the tasks it waited for returned (id -> result), carried inside the message on a
    #: queue that keeps no dependency state (SQS, Pub/Sub): the flow coordinator puts them
    #: there when it sends the task, so they survive a retry, a dead letter and a redrive.
    #: None for a task that waited for nothing; task files cannot set it.
    dependency_results: Mapping[str, Any] | None = None

    def to_json(self) -> bytes:
        """The task as a queue message body (JSON, never pickle); `after` and
        `dependency_results` only when present, so a flat task's body is what it always was."""
        if self.after or self.dependency_results is not None:
            body: dict[str, Any] = {"id": self.id, "data": self.data}
            if self.after:
                body["after"] = self.after
            if self.dependency_results is not None:
                body["dependency_results"] = self.dependency_results
            return orjson.dumps(body)
        return orjson.dumps({"id": self.id, "data": self.data})

    @classmethod
    def from_json(cls, body: bytes | str) -> Task:
        obj = orjson.loads(body)
        after = obj.get("after")
        return cls(
            obj["id"],
            obj.get("data", {}),
            tuple(after) if after else (),
            obj.get("dependency_results"),
        )


#: Marks a key that an entry does not have (None is a value a task may hold).
MISSING: Any = object()


def task_id_problem(task_id: object) -> str | None:
    """Why `task_id` cannot be used as a task id (and so as a file name), or None if it can."""
    if not isinstance(task_id, str):
        return f"the id must be a string, not {type(task_id).__name__} ({task_id!r})"
    if not task_id:
        return "the id is empty"
    if len(task_id) > MAX_TASK_ID_BYTES:
        return (
            f"the id is {len(task_id)} characters long; at most {MAX_TASK_ID_BYTES} bytes "
            "(in UTF-8) are allowed, so that it fits a file name"
        )
    if task_id[0] == ".":
        return f"the id {task_id!r} starts with '.'; ids become file names, so this is not allowed"
    bad = BAD_ID_CHARACTER.search(task_id)
    if bad is not None:
        ch = bad.group()
        if ch in "/\\":
            return f"the id {task_id!r} contains {ch!r}; ids become file names, so use '-' instead"
        return f"the id {task_id!r} contains the control character {ch!r}"
    if not task_id.isascii():
        return _unicode_id_problem(task_id)
    return None


def _unicode_id_problem(task_id: str) -> str | None:
    try:
        size = len(task_id.encode("utf-8"))
    except UnicodeEncodeError:
        return f"the id {task_id!r} is not valid Unicode (it holds a lone surrogate)"
    if size > MAX_TASK_ID_BYTES:
        return (
            f"the id is {size} bytes long in UTF-8; at most {MAX_TASK_ID_BYTES} are allowed, so "
            "that it fits a file name"
        )
    for ch in task_id:
        if ch.isascii():
            continue
        category = unicodedata.category(ch)
        if category in _INVISIBLE_CATEGORIES or (category == "Zs" and ch != " "):
            name = unicodedata.name(ch, "unnamed")
            return (
                f"the id {task_id!r} contains U+{ord(ch):04X} ({name}), a character that is "
                "invisible or changes the direction of text; ids become file names"
            )
    return None


def task_from_object(obj: object) -> tuple[Task | None, str | None]:
    """Build a Task from one parsed entry; returns (task, None) or (None, problem)."""
    if isinstance(obj, Task):
        problem = task_id_problem(obj.id)
        if problem is None and not isinstance(obj.data, dict):
            problem = f"the data of task {obj.id!r} is a {type(obj.data).__name__}, not an object"
        if problem is None and obj.after:
            _, problem = after_ids(obj.id, list(obj.after))
        return (None, problem) if problem else (obj, None)
    if not isinstance(obj, dict):
        kind = type(obj).__name__
        return None, f'the entry is a {kind}, not an object like {{"id": ..., "data": {{...}}}}'
    task_id = obj.get("id", MISSING)
    if task_id is MISSING:
        task_id = obj.get("task_id", MISSING)
        if task_id is MISSING:
            return None, "the entry has no 'id'"
    elif "task_id" in obj:
        return None, "the entry has both 'id' and 'task_id'; keep one"
    problem = task_id_problem(task_id)
    if problem:
        return None, problem
    data = obj.get("data", MISSING)
    after = obj.get("after", MISSING)
    if len(obj) > 1 + (data is not MISSING) + (after is not MISSING):
        extra = [k for k in obj if k not in TASK_FIELDS]
        return None, (
            f"task {task_id!r} has unknown field(s) {', '.join(map(repr, extra))}; "
            "a task has only 'id', 'data' and 'after'"
        )
    if data is MISSING:
        data = {}
    elif not isinstance(data, dict):
        return None, f"the data of task {task_id!r} is a {type(data).__name__}, not an object"
    if after is MISSING or after is None:
        return Task(task_id, data), None
    waits_for, problem = after_ids(task_id, after)
    if problem is not None:
        return None, problem
    return Task(task_id, data, waits_for), None


#: The keys a task entry may have.
TASK_FIELDS = ("id", "task_id", "data", "after")


def after_ids(task_id: str, after: object) -> tuple[tuple[str, ...], str | None]:
    """The ids a task waits for, from its `after` entry: a list of ids (a single id is taken
    as a list of one), each a valid id, none repeated; returns (ids, None) or ((), problem).
    Whether they name tasks of the load, and form no cycle, is `taskfleet.flows.graph`'s
    check, which needs the whole load."""
    if isinstance(after, str):
        after = [after]
    if not isinstance(after, list | tuple):
        kind = type(after).__name__
        return (), f"the 'after' of task {task_id!r} is a {kind}, not a list of task ids"
    for other in after:
        problem = task_id_problem(other)
        if problem is not None:
            return (), f"the 'after' of task {task_id!r} names a bad id: {problem}"
    if len(set(after)) != len(after):
        repeated = sorted({other for other in after if after.count(other) > 1})
        return (), f"the 'after' of task {task_id!r} repeats {', '.join(map(repr, repeated))}"
    return tuple(after), None


def as_tasks(items: Iterable[Task | Mapping[str, Any]]) -> Iterator[Task]:
    """The tasks of `items`, where a plain dict `{"id": ..., "data": {...}}` stands for a
    `Task` wherever one is taken (`Queue.send`, a `task_source`): dicts are checked as a task
    file's entries are, and one that is not a task raises `TaskFileError` naming it."""
    for index, item in enumerate(items):
        if item.__class__ is Task:
            yield item  # type: ignore[misc]
            continue
        task, problem = task_from_object(item)
        if task is None:
            raise TaskFileError(f"task {index + 1} of those sent: {problem}")
        yield task
