"""`Flow`: a flow of code-tasks built in Python, run here or inserted into any queue.

    flow = Flow()
    prep = flow.add(prepare, "input.csv")
    parts = [flow.add(process, i, after=[prep]) for i in range(4)]
    total = flow.add(aggregate, after=parts)
    run = flow.run(parallel=4)          # or flow.insert("sqlite:///job.db"), flow.write("job.json")
    run.results[total.id]

Each `add` makes the task of a marked function (`@taskfleet.task`) or of a `RegisteredTask`
instance, checked now (its arguments must fit the signature and be JSON), and returns a handle
whose `.id` later tasks may wait for. A task can only wait for tasks added before it, so a flow
built here cannot hold a cycle or an unknown id. Its tasks are the plain task list form
(`Task(id, data, after)`) that task files and the flow text format give, so the same queues and
commands run them. A dependent reads what its dependencies returned with
`taskfleet.dependency_results()`.

Ids are derived from the call, its arguments and what it waits for (so `aggregate` of two
groups are two tasks, and building the same flow again gives the same ids: inserting it twice
inserts nothing the second time); `task_id=` chooses one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskfleet.api.marking import MARK, RegisteredTask, _content_id, make_task
from taskfleet.errors import TaskfleetError
from taskfleet.tasks import Task

if TYPE_CHECKING:
    from taskfleet.api.local import LocalRun, LocalTaskQueue
    from taskfleet.api.task_queue import InsertResult, TaskQueue


@dataclass(frozen=True)
class FlowTask:
    """A task of a `Flow`: what later tasks name in `after=`."""

    id: str
    task: Task

    def __str__(self) -> str:
        return self.id


Dependency = FlowTask | Task | str


class Flow:
    """Code-tasks and what each waits for; see the module docstring."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def add(
        self,
        fn: Callable[..., Any] | RegisteredTask,
        /,
        *args: Any,
        after: Iterable[Dependency] = (),
        task_id: str | None = None,
        **kwargs: Any,
    ) -> FlowTask:
        """Add the task that calls `fn(*args, **kwargs)` once every task of `after` has
        completed; returns its handle. `fn` is a `@taskfleet.task` function or a
        `RegisteredTask` instance (then without further arguments)."""
        waits = self._after_ids(after)
        made = self._make(fn, args, kwargs, task_id)
        new_id = made.id
        if task_id is None and waits:
            # the same call waiting for other tasks is another task (aggregate per group)
            new_id = _content_id(made.data["call"], {**made.data, "after": list(waits)})
        if new_id in self._tasks:
            raise TaskfleetError(
                f"task {new_id!r} is already in the flow (the same call, with the same "
                "arguments, waiting for the same tasks); give task_id= to add it again"
            )
        task = Task(new_id, made.data, waits)
        self._tasks[new_id] = task
        return FlowTask(new_id, task)

    def _make(
        self,
        fn: Callable[..., Any] | RegisteredTask,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        task_id: str | None,
    ) -> Task:
        if isinstance(fn, RegisteredTask):
            if args or kwargs:
                raise TaskfleetError(
                    f"flow.add({type(fn).__qualname__}(...), ...): a RegisteredTask carries its "
                    "arguments already; pass them to its constructor"
                )
            return fn.to_task(task_id)
        if not callable(fn) or not getattr(fn, MARK, False):
            from taskfleet.api.marking import NotATaskError

            raise NotATaskError(
                f"flow.add({fn!r}, ...): only functions decorated with @taskfleet.task and "
                "RegisteredTask instances can be tasks of a flow"
            )
        return make_task(fn, args, kwargs, task_id)

    def _after_ids(self, after: Iterable[Dependency]) -> tuple[str, ...]:
        if isinstance(after, FlowTask | Task | str):
            after = [after]
        ids: dict[str, None] = {}
        for item in after:
            other = item if isinstance(item, str) else getattr(item, "id", None)
            if not isinstance(other, str):
                raise TaskfleetError(
                    f"after= takes tasks of the flow (what flow.add returned) or their ids, "
                    f"not {item!r}"
                )
            if other not in self._tasks:
                raise TaskfleetError(
                    f"after= names {other!r}, which is not a task of this flow; add the tasks a "
                    "task waits for before it"
                )
            ids[other] = None
        return tuple(ids)

    @property
    def tasks(self) -> list[Task]:
        """The tasks in the order they were added (each after the tasks it waits for)."""
        return list(self._tasks.values())

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def run(self, parallel: int | None = None, **options: Any) -> LocalRun:
        """Run the flow on this machine in `parallel` child processes (`LocalTaskQueue`, with
        its options by name: `state="job.db"` for a resumable run, `max_runtime=60`, ...);
        returns the `LocalRun`, whose `results` hold what each task returned, by id."""
        from taskfleet.api.local import LocalTaskQueue

        return LocalTaskQueue(parallel, **options).insert_all(self.tasks)

    def insert(
        self, queue: str | TaskQueue | LocalTaskQueue, *, max_attempts: int | None = None
    ) -> InsertResult | None:
        """Insert the flow into a queue: a URL, a `TaskQueue` or a `LocalTaskQueue` (which
        runs it at its next `execute()`). The queue must keep the dependency state (memory,
        SQLite, Redis); for SQS and Pub/Sub, `write` the flow and run it with
        `taskfleet flow run`."""
        from taskfleet.api.local import LocalTaskQueue
        from taskfleet.api.task_queue import TaskQueue

        if isinstance(queue, LocalTaskQueue):
            queue.insert(self.tasks)
            return None
        if isinstance(queue, str):
            with TaskQueue(queue, max_attempts=max_attempts) as opened:
                return opened.insert(self.tasks, total=len(self))
        return queue.insert(self.tasks, total=len(self))

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the flow as a task file (.json, .jsonl or .flow), for `taskfleet work
        --task-file`, `load-queue` or `flow run`."""
        from taskfleet.flows.convert import write_tasks

        write_tasks(self.tasks, path)
