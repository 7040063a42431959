"""The check of a load's dependencies, before anything is inserted.

A task may wait for others (`"after": [ids]`). Whether those ids exist and whether they form
a cycle can only be known once the whole load has been seen (a task may name one that comes
later in the file), so a load that holds dependencies is read once for this check and then
loaded: a bad graph inserts nothing. The check keeps the ids of the load and the edges of the
tasks that wait; independent tasks cost one set entry each.

The errors name the task's place in its file (`tasks.json: line 12`), the ids it names that
are not in the load, or the cycle itself (`a -> b -> c -> a`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from taskfleet.errors import TaskFileError

#: How many problems of one kind an error names before it says "and N more".
SHOWN = 5


class DependencyGraph:
    """The ids of a load and what its waiting tasks wait for, fed task by task."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        #: task id -> the ids it waits for (only tasks that wait)
        self.after: dict[str, tuple[str, ...]] = {}
        #: task id -> where it is (`FILE: line N`), for tasks that wait
        self.where: dict[str, str] = {}

    def add(self, task_id: str, after: Sequence[str] = (), where: str | None = None) -> None:
        """Record one task of the load (`where` names its place for errors)."""
        self.ids.add(task_id)
        if after:
            self.after[task_id] = tuple(after)
            self.where[task_id] = where or f"task {task_id!r}"

    @property
    def has_dependencies(self) -> bool:
        return bool(self.after)

    def dependents(self) -> dict[str, list[str]]:
        """id -> the ids that wait for it (directly), for the ids that have any."""
        waiting: dict[str, list[str]] = {}
        for task_id, after in self.after.items():
            for other in after:
                waiting.setdefault(other, []).append(task_id)
        return waiting

    def check(
        self,
        known: Iterable[str] = (),
        exists: Callable[[Collection[str]], Collection[str]] | None = None,
    ) -> None:
        """Raise `TaskFileError` for a task that waits for itself, for ids that name no task
        of the load (nor of `known`: tasks the queue holds already), and for a cycle.

        `exists`, when given, is asked once with the ids named that are neither in the load
        nor in `known`, and answers those the queue holds: a queue with millions of tasks
        looks up the few ids it is asked about instead of listing them all."""
        known_ids = set(known)
        if exists is not None:
            named = {o for after in self.after.values() for o in after}
            asked = named - self.ids - known_ids
            if asked:
                known_ids |= set(exists(asked))
        for task_id, after in self.after.items():
            if task_id in after:
                raise TaskFileError(
                    f"{self.where[task_id]}: task {task_id!r} waits for itself; remove "
                    f"{task_id!r} from its 'after'. Nothing was loaded."
                )
        unknown: list[tuple[str, list[str]]] = []
        for task_id, after in self.after.items():
            missing = [other for other in after if other not in self.ids and other not in known_ids]
            if missing:
                unknown.append((task_id, missing))
        if unknown:
            raise TaskFileError(_unknown_message(unknown, self.where))
        cycle = find_cycle(self.after)
        if cycle:
            path = " -> ".join([*cycle, cycle[0]])
            raise TaskFileError(
                f"{self.where[cycle[-1]]}: these tasks wait for each other in a cycle, so none "
                f"of them could ever run: {path} (each runs after the one before it). Remove "
                "one of these dependencies. Nothing was loaded."
            )


def _unknown_message(unknown: list[tuple[str, list[str]]], where: Mapping[str, str]) -> str:
    first_id, first_missing = unknown[0]
    names = ", ".join(repr(other) for other in first_missing[:SHOWN])
    text = f"{where[first_id]}: task {first_id!r} waits for {names}, which no task of the load has"
    if len(unknown) > 1:
        others = ", ".join(repr(task_id) for task_id, _ in unknown[1:SHOWN])
        more = len(unknown) - SHOWN
        text += f"; so do {others}" + (f" and {more:,} more tasks" if more > 0 else "")
    return text + ". Check the ids in 'after'. Nothing was loaded."


def find_cycle(after: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle of the graph, in the order its tasks would have to run (each waits for the
    one before it, the first for the last), or None. Iterative, so deep chains of millions
    of tasks do not reach Python's recursion limit."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in after:
        if start in state:
            continue
        path: list[str] = [start]
        position: dict[str, int] = {start: 0}
        stack = [iter(after.get(start, ()))]
        state[start] = 1
        while stack:
            node = next(stack[-1], None)
            if node is None:
                stack.pop()
                done = path.pop()
                del position[done]
                state[done] = 2
                continue
            seen = state.get(node)
            if seen == 1:
                return path[position[node] :][::-1]
            if seen == 2 or node not in after:
                state.setdefault(node, 2)
                continue
            state[node] = 1
            position[node] = len(path)
            path.append(node)
            stack.append(iter(after[node]))
    return None
