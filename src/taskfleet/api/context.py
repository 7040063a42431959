"""What a code-task may ask about the run it is part of, from inside its function.

A code-task is an ordinary function (`@taskfleet.task`): it is called with its own arguments
only, so the worker's `worker_data` is not among them. `process_code_task` keeps it here while
the function runs, and `dependency_results()` reads from it what the tasks it waited for
returned, so an aggregation step needs no side channel for small results.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from taskfleet.errors import TaskfleetError

_WORKER_DATA: ContextVar[Any] = ContextVar("taskfleet_worker_data", default=None)


@contextmanager
def running_with(worker_data: Any) -> Iterator[None]:
    """Make `worker_data` the current task's while the block runs."""
    token = _WORKER_DATA.set(worker_data)
    try:
        yield
    finally:
        _WORKER_DATA.reset(token)


def dependency_results() -> dict[str, Any]:
    """What each task the current code-task waited for returned, by task id (`{}` for a task
    that waited for nothing): `worker_data.dependency_results`, for tasks that are plain
    functions. Raises `TaskfleetError` outside a task run by a worker."""
    worker_data = _WORKER_DATA.get()
    if worker_data is None:
        raise TaskfleetError(
            "taskfleet.dependency_results() was called outside a task: it answers only inside "
            "a code-task run by a worker (taskfleet work, LocalTaskQueue, Flow.run)"
        )
    return dict(getattr(worker_data, "dependency_results", None) or {})
