"""The flow text format (`.flow`): a flow written as arrows, for people who think in graphs.

    # the prepare -> 4 chunks -> aggregate job
    prepare -> chunk-1, chunk-2, chunk-3, chunk-4 -> aggregate
    prepare = {"rows": 1000}
    chunk-1 = {"part": 1}

A line is one of three statements, and `#` starts a comment anywhere outside a JSON object:

- a chain, `a -> b -> c`: each step runs after every task of the step before it; a step is one
  task or several separated by commas (`a -> b, c` fans out, `b, c -> d` fans in);
- a data line, `name = {JSON object}` on one line: the task's data (default `{}`);
- a lone name: a task that waits for nothing and that nothing waits for.

A name in a chain may hold one numeric range, `part-{1..4}` for `part-1, ..., part-4`
(`{01..12}` keeps the zeros), so a wide fan-out stays one short line.

A name is a task id made of anything but blanks and `, # = { } [ ] " ' < >` (and `->`), so
it reads the same in the file and in the task list. The result is the task list form of every
other task file (`Task(id, data, after)`), in the order the names first appear.

The whole file is read before anything is returned, because an arrow may name a task that a
later line defines; a bad file raises `TaskFileError` with `FILE:LINE:COLUMN`, what is wrong
and what to do, and a cycle is shown as the chain of tasks that wait for each other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import IO, Any

import orjson

from taskfleet.errors import TaskFileError
from taskfleet.flows.graph import DependencyGraph
from taskfleet.tasks.limits import TaskLimits
from taskfleet.tasks.model import Task, task_id_problem

#: What a name may not hold: blanks and the characters the syntax uses.
_NAME = re.compile(r"(?:[^\s,#={}\[\]\"'<>-]|-(?!>))+")
#: A step of plain ASCII names, none holding what the syntax or a task id forbids (nor
#: starting with '.', nor longer than an id may be), separated by commas.
_PLAIN_NAME = r"[A-Za-z0-9_:;@+!$%&()*?^`|~-][A-Za-z0-9_.:;@+!$%&()*?^`|~-]{0,199}"
_PLAIN_STEP = re.compile(rf"[ \t]*{_PLAIN_NAME}(?:[ \t]*,[ \t]*{_PLAIN_NAME})*[ \t]*")
_ARROW = "->"
_BLANKS = " \t"


class _Line:
    """One line of the file being read: its text and number, for error positions."""

    __slots__ = ("name", "number", "text")

    def __init__(self, name: str, number: int, text: str) -> None:
        self.name = name
        self.number = number
        self.text = text

    def error(self, column: int, problem: str) -> TaskFileError:
        """`FILE:LINE:COLUMN: problem` (the column counted from 1)."""
        return TaskFileError(f"{self.name}:{self.number}:{column + 1}: {problem}")

    def where(self, column: int) -> str:
        return f"{self.name}:{self.number}:{column + 1}"


class _Places(dict[str, str]):
    """`FILE:LINE:COLUMN` of the tasks that wait, for the graph check's errors: kept as the
    line and the step's start, and written out only for the task an error names."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        #: id -> (line number, line text, where its step starts in the line)
        self.raw: dict[str, tuple[int, str, int]] = {}

    def __missing__(self, task_id: str) -> str:
        number, text, start = self.raw[task_id]
        return f"{self.name}:{number}:{_column(text, start, task_id) + 1}"

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.raw

    def get(self, task_id: str, default: str | None = None) -> str | None:  # type: ignore[override]
        """`dict.get` does not call `__missing__`: the graph check asks with `get`."""
        return self[task_id] if task_id in self.raw else default


def _column(text: str, start: int, name: str) -> int:
    """Where `name` stands as a whole name in `text`, from `start` on (0-based)."""
    for part_start, part in _parts(text, start):
        if part.strip(_BLANKS) == name:
            return part_start + len(part) - len(part.lstrip(_BLANKS))
    return start


def _parts(text: str, start: int) -> Iterator[tuple[int, str]]:
    end = text.find(_ARROW, start)
    position = start
    for part in text[start : len(text) if end < 0 else end].split(","):
        yield position, part
        position += len(part) + 1


class FlowReader:
    """Reads the statements of a flow file into tasks, then checks the graph they form."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: id -> its data (insertion order is the order names first appear)
        self.data: dict[str, Any] = {}
        #: id -> the line where its name first appears (its position in a task list)
        self.first_line: dict[str, int] = {}
        #: id -> where its data was given, to name both places of a repeat
        self.data_line: dict[str, int] = {}
        #: id -> the ids it waits for, each once, in the order the file names them
        #: (tasks first named in the same step share one tuple: a fan-out of a million tasks
        #: allocates one, and the rare task named after arrows twice gets a merged copy)
        self.after: dict[str, tuple[str, ...]] = {}
        #: id -> where it first appears after an arrow, for the errors of the graph check
        self.where = _Places(name)

    def read_line(self, number: int, text: str) -> None:
        """Take one line of the file (without its end of line)."""
        hash_at = text.find("#")
        equals_at = text.find("=")
        if equals_at >= 0 and (hash_at < 0 or equals_at < hash_at):
            # The usual data line, for a task an arrow named already, is taken inline: a
            # large flow has one per task. All else goes through `_read_data`, which decides
            # and words the error.
            task_id = text[:equals_at].strip(_BLANKS)
            if task_id in self.data and task_id not in self.data_line and hash_at < 0:
                try:
                    data = orjson.loads(text[equals_at + 1 :])
                except orjson.JSONDecodeError:
                    data = None
                if type(data) is dict:
                    self.data_line[task_id] = number
                    self.data[task_id] = data
                    return
            self._read_data(_Line(self.name, number, text), equals_at)
            return
        if hash_at >= 0:
            text = text[:hash_at]
        if text and not text.isspace():
            self._read_chain(_Line(self.name, number, text))

    def _read_chain(self, line: _Line) -> None:
        text = line.text
        steps: list[list[str]] = []
        starts: list[int] = []
        start = 0
        while True:
            arrow_at = text.find(_ARROW, start)
            end = len(text) if arrow_at < 0 else arrow_at
            steps.append(self._step(line, start, end, arrow_at >= 0 or bool(steps)))
            starts.append(start)
            if arrow_at < 0:
                break
            start = arrow_at + len(_ARROW)
        data, first_line = self.data, self.first_line
        for names in steps:
            for task_id in names:
                if task_id not in data:
                    data[task_id] = None
                    first_line[task_id] = line.number
        after, where = self.after, self.where
        for index in range(1, len(steps)):
            before, step = steps[index - 1], steps[index]
            itself = set(before).intersection(step)
            if itself:
                task_id = next(name for name in step if name in itself)
                raise line.error(
                    _column(text, starts[index], task_id),
                    f"task {task_id!r} waits for itself; remove it from one side of the arrow.",
                )
            waited = tuple(dict.fromkeys(before))
            for task_id in step:
                waits = after.get(task_id)
                if waits is None:
                    after[task_id] = waited
                    where.raw[task_id] = (line.number, text, starts[index])
                elif waits is not waited:
                    after[task_id] = tuple(dict.fromkeys(waits + waited))

    def _step(self, line: _Line, start: int, end: int, in_chain: bool) -> list[str]:
        """The names of one step of a chain, `text[start:end]`. The usual step (plain ASCII
        names) is checked at once; any other is checked name by name, for the error."""
        part_text = line.text[start:end]
        names = [part.strip(_BLANKS) for part in part_text.split(",")]
        if _PLAIN_STEP.fullmatch(part_text) is not None:
            return names
        names = []
        position = start
        for part in part_text.split(","):
            name = part.strip(_BLANKS)
            column = position + (len(part) - len(part.lstrip(_BLANKS)))
            position += len(part) + 1
            if not name:
                raise line.error(column, _missing(in_chain))
            expanded = _expand_range(line, column, name) if "{" in name else [name]
            for one in expanded:
                if one not in self.data:  # a name is checked the first time it appears
                    self._check_name(line, column, one)
            names.extend(expanded)
        return names

    @staticmethod
    def _check_name(line: _Line, column: int, name: str) -> None:
        """Refuse a name the syntax cannot hold or that is no usable task id."""
        if _NAME.fullmatch(name) is None:
            raise line.error(column, _bad_name(name))
        problem = task_id_problem(name)
        if problem is not None:
            raise line.error(column, f"{problem}.")

    def _read_data(self, line: _Line, equals_at: int) -> None:
        text = line.text
        head = text[:equals_at]
        task_id = head.strip(_BLANKS)
        column = len(head) - len(head.lstrip(_BLANKS))
        if not task_id:
            raise line.error(column, "a data line needs a task name before '=': NAME = {...}.")
        if _ARROW in head or "," in head:
            raise line.error(
                equals_at,
                "a line is either a chain (a -> b) or data (NAME = {...}), not both; put the "
                "data on a line of its own.",
            )
        if task_id not in self.data:
            self._check_name(line, column, task_id)
        body = text[equals_at + 1 :]
        body_column = equals_at + 1 + len(body) - len(body.lstrip(_BLANKS))
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = _data_with_comment(line, task_id, body.lstrip(_BLANKS), body_column)
        if not isinstance(data, dict):
            raise line.error(
                body_column,
                f"the data of task {task_id!r} is a {_json_kind(data)}, not a JSON object; "
                'write {"value": ...} instead.',
            )
        first = self.data_line.get(task_id)
        if first is not None:
            raise line.error(
                column,
                f"the data of task {task_id!r} is given twice (first on line {first}); keep one.",
            )
        self.data_line[task_id] = line.number
        if task_id not in self.data:
            self.first_line[task_id] = line.number
        self.data[task_id] = data

    def tasks(self) -> list[Task]:
        """The tasks read, after the check of their graph (a cycle raises `TaskFileError`)."""
        if not self.data:
            raise TaskFileError(
                f"{self.name}: the flow file holds no task; write a chain such as "
                "'prepare -> process -> aggregate', one per line."
            )
        graph = DependencyGraph()
        graph.ids = set(self.data)
        graph.after = self.after
        graph.where = self.where
        graph.check()
        after = self.after
        return [
            Task(task_id, {} if data is None else data, after[task_id])
            if task_id in after
            else Task(task_id, {} if data is None else data)
            for task_id, data in self.data.items()
        ]


def is_flow_name(task_id: str) -> bool:
    """Whether a task id can be written as a name of the flow text format."""
    return _NAME.fullmatch(task_id) is not None


def _data_with_comment(line: _Line, task_id: str, body: str, column: int) -> Any:
    """The JSON of a data line that orjson refused: a comment may follow it; else the error,
    with the column where the JSON goes wrong."""
    try:
        data, end = _JSON.raw_decode(body)
    except json.JSONDecodeError as exc:
        raise line.error(
            column + exc.pos,
            f"the data of task {task_id!r} is not valid JSON ({exc.msg}); write it as a JSON "
            'object on one line, such as {"rows": 1000}.',
        ) from None
    rest = body[end:].lstrip(_BLANKS)
    if rest and not rest.startswith("#"):
        raise line.error(
            column + len(body) - len(rest),
            f"unexpected text after the data of task {task_id!r}; a data line holds one JSON "
            "object (a comment may follow it after '#').",
        )
    return data


_JSON = json.JSONDecoder()


_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
#: the most names one range may stand for (a typo such as {1..100000000} stops here)
MAX_RANGE = 1_000_000


def _expand_range(line: _Line, column: int, text: str) -> list[str]:
    """The names `part-{1..4}` stands for (`part-1` ... `part-4`); `{01..12}` pads to the
    width of its first number. One range per name."""
    ranges = list(_RANGE.finditer(text))
    if len(ranges) != 1 or text.count("{") != 1 or text.count("}") != 1:
        raise line.error(
            column,
            f"{text!r} is not a task name: a name may hold one range such as part-{{1..4}} "
            "(numbers from 1 to 4), and no other braces.",
        )
    (match,) = ranges
    first_text, last_text = match.group(1), match.group(2)
    first, last = int(first_text), int(last_text)
    if last < first:
        raise line.error(
            column + match.start(),
            f"the range {match.group()} counts down; write it from the smaller number, "
            f"{{{last_text}..{first_text}}}.",
        )
    if last - first + 1 > MAX_RANGE:
        raise line.error(
            column + match.start(),
            f"the range {match.group()} stands for {last - first + 1:,} tasks; at most "
            f"{MAX_RANGE:,} are allowed in one range.",
        )
    width = len(first_text) if first_text.startswith("0") and len(first_text) > 1 else 0
    head, tail = text[: match.start()], text[match.end() :]
    return [f"{head}{number:0{width}d}{tail}" for number in range(first, last + 1)]


def _missing(in_chain: bool) -> str:
    if in_chain:
        return (
            "a task name is missing here: each side of '->' and each place between commas "
            "needs one."
        )
    return "a task name is missing here: remove the extra comma."


def _bad_name(text: str) -> str:
    return (
        f"{text!r} is not a task name: a name holds no blanks and none of , # = {{ }} [ ] \" ' "
        "< > (nor '->'); separate names with commas and steps with '->'."
    )


def _json_kind(value: object) -> str:
    return {
        list: "list",
        str: "string",
        int: "number",
        float: "number",
        bool: "boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def parse_flow(text: str, name: str = "<flow>") -> list[Task]:
    """The tasks of a flow written in the text format (see the module docstring)."""
    reader = FlowReader(name)
    for number, line in enumerate(text.splitlines(), 1):
        reader.read_line(number, line)
    return reader.tasks()


def read_flow(f: IO[bytes], name: str) -> list[Task]:
    """The tasks of an open `.flow` file (UTF-8; a byte order mark is ignored)."""
    return _read(f.read(), name).tasks()


def _read(raw: bytes, name: str) -> FlowReader:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise TaskFileError(
            f"{name}:{line}: the file is not valid UTF-8; save it as UTF-8."
        ) from None
    reader = FlowReader(name)
    for number, line_text in enumerate(text.splitlines(), 1):
        reader.read_line(number, line_text)
    return reader


def flow_entries(
    f: IO[bytes], name: str, limits: TaskLimits
) -> tuple[Iterator[tuple[int, object]], bool]:
    """(line, task) of an open `.flow` file, for the task file readers, and whether the
    tasks' data must still be checked against `limits`. The line is the task's data line, or
    else where its name first appears. The file is read now: its text clears the limits at
    once in the usual case (every line shorter than a task may be, no deep nesting nor long
    numbers), as JSON Lines blocks are cleared, and only a file that may break one has each
    task's data checked."""
    raw = f.read()
    reader = _read(raw, name)
    needs_check = len(raw) + _ENVELOPE_BYTES > limits.max_bytes and (
        max(map(len, raw.split(b"\n"))) + _ENVELOPE_BYTES > limits.max_bytes
    )
    # a data line holds the data object itself, one level less deep than a JSON Lines task
    needs_check = needs_check or limits.text_needs_check(raw, base_depth=0)
    del raw
    tasks = reader.tasks()
    # a task's place: its data line if it has one (where a problem with its data is), else
    # the line where its name first appears
    line_of = {**reader.first_line, **reader.data_line}
    return ((line_of[task.id], task) for task in tasks), needs_check


#: What a queue message adds to a task's id and data (`{"id":,"data":}`), for the size check.
_ENVELOPE_BYTES = 16
