"""A task file read as a flow: its ids in file order and what each waiting task waits for.

The pictures need the whole graph at once (layers depend on every chain), and the same checks
as a load: `DependencyGraph.check` refuses unknown ids, a task waiting for itself and cycles,
naming the file and line, before anything is drawn. Only ids and `after` lists are kept, not
the tasks' data, so a file of 100,000 tasks costs their ids.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from taskfleet.flows.graph import DependencyGraph
from taskfleet.tasks.limits import TaskLimits
from taskfleet.tasks.readers import file_progress, open_task_file, read_entries, validated


@dataclass
class FlowFile:
    """The ids of a task file, in file order, and task id -> the ids it waits for."""

    ids: list[str]
    after: dict[str, tuple[str, ...]]

    @property
    def has_dependencies(self) -> bool:
        return bool(self.after)


def read_flow(source: str | os.PathLike[str], *, outside_ok: bool = False) -> FlowFile:
    """Read and check a task file (local path or URL); raises `TaskFileError` naming the file
    and line of the first problem. With `outside_ok`, a task may wait for ids the file does not
    hold (a file loaded after another, into the same queue): they are kept in `after`, and
    only a task waiting for itself and cycles are refused."""
    limits = TaskLimits.from_env()
    graph = DependencyGraph()
    ids: list[str] = []
    with open_task_file(source) as (f, name, fmt):
        unit, entries, check = read_entries(f, name, fmt, limits)
        positioned = validated(name, unit, entries, check, limits, 0, None, True, file_progress(f))
        for position, task in positioned:
            ids.append(task.id)
            graph.add(task.id, task.after, f"{name}: {unit} {position}")
    graph.check(exists=(lambda asked: asked) if outside_ok else None)
    return FlowFile(ids, graph.after)
