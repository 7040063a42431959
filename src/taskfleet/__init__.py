"""taskfleet: run large batches of independent tasks in parallel, locally or on a fleet.

`from taskfleet import Worker, WorkerData` is the user API. The worker runtime is imported on
first use, so `import taskfleet` stays light (and never imports a cloud SDK).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskfleet.errors import TaskFileError, TaskfleetError
from taskfleet.tasks import Task, iter_tasks, load_tasks

__version__ = "0.1.0"

if TYPE_CHECKING:
    from taskfleet.worker.worker import Worker, WorkerData


def __getattr__(name: str) -> Any:
    if name in ("Worker", "WorkerData"):
        from taskfleet.worker import worker

        return getattr(worker, name)
    raise AttributeError(f"module 'taskfleet' has no attribute {name!r}")


__all__ = [
    "Task",
    "TaskFileError",
    "TaskfleetError",
    "Worker",
    "WorkerData",
    "__version__",
    "iter_tasks",
    "load_tasks",
]
