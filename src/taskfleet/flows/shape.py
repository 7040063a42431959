"""A flow read whole and checked, and the figures that describe its shape.

`read_flow_tasks` reads any task file (JSON, JSONL, YAML, `.flow`) into its tasks and checks
their dependencies as a load does (unknown ids, a task that waits for itself, cycles), naming
the task's place in its file. `FlowShape` then says what `taskfleet flow check` prints: how
many tasks, how many wait, the roots (waiting for nothing), the leaves (nothing waits for
them), and the depth: the number of tasks on the longest chain, the least number of rounds
the flow needs however many workers run it.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

from taskfleet.flows.graph import DependencyGraph
from taskfleet.tasks.limits import TaskLimits
from taskfleet.tasks.model import Task
from taskfleet.tasks.readers import file_progress, open_task_file, read_entries, validated


def read_flow_tasks(source: str | os.PathLike[str]) -> list[Task]:
    """The tasks of a task file, in file order, after the check of their dependencies;
    raises `TaskFileError` naming the file and the place of the first problem."""
    limits = TaskLimits.from_env()
    graph = DependencyGraph()
    tasks: list[Task] = []
    with open_task_file(source) as (f, name, fmt):
        unit, entries, check = read_entries(f, name, fmt, limits)
        for position, task in validated(
            name, unit, entries, check, limits, 0, None, True, file_progress(f)
        ):
            tasks.append(task)
            if task.after:
                graph.add(task.id, task.after, f"{name}: {unit} {position}")
            else:
                graph.ids.add(task.id)
    graph.check()
    return tasks


@dataclass(frozen=True)
class FlowShape:
    """What a checked flow looks like (see the module docstring)."""

    tasks: int
    waiting: int
    dependencies: int
    roots: list[str]
    leaves: list[str]
    #: the tasks of one longest chain, first to last
    longest_chain: list[str]

    @property
    def depth(self) -> int:
        return len(self.longest_chain)

    @classmethod
    def of(cls, tasks: list[Task]) -> FlowShape:
        """The shape of checked tasks (no unknown ids, no cycle)."""
        waited_for: set[str] = set()
        waiting = dependencies = 0
        for task in tasks:
            if task.after:
                waiting += 1
                dependencies += len(task.after)
                waited_for.update(task.after)
        roots = [task.id for task in tasks if not task.after]
        leaves = [task.id for task in tasks if task.id not in waited_for]
        return cls(len(tasks), waiting, dependencies, roots, leaves, _longest_chain(tasks))


def _longest_chain(tasks: list[Task]) -> list[str]:
    """One longest chain of tasks, each waiting for the one before it (Kahn's order: no
    recursion, so a chain of a million tasks is measured as easily as a wide flow)."""
    if not tasks:
        return []
    remaining = {task.id: len(task.after) for task in tasks}
    dependents: dict[str, list[str]] = {}
    for task in tasks:
        for other in task.after:
            dependents.setdefault(other, []).append(task.id)
    length = dict.fromkeys(remaining, 1)
    previous: dict[str, str] = {}
    ready = deque(task_id for task_id, count in remaining.items() if count == 0)
    while ready:
        task_id = ready.popleft()
        for dependent in dependents.get(task_id, ()):
            if length[task_id] + 1 > length[dependent]:
                length[dependent] = length[task_id] + 1
                previous[dependent] = task_id
            remaining[dependent] -= 1
            if remaining[dependent] == 0:
                ready.append(dependent)
    last = max(length, key=length.__getitem__)
    chain = [last]
    while chain[-1] in previous:
        chain.append(previous[chain[-1]])
    return chain[::-1]
