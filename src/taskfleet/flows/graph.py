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
        self.after: dict[str, Sequence[str]] = {}
        #: task id -> where it is (`FILE: line N`), for tasks that wait: anything whose str()
        #: names the place, so a loader can hand over a cheap reference made into text only
        #: for an error
        self.where: dict[str, object] = {}
        #: for tasks added in bulk: each names the place of a task id, or None
        self._locators: list[Callable[[str], str | None]] = []

    def add_batch(
        self, after: Mapping[str, Sequence[str]], locate: Callable[[str], str | None]
    ) -> None:
        """Record in bulk the tasks of a batch that wait (id -> the ids it waits for);
        `locate` names the place of one of them, and is called only for an error."""
        self.ids.update(after)
        self.after.update(after)
        self._locators.append(locate)

    def place(self, task_id: str) -> str:
        """Where the task is in its file (`FILE: line N`), or its id when that is unknown."""
        where = self.where.get(task_id)
        if where is not None:
            return str(where)
        for locate in self._locators:
            found = locate(task_id)
            if found is not None:
                return found
        return f"task {task_id!r}"

    def add(self, task_id: str, after: Sequence[str] = (), where: object | None = None) -> None:
        """Record one task of the load (`where` names its place for errors)."""
        self.ids.add(task_id)
        if after:
            self.after[task_id] = tuple(after)
            if where is not None:
                self.where[task_id] = where

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
        # Set operations in C over the whole load first; the task-by-task passes that name
        # the culprits run only when there is one to name.
        known_ids = set(known)
        named: set[str] = set().union(*self.after.values())
        absent = named - self.ids - known_ids
        if absent and exists is not None:
            absent -= set(exists(absent))
        stuck = in_cycles(self.after)  # a task that waits for itself is one of these
        for task_id in stuck:
            if task_id in self.after[task_id]:
                raise TaskFileError(
                    f"{self.place(task_id)}: task {task_id!r} waits for itself; remove "
                    f"{task_id!r} from its 'after'. Nothing was loaded."
                )
        if absent:
            unknown: list[tuple[str, list[str]]] = []
            for task_id, after in self.after.items():
                missing = [other for other in after if other in absent]
                if missing:
                    unknown.append((task_id, missing))
            raise TaskFileError(_unknown_message(unknown, self.place))
        cycle = find_cycle(self.after, stuck) if stuck else None
        if cycle:
            path = " -> ".join([*cycle, cycle[0]])
            raise TaskFileError(
                f"{self.place(cycle[-1])}: these tasks wait for each other in a cycle, so none "
                f"of them could ever run: {path} (each runs after the one before it). Remove "
                "one of these dependencies. Nothing was loaded."
            )


def _unknown_message(unknown: list[tuple[str, list[str]]], place: Callable[[str], str]) -> str:
    first_id, first_missing = unknown[0]
    names = ", ".join(repr(other) for other in first_missing[:SHOWN])
    text = f"{place(first_id)}: task {first_id!r} waits for {names}, which no task of the load has"
    if len(unknown) > 1:
        others = ", ".join(repr(task_id) for task_id, _ in unknown[1:SHOWN])
        more = len(unknown) - SHOWN
        text += f"; so do {others}" + (f" and {more:,} more tasks" if more > 0 else "")
    return text + ". Check the ids in 'after'. Nothing was loaded."


def in_cycles(after: Mapping[str, Sequence[str]]) -> set[str]:
    """The tasks that are in a cycle or wait for one (empty for a graph without cycles).

    Most files list a task after the tasks it waits for (prepare, then its parts, then the
    aggregate): then no edge goes backwards and there is no cycle, which one pass over the
    edges shows. Otherwise Kahn's peeling: a task whose dependencies all can run, can run.
    Both are linear in the tasks and edges, which matters for a flow of 100,000 tasks checked
    before every load."""
    order = {task_id: index for index, task_id in enumerate(after)}
    place = order.get
    if all(
        place(other, -1) < index for index, others in enumerate(after.values()) for other in others
    ):
        return set()
    waits = {task_id: {o for o in others if o in after} for task_id, others in after.items()}
    dependents: dict[str, list[str]] = {}
    for task_id, others in waits.items():
        for other in others:
            dependents.setdefault(other, []).append(task_id)
    left = {task_id: len(others) for task_id, others in waits.items()}
    ready = [task_id for task_id, count in left.items() if not count]
    while ready:
        task_id = ready.pop()
        del left[task_id]
        for waiting in dependents.get(task_id, ()):
            left[waiting] -= 1
            if not left[waiting]:
                ready.append(waiting)
    return set(left)


def find_cycle(
    after: Mapping[str, Sequence[str]], stuck: set[str] | None = None
) -> list[str] | None:
    """One cycle of the graph, in the order its tasks would have to run (each waits for the
    one before it, the first for the last), or None. Iterative, so deep chains of millions
    of tasks do not reach Python's recursion limit; the search runs only over the tasks that
    `in_cycles` leaves (`stuck`, when the caller has it), so a graph without cycles costs only
    that linear pass."""
    if stuck is None:
        stuck = in_cycles(after)
    if not stuck:
        return None
    after = {task_id: after[task_id] for task_id in stuck}
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
